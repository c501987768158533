"""One delivery attempt, against real receivers on loopback: signed webhooks, Slack-style
webhooks, SMTP (plain, STARTTLS with a login, implicit TLS), and the errors a user sees."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest

from tallyhub import __version__
from tallyhub.alerts.notify.channels import NotifySettings, parse_channel
from tallyhub.alerts.notify.message import as_json, slack_payload, summary
from tallyhub.alerts.notify.send import DeliveryError, deliver, signature, verify_signature
from tests.alerts.receivers import PASSWORD, USER, Inbox, Receiver, notification

SECRET = "whsec_test"


def test_a_signed_webhook_verifies_at_the_receiver(receiver: Receiver) -> None:
    n = notification()
    deliver(parse_channel(f"webhook:{receiver.url}"), n, NotifySettings(webhook_secret=SECRET))
    (request,) = receiver.wait_for(1)
    assert request.path == "/hooks/tallyhub"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"tallyhub/{__version__}"
    assert request.headers["x-tallyhub-event"] == "alert.firing"
    assert request.headers["x-tallyhub-delivery"] == "n-1"
    assert json.loads(request.body) == as_json(n)
    assert request.body == json.dumps(as_json(n), separators=(",", ":"), ensure_ascii=False).encode()  # compact UTF-8
    timestamp, header = request.headers["x-tallyhub-timestamp"], request.headers["x-tallyhub-signature"]
    assert abs(int(timestamp) - time.time()) < 5
    assert verify_signature(SECRET, timestamp, request.body, header, max_age_s=60)
    # the recipe of the module's docstring, step by step, as a receiver in another language would do it
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert header == f"sha256={expected}"


def test_a_wrong_secret_a_changed_body_or_an_old_timestamp_fail_verification(receiver: Receiver) -> None:
    deliver(parse_channel(f"webhook:{receiver.url}"), notification(), NotifySettings(webhook_secret=SECRET))
    (request,) = receiver.wait_for(1)
    timestamp, header = request.headers["x-tallyhub-timestamp"], request.headers["x-tallyhub-signature"]
    assert not verify_signature("another secret", timestamp, request.body, header)
    assert not verify_signature(SECRET, timestamp, request.body.replace(b"0.12", b"0.01"), header)
    assert not verify_signature(SECRET, int(timestamp) + 1, request.body, header)
    assert verify_signature(SECRET, timestamp, request.body, header, max_age_s=300, now=int(timestamp) + 299)
    assert not verify_signature(SECRET, timestamp, request.body, header, max_age_s=300, now=int(timestamp) + 301)
    assert not verify_signature(SECRET, "yesterday", request.body, signature(SECRET, "yesterday", b"x"), max_age_s=1)


def test_without_a_secret_the_webhook_is_unsigned(receiver: Receiver) -> None:
    deliver(parse_channel(f"webhook:{receiver.url}"), notification(state="resolved"), NotifySettings())
    (request,) = receiver.wait_for(1)
    assert "x-tallyhub-signature" not in request.headers
    assert request.headers["x-tallyhub-event"] == "alert.resolved"


def test_a_failing_receiver_shows_its_status_and_the_start_of_its_answer(receiver: Receiver) -> None:
    receiver.answer(500, b"database down " + b"x" * 500)
    with pytest.raises(DeliveryError) as error:
        deliver(parse_channel(f"webhook:{receiver.url}"), notification(), NotifySettings())
    message = str(error.value)
    assert message.startswith(f"webhook:http://127.0.0.1:{receiver.server.server_address[1]}/*** answered HTTP 500")  # type: ignore[union-attr]
    assert "'database down xxx" in message and "x" * 186 in message and "x" * 187 not in message
    assert "/hooks/tallyhub" not in message
    assert error.value.retry


def test_a_missing_endpoint_is_not_worth_a_retry(receiver: Receiver) -> None:
    receiver.answer(404, b"not found")
    with pytest.raises(
        DeliveryError, match="answered HTTP 404: 'not found': no such endpoint; check the channel's URL"
    ) as error:
        deliver(parse_channel(f"webhook:{receiver.url}"), notification(), NotifySettings())
    assert not error.value.retry


def test_a_redirect_is_not_followed(receiver: Receiver, other_receiver: Receiver) -> None:
    receiver.answer(307, b"", {"Location": other_receiver.url})
    with pytest.raises(DeliveryError, match=f"HTTP 307 .*redirect to {other_receiver.url} is not followed"):
        deliver(parse_channel(f"webhook:{receiver.url}"), notification(), NotifySettings(webhook_secret=SECRET))
    time.sleep(0.1)
    assert len(receiver.requests) == 1 and other_receiver.requests == []


def test_a_receiver_that_never_answers_times_out(silent_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=r"webhook:http://127\.0\.0\.1:\d+/\*\*\*: no answer within 0\.3 s"):
        deliver(parse_channel(f"webhook:{silent_url}"), notification(), NotifySettings(timeout_s=0.3))
    assert time.monotonic() - started < 2


def test_a_receiver_not_running_refuses_the_connection(closed_url: str) -> None:
    with pytest.raises(DeliveryError, match="connection refused; is the receiver running"):
        deliver(parse_channel(f"webhook:{closed_url}"), notification(), NotifySettings(timeout_s=1))


def test_slack_receives_its_blocks(receiver: Receiver) -> None:
    n = notification()
    deliver(parse_channel(f"slack:{receiver.url}"), n, NotifySettings(webhook_secret=SECRET))
    (request,) = receiver.wait_for(1)
    assert request.headers["content-type"] == "application/json"
    payload = json.loads(request.body)
    assert payload == slack_payload(n)
    assert payload["text"] == summary(n)
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "section", "actions", "context"]


def test_slack_refusing_a_revoked_webhook_says_so_without_its_url(receiver: Receiver) -> None:
    receiver.answer(403, b"invalid_token")
    with pytest.raises(DeliveryError) as error:
        deliver(parse_channel(f"slack:{receiver.url}"), notification(), NotifySettings())
    assert "HTTP 403: 'invalid_token'" in str(error.value) and "revoked" in str(error.value)
    assert "/hooks/tallyhub" not in str(error.value)
    assert not error.value.retry


def _mail_settings(url: str, **kwargs: str) -> NotifySettings:
    return NotifySettings(smtp_url=url, smtp_from="Tallyhub <alerts@example.com>", timeout_s=5, **kwargs)


def test_mail_through_a_plain_relay_on_loopback(plain_smtp: Inbox) -> None:
    n = notification()
    spec = parse_channel("email:ops@example.com,dev@example.com")
    deliver(spec, n, _mail_settings(f"smtp://127.0.0.1:{plain_smtp.port}?starttls=false"))
    (envelope,) = plain_smtp.envelopes
    assert envelope.mail_from == "alerts@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "dev@example.com"]
    assert plain_smtp.sessions == [{"tls": False, "authenticated": False}]
    (message,) = plain_smtp.messages()
    assert message["Subject"] == summary(n)
    assert message["To"] == "ops@example.com, dev@example.com"
    assert "Dashboard:      https://hub.example.com/alerts/high-errors" in message.get_content()


def test_mail_over_starttls_with_a_login(starttls_smtp: Inbox, certificate: tuple[Path, Path]) -> None:
    url = f"smtp://alerts%40example.com:p%3Ass%20word@127.0.0.1:{starttls_smtp.port}"
    deliver(
        parse_channel("email:ops@example.com"), notification(), _mail_settings(url, smtp_ca_file=str(certificate[0]))
    )
    (message,) = starttls_smtp.messages()
    assert message["Subject"].startswith("[FIRING] high-errors: error_rate 0.12 > 0.05 over 5m")
    assert starttls_smtp.sessions == [{"tls": True, "authenticated": True}]
    assert (USER, PASSWORD) == ("alerts@example.com", "p:ss word")  # what the URL above percent-encodes


def test_a_wrong_password_is_a_clear_error(starttls_smtp: Inbox, certificate: tuple[Path, Path]) -> None:
    url = f"smtp://alerts%40example.com:wrong@127.0.0.1:{starttls_smtp.port}"
    with pytest.raises(DeliveryError) as error:
        deliver(
            parse_channel("email:ops@example.com"),
            notification(),
            _mail_settings(url, smtp_ca_file=str(certificate[0])),
        )
    assert "refused the login of 'alerts@example.com' (535" in str(error.value)
    assert "check the user and password in TALLYHUB_SMTP_URL" in str(error.value)
    assert "wrong" not in str(error.value)
    assert not error.value.retry
    assert starttls_smtp.envelopes == []


def test_an_untrusted_certificate_names_the_ca_setting(starttls_smtp: Inbox) -> None:
    url = f"smtp://alerts%40example.com:x@127.0.0.1:{starttls_smtp.port}"
    with pytest.raises(DeliveryError, match=r"TLS certificate is not trusted .*set TALLYHUB_SMTP_CA_FILE"):
        deliver(parse_channel("email:ops@example.com"), notification(), _mail_settings(url))


def test_starttls_is_required_on_smtp_urls(plain_smtp: Inbox) -> None:
    with pytest.raises(DeliveryError, match="does not offer STARTTLS"):
        deliver(
            parse_channel("email:ops@example.com"),
            notification(),
            _mail_settings(f"smtp://127.0.0.1:{plain_smtp.port}"),
        )
    assert plain_smtp.envelopes == []


def test_mail_over_implicit_tls(tls_smtp: Inbox, certificate: tuple[Path, Path]) -> None:
    settings = _mail_settings(f"smtps://127.0.0.1:{tls_smtp.port}", smtp_ca_file=str(certificate[0]))
    deliver(parse_channel("email:ops@example.com"), notification(state="test"), settings)
    (message,) = tls_smtp.messages()
    assert message["Subject"].startswith("[TEST] high-errors")


def test_mail_without_an_smtp_server_says_what_to_set() -> None:
    with pytest.raises(DeliveryError, match="no SMTP server configured; set TALLYHUB_SMTP_URL") as error:
        deliver(parse_channel("email:ops@example.com"), notification(), NotifySettings())
    assert not error.value.retry


def test_mail_to_a_server_not_running(closed_url: str) -> None:
    port = closed_url.split(":")[2].split("/")[0]
    with pytest.raises(DeliveryError, match=f"email:ops@example.com via 127.0.0.1:{port}: connection refused"):
        deliver(parse_channel("email:ops@example.com"), notification(), _mail_settings(f"smtps://127.0.0.1:{port}"))


def test_mail_to_a_server_that_never_answers_times_out(silent_url: str) -> None:
    port = silent_url.split(":")[2].split("/")[0]
    settings = NotifySettings(smtp_url=f"smtp://127.0.0.1:{port}", timeout_s=0.3)
    with pytest.raises(DeliveryError, match=f"email:ops@example.com via 127.0.0.1:{port}: no answer within 0.3 s"):
        deliver(parse_channel("email:ops@example.com"), notification(), settings)
