"""The renderings of a notification: the webhook's JSON, the summary, Slack's blocks, the e-mail."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta, timezone
from email import message_from_bytes
from email.policy import default

from tallyhub.alerts.notify.message import as_json, email_message, number, slack_payload, summary
from tests.alerts.receivers import AT, notification

FIRING = notification("high-errors:shop:production:1714565100")


def test_summary_of_a_firing_alert_shows_the_value_in_the_condition() -> None:
    assert summary(FIRING) == "[FIRING] high-errors: error_rate 0.12 > 0.05 over 5m — shop (production) GET /items/{id}"


def test_summary_of_a_resolved_alert_says_the_condition_no_longer_holds() -> None:
    resolved = replace(FIRING, state="resolved", value=0.01, env="", scope="")
    assert summary(resolved) == (
        "[RESOLVED] high-errors: error_rate > 0.05 over 5m no longer holds (now 0.01) — shop (all environments)"
    )


def test_summary_without_data_or_with_a_condition_not_led_by_the_metric() -> None:
    heartbeat = replace(FIRING, metric="heartbeat", condition="no requests for 10m", value=None, scope="")
    assert summary(heartbeat) == "[FIRING] high-errors: no requests for 10m (no data) — shop (production)"
    p95 = replace(FIRING, metric="p95", condition="latency above 500 ms over 5m", value=812.34)
    assert summary(p95).startswith("[FIRING] high-errors: latency above 500 ms over 5m (p95 812.3) — ")


def test_summary_stays_on_one_line_whatever_the_fields_hold() -> None:
    odd = replace(FIRING, rule="bad\r\nBcc: victim@example.com", scope="GET /\n")
    assert "\n" not in summary(odd) and "\r" not in summary(odd)


def test_numbers_read_as_people_write_them() -> None:
    assert [number(v) for v in (0.05, 0.123456, 250.0, 1234.56, None)] == ["0.05", "0.1235", "250", "1234.6", "no data"]


def test_json_has_every_field_times_in_utc_and_unix_seconds() -> None:
    at_in_paris = AT.astimezone(timezone(timedelta(hours=2)))
    body = as_json(replace(FIRING, at=at_in_paris))
    assert body == {
        "version": 1,
        "id": "high-errors:shop:production:1714565100",
        "rule": "high-errors",
        "state": "firing",
        "app": "shop",
        "env": "production",
        "scope": "GET /items/{id}",
        "metric": "error_rate",
        "condition": "error_rate > 0.05 over 5m",
        "value": 0.12,
        "threshold": 0.05,
        "at": "2024-05-01T12:05:00Z",
        "at_unix": 1714565100,
        "since": "2024-05-01T12:00:00Z",
        "since_unix": 1714564800,
        "dashboard_url": "https://hub.example.com/alerts/high-errors",
        "summary": summary(FIRING),
    }


def test_json_is_valid_json_without_a_value_or_with_nan() -> None:
    for value in (None, float("nan")):
        text = json.dumps(as_json(replace(FIRING, value=value)), allow_nan=False)
        assert json.loads(text)["value"] is None


def test_slack_payload_has_the_summary_as_fallback_and_escaped_blocks() -> None:
    payload = slack_payload(FIRING)
    assert payload["text"] == summary(FIRING)
    header, measured, fields, actions, context = payload["blocks"]
    assert header["type"] == "header"
    assert header["text"] == {"type": "plain_text", "text": ":red_circle: FIRING: high-errors"}
    assert measured["text"]["type"] == "mrkdwn"
    assert measured["text"]["text"] == "*error_rate 0.12 &gt; 0.05 over 5m*\nshop (production) GET /items/{id}"
    texts = [f["text"] for f in fields["fields"]]
    assert "*App*\nshop" in texts and "*Value*\n0.12" in texts and "*Threshold*\n0.05" in texts
    assert len(texts) <= 10  # Slack's limit for a section's fields
    assert actions["elements"][0]["url"] == FIRING.dashboard_url
    assert context["type"] == "context" and FIRING.id in context["elements"][0]["text"]


def test_slack_payload_of_a_resolved_alert_without_link() -> None:
    payload = slack_payload(replace(FIRING, state="resolved", dashboard_url=""))
    assert payload["blocks"][0]["text"]["text"].startswith(":large_green_circle: RESOLVED")
    assert all(block["type"] != "actions" for block in payload["blocks"])


def test_slack_header_is_clipped_to_slacks_limit() -> None:
    header = slack_payload(replace(FIRING, rule="r" * 400))["blocks"][0]["text"]["text"]
    assert len(header) == 150 and header.endswith("…")


def test_email_has_the_summary_as_subject_and_every_field_in_its_body() -> None:
    message = email_message(FIRING, "Tallyhub <alerts@example.com>", ["ops@example.com", "dev@example.com"])
    assert message["Subject"] == summary(FIRING)
    assert message["From"] == "Tallyhub <alerts@example.com>"
    assert message["To"] == "ops@example.com, dev@example.com"
    assert message["Message-ID"] == "<high-errors-shop-production-1714565100@tallyhub>"
    body = message.get_content()
    for line in (
        "Rule:           high-errors",
        "Environment:    production",
        "Scope:          GET /items/{id}",
        "Condition:      error_rate > 0.05 over 5m",
        "Value:          0.12",
        "Since:          2024-05-01T12:00:00Z",
        "At:             2024-05-01T12:05:00Z",
        "Dashboard:      https://hub.example.com/alerts/high-errors",
    ):
        assert line in body.splitlines()


def test_email_subject_cannot_inject_headers() -> None:
    message = email_message(replace(FIRING, rule="x\r\nBcc: victim@example.com"), "a@example.com", ["b@example.com"])
    received = message_from_bytes(message.as_bytes(), policy=default)
    assert received["Bcc"] is None
    assert received["Subject"].startswith("[FIRING] x Bcc: victim@example.com: error_rate 0.12")
