"""What an alert says: the ``Notification`` of one transition (firing, resolved, or a test) and its
renderings for each channel: the webhook's JSON, a one-line summary, Slack's blocks and an e-mail.
Pure functions, no I/O (``send.py`` sends them)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

JSON_VERSION = 1
"""The webhook body's ``version``: raised only when a field changes meaning or goes away."""

_EMOJI = {"firing": ":red_circle:", "resolved": ":large_green_circle:", "test": ":test_tube:"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Notification:
    id: str
    """Unique per transition: receivers deduplicate on it (the idempotency key)."""
    rule: str
    state: str
    """``firing``, ``resolved`` or ``test``."""
    app: str
    env: str
    """Empty: every environment."""
    scope: str
    """What the rule watches beyond app and env, as text: ``GET /items/{id}``, ``consumer acme``, or empty."""
    metric: str
    condition: str
    """As text: ``error_rate > 0.05 over 5m``."""
    value: float | None
    """Measured at the transition; None: no data."""
    threshold: float
    at: datetime
    """The transition's time (aware)."""
    since: datetime
    """When the condition began to hold (firing) or stopped holding (resolved)."""
    dashboard_url: str = ""


def number(value: float | None) -> str:
    """A measured value as people read it: ``0.12``, ``250``, ``1234.5``; ``no data`` for None."""
    if value is None:
        return "no data"
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.4g}"


def iso(moment: datetime) -> str:
    """``2024-05-01T12:00:00Z``: UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(text: str) -> str:
    """``text`` on one line: no field may break a subject header or the summary."""
    return _CONTROL.sub(" ", text).strip()


def where(n: Notification) -> str:
    """``shop (production) GET /items/{id}``: the app, its environment and the rule's scope."""
    env = n.env or "all environments"
    return _line(f"{n.app} ({env}) {n.scope}")


def measured(n: Notification) -> str:
    """The condition with the value measured: ``error_rate 0.12 > 0.05 over 5m``; for a resolved
    alert, that the condition no longer holds."""
    metric, condition = _line(n.metric), _line(n.condition)
    if n.state == "resolved":
        now = "no data" if n.value is None else f"now {number(n.value)}"
        return f"{condition} no longer holds ({now})"
    if n.value is None:
        return f"{condition} (no data)"
    if condition.startswith(f"{metric} "):
        return f"{metric} {number(n.value)}{condition[len(metric) :]}"
    return f"{condition} ({metric} {number(n.value)})"


def summary(n: Notification) -> str:
    """One line: ``[FIRING] high-errors: error_rate 0.12 > 0.05 over 5m — shop (production) GET /items/{id}``."""
    return f"[{_line(n.state).upper()}] {_line(n.rule)}: {measured(n)} — {where(n)}"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def as_json(n: Notification) -> dict[str, Any]:
    """The webhook's body: every field, times both as ISO 8601 (UTC, ``Z``) and Unix seconds; a
    value that is not a finite number is ``null`` (JSON has no NaN)."""
    return {
        "version": JSON_VERSION,
        "id": n.id,
        "rule": n.rule,
        "state": n.state,
        "app": n.app,
        "env": n.env,
        "scope": n.scope,
        "metric": n.metric,
        "condition": n.condition,
        "value": _finite(n.value),
        "threshold": _finite(n.threshold),
        "at": iso(n.at),
        "at_unix": int(n.at.timestamp()),
        "since": iso(n.since),
        "since_unix": int(n.since.timestamp()),
        "dashboard_url": n.dashboard_url,
        "summary": summary(n),
    }


def _mrkdwn(text: str) -> str:
    """Slack's escaping: ``&``, ``<`` and ``>`` would otherwise be read as markup (``<url|link>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(n: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the summary, for notifications and clients
    without blocks) and ``blocks``: a header with the state's emoji, the measured condition, the
    fields, and a button to the dashboard when there is a link."""
    since_label = "Resolved since" if n.state == "resolved" else "Since"
    fields = [
        ("App", n.app),
        ("Environment", n.env or "all"),
        ("Scope", n.scope or "—"),
        ("Metric", n.metric),
        ("Value", number(n.value)),
        ("Threshold", number(n.threshold)),
        (since_label, iso(n.since)),
        ("At", iso(n.at)),
    ]
    emoji = _EMOJI.get(n.state, ":bell:")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(f"{emoji} {n.state.upper()}: {_line(n.rule)}", 150)},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(_mrkdwn(f"*{measured(n)}*\n{where(n)}"), 3000)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(_mrkdwn(f"*{label}*\n{_line(value)}"), 2000)}
                for label, value in fields
            ],
        },
    ]
    if n.dashboard_url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in dashboard"},
                        "url": n.dashboard_url,
                    }
                ],
            }
        )
    footer = {"type": "mrkdwn", "text": _clip(_mrkdwn(f"tallyhub · notification {n.id}"), 3000)}
    blocks.append({"type": "context", "elements": [footer]})
    return {"text": summary(n), "blocks": blocks}


def _message_id(n: Notification) -> str:
    """From the notification's id, so that a retried mail has the same Message-ID (mail systems
    that deduplicate drop the copy)."""
    return f"<{re.sub(r'[^A-Za-z0-9._-]', '-', n.id)}@tallyhub>"


def email_message(n: Notification, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """A plain-text mail: the summary as subject, every field and the dashboard link in the body."""
    message = EmailMessage()
    message["Subject"] = summary(n)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(n.at.astimezone(UTC))
    message["Message-ID"] = _message_id(n)
    message["X-Tallyhub-Delivery"] = _line(n.id)
    since_label = "Resolved since" if n.state == "resolved" else "Since"
    fields = [
        ("Rule", n.rule),
        ("State", n.state),
        ("App", n.app),
        ("Environment", n.env or "all environments"),
        ("Scope", n.scope or "-"),
        ("Metric", n.metric),
        ("Condition", n.condition),
        ("Value", number(n.value)),
        ("Threshold", number(n.threshold)),
        (since_label, iso(n.since)),
        ("At", iso(n.at)),
        ("Dashboard", n.dashboard_url or "(no link configured)"),
    ]
    body = [f"{label + ':':<16}{value}" for label, value in fields]
    lines = [summary(n), "", *body, "", f"-- tallyhub, notification {n.id}"]
    message.set_content("\n".join(lines) + "\n")
    return message
