"""Channel specs (``webhook:…``, ``slack:…``, ``email:…``) and the notification settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tallyhub.alerts.notify.channels import (
    ChannelError,
    ChannelSpec,
    NotifySettings,
    SmtpServer,
    parse_channel,
    parse_smtp_url,
)

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


@pytest.mark.parametrize(
    "text",
    [
        "webhook:https://ops.example.com/hooks/tallyhub?team=a",
        "webhook:http://127.0.0.1:9000/alerts",
        f"slack:{SLACK}",
        "email:ops@example.com",
        "email:ops@example.com,dev@example.org",
    ],
)
def test_a_channel_reads_back_as_its_text(text: str) -> None:
    assert str(parse_channel(text)) == text


def test_parse_reads_kind_target_and_recipients() -> None:
    assert parse_channel(f" slack:{SLACK} ") == ChannelSpec("slack", SLACK)
    mail = parse_channel("Email: ops@example.com , dev@example.org,")
    assert mail == ChannelSpec("email", "ops@example.com,dev@example.org")
    assert mail.recipients == ("ops@example.com", "dev@example.org")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("https://example.com/hook", "unknown channel 'https'"),
        ("pagerduty:abc", "unknown channel 'pagerduty'"),
        ("ops@example.com", "unknown channel 'ops@example.com'"),
        ("webhook:ftp://example.com/x", "must start with http:// or https://"),
        ("webhook:example.com/hook", "must start with http:// or https://"),
        ("slack:https:///services/x", "names no host"),
        ("webhook:http://example.com:99999/", "does not parse"),
        ("email:", "no address"),
        ("email:ops@example.com,not-an-address", "'not-an-address' is not an e-mail address"),
    ],
)
def test_a_wrong_channel_names_the_accepted_forms(text: str, message: str) -> None:
    with pytest.raises(ChannelError) as error:
        parse_channel(text)
    assert message in str(error.value)
    assert "use webhook:https://…, slack:https://hooks.slack.com/… or email:ops@example.com" in str(error.value)


def test_an_error_never_repeats_a_slack_url() -> None:
    with pytest.raises(ChannelError) as error:
        parse_channel("slack:htps://hooks.slack.com/services/T000/B000/XXXXSECRET")
    assert "XXXXSECRET" not in str(error.value)


def test_redacted_hides_what_follows_the_host() -> None:
    assert parse_channel(f"slack:{SLACK}").redacted() == "slack:https://hooks.slack.com/***"
    assert parse_channel("webhook:https://u:p@ops.example.com:8443/h?k=1").redacted() == (
        "webhook:https://ops.example.com:8443/***"
    )
    assert parse_channel("webhook:https://ops.example.com").redacted() == "webhook:https://ops.example.com"
    assert parse_channel("email:ops@example.com").redacted() == "email:ops@example.com"


@pytest.mark.parametrize(
    ("url", "server"),
    [
        (
            "smtp://alerts%40example.com:p%3Ass@mail.example.com",
            SmtpServer("mail.example.com", 587, "starttls", "alerts@example.com", "p:ss"),
        ),
        ("smtps://u:pw@mail.example.com", SmtpServer("mail.example.com", 465, "tls", "u", "pw")),
        ("smtps://mail.example.com:2465", SmtpServer("mail.example.com", 2465, "tls")),
        ("smtp://127.0.0.1:25?starttls=false", SmtpServer("127.0.0.1", 25, "plain")),
        ("smtp://relay.internal?starttls=false", SmtpServer("relay.internal", 25, "plain")),
        ("smtp://u:pw@localhost:2525?starttls=false", SmtpServer("localhost", 2525, "plain", "u", "pw")),
        ("smtp://mail.example.com:2587?starttls=true", SmtpServer("mail.example.com", 2587, "starttls")),
    ],
)
def test_smtp_urls(url: str, server: SmtpServer) -> None:
    assert parse_smtp_url(url) == server


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mail.example.com:587", "scheme must be smtp:// or smtps://"),
        ("https://mail.example.com", "scheme must be smtp:// or smtps://"),
        ("smtp://", "no host"),
        ("smtp://u:secret@mail.example.com:port", "invalid SMTP URL"),
        ("smtp://mail.example.com/inbox", "nothing may follow"),
        ("smtp://mail.example.com?tls=1", "unknown option 'tls'"),
        ("smtp://mail.example.com?starttls=maybe", "starttls='maybe'"),
        ("smtps://mail.example.com?starttls=false", "smtps:// is TLS from the start"),
        ("smtp://:secret@mail.example.com", "a password without a user"),
        ("smtp://u:secret@mail.example.com?starttls=false", "password in plain text to mail.example.com"),
    ],
)
def test_wrong_smtp_urls_say_why_and_never_show_the_password(url: str, message: str) -> None:
    with pytest.raises(ChannelError) as error:
        NotifySettings(smtp_url=url)
    assert message in str(error.value)
    assert "secret" not in str(error.value)


def test_settings_from_env(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = NotifySettings.from_env(
        {
            "TALLYHUB_WEBHOOK_SECRET": "whsec",
            "TALLYHUB_SMTP_URL": " smtp://u:pw@mail.example.com ",
            "TALLYHUB_SMTP_FROM": "Tallyhub <alerts@example.com>",
            "TALLYHUB_SMTP_CA_FILE": str(ca),
        }
    )
    assert settings.webhook_secret == "whsec"
    assert settings.smtp == SmtpServer("mail.example.com", 587, "starttls", "u", "pw")
    assert settings.sender == "Tallyhub <alerts@example.com>"
    assert settings.smtp_ca_file == str(ca)
    assert "whsec" not in repr(settings) and "pw" not in repr(settings) and "pw" not in repr(settings.smtp)


def test_settings_defaults() -> None:
    settings = NotifySettings.from_env({})
    assert settings.smtp is None and settings.webhook_secret == ""
    assert settings.sender.startswith("tallyhub@")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"smtp_ca_file": "/nonexistent/ca.pem"}, "SMTP CA file /nonexistent/ca.pem does not exist"),
        ({"smtp_from": "alerts"}, "invalid sender 'alerts'"),
        ({"timeout_s": 0}, "timeout must be positive"),
    ],
)
def test_wrong_settings(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ChannelError, match=message):
        NotifySettings(**settings)  # type: ignore[arg-type]
