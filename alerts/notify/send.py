"""One delivery attempt of a notification to one channel (the I/O edge): a JSON webhook, a Slack
incoming webhook or an e-mail; ``DeliveryError`` says what went wrong and what to do. Retries are
the outbox's (``outbox.py``). Standard library only: urllib (redirects not followed) and smtplib.

Webhook requests are ``POST`` with a compact UTF-8 JSON body (``message.as_json``) and the headers
``X-Tallyhub-Event`` (``alert.firing``, ``alert.resolved`` or ``alert.test``), ``X-Tallyhub-Delivery``
(the notification's id: the same on every retry, deduplicate on it) and ``X-Tallyhub-Timestamp``
(Unix seconds). With ``TALLYHUB_WEBHOOK_SECRET`` set they are signed, as Stripe and GitHub sign
theirs: ``X-Tallyhub-Signature: sha256=<hex>``, the HMAC-SHA256, keyed with the secret, of the
timestamp, a ``.`` and the raw body bytes. A receiver verifies a request so:

1. read the raw body (before any JSON parsing: the bytes are what was signed);
2. compute ``HMAC-SHA256(secret, timestamp + "." + body)`` in hex and compare it with the header's
   value after ``sha256=`` in constant time (Python: ``hmac.compare_digest``, or
   ``verify_signature`` here);
3. refuse a timestamp more than a few minutes from its own clock, so that a recorded request cannot
   be replayed later (``verify_signature(..., max_age_s=300)``);
4. answer 2xx quickly (any other status, a timeout or a redirect counts as a failure and is retried),
   and ignore an ``X-Tallyhub-Delivery`` it has already processed.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from email.utils import parseaddr
from typing import Any

from tallyhub import __version__
from tallyhub.alerts.notify.channels import ChannelSpec, NotifySettings
from tallyhub.alerts.notify.message import Notification, as_json, email_message, slack_payload

USER_AGENT = f"tallyhub/{__version__}"
BODY_SHOWN = 200
"""Bytes of a refusing receiver's answer that an error message shows."""


class DeliveryError(Exception):
    """One attempt failed. ``retry``: False when trying again cannot help (a wrong address, a refused
    login, a 404): the outbox gives up at once instead of repeating it."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex>``: the ``X-Tallyhub-Signature`` of ``body`` sent at ``timestamp`` (Unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str,
    timestamp: int | str,
    body: bytes,
    header: str,
    *,
    max_age_s: float | None = None,
    now: float | None = None,
) -> bool:
    """True if ``header`` (``X-Tallyhub-Signature``) signs ``body`` at ``timestamp``
    (``X-Tallyhub-Timestamp``) with ``secret``, compared in constant time; with ``max_age_s``,
    also that the timestamp is no further than that from ``now`` (default: the clock), against replays."""
    if max_age_s is not None:
        try:
            age = abs((time.time() if now is None else now) - int(timestamp))
        except ValueError:
            return False
        if age > max_age_s:
            return False
    return hmac.compare_digest(signature(secret, timestamp, body).encode(), header.strip().encode())


def deliver(spec: ChannelSpec, n: Notification, settings: NotifySettings) -> None:
    """One attempt to deliver ``n`` to ``spec``; returns when the receiver accepted it."""
    if spec.kind == "webhook":
        _post_webhook(spec, n, settings)
    elif spec.kind == "slack":
        _post(spec, _json_bytes(slack_payload(n)), {}, settings.timeout_s)
    else:
        _send_mail(spec, n, settings)


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _post_webhook(spec: ChannelSpec, n: Notification, settings: NotifySettings) -> None:
    body = _json_bytes(as_json(n))
    timestamp = str(int(time.time()))
    headers = {
        "X-Tallyhub-Event": f"alert.{n.state}",
        "X-Tallyhub-Delivery": n.id,
        "X-Tallyhub-Timestamp": timestamp,
    }
    if settings.webhook_secret:
        headers["X-Tallyhub-Signature"] = signature(settings.webhook_secret, timestamp, body)
    _post(spec, body, headers, settings.timeout_s)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not followed: a POST must not turn into a GET elsewhere, nor a
    signed body go to a host the channel does not name."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def _post(spec: ChannelSpec, body: bytes, headers: dict[str, str], timeout_s: float) -> None:
    where = spec.redacted()
    request = urllib.request.Request(
        spec.target,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(64 * 1024)  # an answer is read before the connection closes; its content does not matter
    except urllib.error.HTTPError as exc:
        raise _http_error(where, exc) from None
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, BaseException) else OSError(str(exc.reason))
        raise _network_error(where, reason, timeout_s) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # a timeout or reset while reading the answer
        raise _network_error(where, exc, timeout_s) from None


def _http_error(where: str, exc: urllib.error.HTTPError) -> DeliveryError:
    try:
        shown = exc.read(BODY_SHOWN).decode("utf-8", "replace")
    except OSError:
        shown = ""
    finally:
        exc.close()
    status = exc.code
    answered = f"{where} answered HTTP {status}" + (f": {shown!r}" if shown else " (empty body)")
    if 300 <= status < 400:
        location = exc.headers.get("Location", "")
        return DeliveryError(
            f"{answered}; a redirect{f' to {location}' if location else ''} is not followed: "
            "put the final URL in the channel",
            retry=False,
        )
    if status in (401, 403):
        return DeliveryError(
            f"{answered}: the receiver refuses the request; check its credentials or that it expects "
            "this TALLYHUB_WEBHOOK_SECRET (Slack: the webhook was revoked or its channel archived)",
            retry=False,
        )
    if status in (404, 410):
        return DeliveryError(f"{answered}: no such endpoint; check the channel's URL", retry=False)
    if status in (408, 425, 429) or status >= 500:
        return DeliveryError(f"{answered}: the receiver failed or is busy; retrying")
    return DeliveryError(f"{answered}: the receiver rejects the request; check it accepts tallyhub's JSON", retry=False)


def _network_error(where: str, exc: BaseException, timeout_s: float) -> DeliveryError:
    if isinstance(exc, TimeoutError):
        return DeliveryError(f"{where}: no answer within {timeout_s:g} s; is the receiver up and reachable?")
    if isinstance(exc, ConnectionRefusedError):
        return DeliveryError(f"{where}: connection refused; is the receiver running on that host and port?")
    if isinstance(exc, socket.gaierror):
        return DeliveryError(f"{where}: cannot resolve the host ({exc.strerror}); check the URL and the DNS")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(
            f"{where}: its TLS certificate is not trusted ({exc.verify_message}); use a certificate from a "
            "public CA or add the CA to the system's trust store"
        )
    if isinstance(exc, ssl.SSLError):
        return DeliveryError(f"{where}: TLS failed ({exc}); check the URL's scheme and port")
    return DeliveryError(f"{where}: {type(exc).__name__}: {exc}")


def _send_mail(spec: ChannelSpec, n: Notification, settings: NotifySettings) -> None:
    server = settings.smtp
    if server is None:
        raise DeliveryError(
            f"{spec.redacted()}: no SMTP server configured; set TALLYHUB_SMTP_URL, "
            "e.g. smtp://user:password@mail.example.com:587",
            retry=False,
        )
    where = f"{spec.redacted()} via {server.host}:{server.port}"
    sender = settings.sender
    message = email_message(n, sender, spec.recipients)
    try:
        context = ssl.create_default_context(cafile=settings.smtp_ca_file or None)
        smtp: smtplib.SMTP
        if server.security == "tls":
            smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=settings.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=settings.timeout_s)
        with smtp:
            if server.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"{where}: the server does not offer STARTTLS; use smtps:// (port 465) if it speaks TLS "
                        "from the start, or ?starttls=false for a plain relay on this machine",
                        retry=False,
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if server.user:
                smtp.login(server.user, server.password)
            refused = smtp.send_message(message, from_addr=parseaddr(sender)[1], to_addrs=list(spec.recipients))
    except DeliveryError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(
            f"{where}: the server refused the login of {server.user!r} ({_smtp_reply(exc)}); "
            "check the user and password in TALLYHUB_SMTP_URL",
            retry=False,
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(
            f"{where}: {exc}; the server offers no login on this connection: drop the user from "
            "TALLYHUB_SMTP_URL or use STARTTLS/smtps://",
            retry=False,
        ) from None
    except smtplib.SMTPSenderRefused as exc:
        raise DeliveryError(
            f"{where}: the server refused the sender {exc.sender!r} ({_smtp_reply(exc)}); "
            "set TALLYHUB_SMTP_FROM to an address it accepts",
            retry=exc.smtp_code < 500,
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        refusals = "; ".join(f"{addr}: {_smtp_reply_of(code, text)}" for addr, (code, text) in exc.recipients.items())
        raise DeliveryError(
            f"{where}: the server refused every recipient ({refusals}); check the channel's addresses",
            retry=all(code < 500 for code, _ in exc.recipients.values()),
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"{where}: the server answered {_smtp_reply(exc)}", retry=exc.smtp_code < 500) from None
    except smtplib.SMTPServerDisconnected as exc:
        if isinstance(exc.__context__, TimeoutError):  # smtplib reports a read's timeout as a disconnection
            raise _network_error(where, exc.__context__, settings.timeout_s) from None
        raise DeliveryError(f"{where}: the server closed the connection ({exc}); retrying") from None
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(
            f"{where}: the server's TLS certificate is not trusted ({exc.verify_message}); for a private mail "
            "server set TALLYHUB_SMTP_CA_FILE to its CA's PEM file"
        ) from None
    except ssl.SSLError as exc:
        raise DeliveryError(
            f"{where}: TLS failed ({exc}); smtp:// is STARTTLS (port 587), smtps:// TLS from the start (port 465)"
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise _network_error(where, exc, settings.timeout_s) from None
    if refused:
        refusals = "; ".join(f"{addr}: {_smtp_reply_of(code, text)}" for addr, (code, text) in refused.items())
        raise DeliveryError(
            f"{where}: sent, but the server refused some recipients ({refusals}); check the channel's addresses",
            retry=False,  # the others have it: a retry would send them a second copy
        )


def _smtp_reply_of(code: int, text: bytes | str) -> str:
    shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {shown[:BODY_SHOWN]}".strip()


def _smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    return _smtp_reply_of(exc.smtp_code, exc.smtp_error)
