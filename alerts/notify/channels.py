"""Where a rule's notifications go (``ChannelSpec``: ``webhook:URL``, ``slack:URL``,
``email:ADDRESS[,ADDRESS…]``) and how the hub sends them (``NotifySettings``: the webhooks' signing
secret, the SMTP server)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Literal, cast, get_args
from urllib.parse import parse_qsl, unquote, urlsplit

ChannelKind = Literal["webhook", "slack", "email"]
KINDS: tuple[str, ...] = get_args(ChannelKind)

FORMS = "webhook:https://…, slack:https://hooks.slack.com/… or email:ops@example.com[,dev@example.com]"
"""The accepted forms, as error messages name them."""

_ADDRESS = re.compile(r"[^@\s,;<>\"()]+@[^@\s,;<>\"()]+\.[^@\s,;<>\"().]+")
SMTP_FORMS = (
    "smtp://[user:password@]host[:587] (STARTTLS), smtps://[user:password@]host[:465] (TLS) "
    "or smtp://host:25?starttls=false (plain, a relay on this machine)"
)


class ChannelError(ValueError):
    pass


def _check_url(kind: str, url: str) -> None:
    """http(s) with a host. The URL itself is never repeated: a Slack webhook's URL is its secret."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parses the port: ValueError when it is not a number in range)
    except ValueError as exc:
        raise ChannelError(f"invalid {kind} channel: the URL does not parse ({exc}); use {FORMS}") from None
    if parts.scheme not in ("http", "https"):
        raise ChannelError(f"invalid {kind} channel: the URL must start with http:// or https://; use {FORMS}")
    if not parts.hostname:
        raise ChannelError(f"invalid {kind} channel: the URL names no host; use {FORMS}")
    if any(c.isspace() for c in url):
        raise ChannelError(f"invalid {kind} channel: the URL contains a space; use {FORMS}")


@dataclass(frozen=True)
class ChannelSpec:
    """One channel; ``str(spec)`` is its text (``parse_channel``'s input), ``redacted()`` the form
    to log and record."""

    kind: ChannelKind
    target: str
    """The URL (webhook, slack) or the comma-separated addresses (email)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ChannelError(f"unknown channel kind {self.kind!r}; use {FORMS}")
        if self.kind == "email":
            if not self.recipients:
                raise ChannelError(f"invalid email channel: no address; use {FORMS}")
            for address in self.recipients:
                if not _ADDRESS.fullmatch(address):
                    raise ChannelError(f"invalid email channel: {address!r} is not an e-mail address; use {FORMS}")
        else:
            _check_url(self.kind, self.target)

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"

    @property
    def recipients(self) -> tuple[str, ...]:
        """An email channel's addresses (empty for the others)."""
        if self.kind != "email":
            return ()
        return tuple(a.strip() for a in self.target.split(",") if a.strip())

    def fingerprint(self) -> str:
        """Tells channels apart where their redacted forms are the same (two Slack webhooks): 16 hex
        digits of the text's SHA-256, which reveal nothing of the secret path."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:16]

    def redacted(self) -> str:
        """For logs and records: a URL keeps only its scheme and host (``slack:https://hooks.slack.com/***``),
        since the path of a Slack or chat webhook is the credential that lets anyone post."""
        if self.kind == "email":
            return str(self)
        parts = urlsplit(self.target)
        host = parts.netloc.rpartition("@")[2]
        hidden = "/***" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
        return f"{self.kind}:{parts.scheme}://{host}{hidden}"


def parse_channel(text: str) -> ChannelSpec:
    """``webhook:https://…``, ``slack:https://hooks.slack.com/…`` or ``email:a@example.com[,b@example.com]``."""
    kind, colon, target = text.strip().partition(":")
    kind = kind.strip().lower()
    if not colon or kind not in KINDS:
        shown = kind if colon else text.strip()[:30]
        raise ChannelError(f"unknown channel {shown!r}: use {FORMS}")
    target = target.strip()
    if kind == "email":
        target = ",".join(a.strip() for a in target.split(",") if a.strip())
    return ChannelSpec(cast(ChannelKind, kind), target)


@dataclass(frozen=True)
class SmtpServer:
    """An SMTP URL, parsed: how to reach the server and who to log in as."""

    host: str
    port: int
    security: Literal["starttls", "tls", "plain"]
    """``starttls``: required (smtp://), ``tls``: implicit (smtps://), ``plain``: none (``?starttls=false``)."""
    user: str = ""
    password: str = field(default="", repr=False)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_smtp_url(url: str) -> SmtpServer:
    """``smtp://user:password@host:587`` (STARTTLS, required), ``smtps://user:password@host:465``
    (implicit TLS) or ``smtp://host:25?starttls=false`` (plain). User and password are
    percent-decoded and optional. A password is never sent in plain text to another machine: plain
    SMTP with a login only to a loopback host. Error messages never show the password."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ChannelError(f"invalid SMTP URL: {exc}; use {SMTP_FORMS}") from None
    if parts.scheme not in ("smtp", "smtps"):
        raise ChannelError(f"invalid SMTP URL: the scheme must be smtp:// or smtps://; use {SMTP_FORMS}")
    if not parts.hostname:
        raise ChannelError(f"invalid SMTP URL: no host; use {SMTP_FORMS}")
    if parts.path not in ("", "/") or parts.fragment:
        raise ChannelError(f"invalid SMTP URL: nothing may follow the host and port but ?starttls=…; use {SMTP_FORMS}")
    try:
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
    except ValueError:
        raise ChannelError(f"invalid SMTP URL: the query does not parse; use {SMTP_FORMS}") from None
    unknown = set(query) - {"starttls"}
    if unknown:
        raise ChannelError(f"invalid SMTP URL: unknown option {sorted(unknown)[0]!r} (only starttls=true|false)")
    starttls = query.get("starttls", "true").lower()
    if starttls not in ("true", "false"):
        raise ChannelError(f"invalid SMTP URL: starttls={query['starttls']!r}; use starttls=true or starttls=false")
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if password and not user:
        raise ChannelError("invalid SMTP URL: a password without a user; use smtp://user:password@host")
    if parts.scheme == "smtps":
        if "starttls" in query:
            raise ChannelError("invalid SMTP URL: smtps:// is TLS from the start; starttls= applies to smtp:// only")
        return SmtpServer(parts.hostname, port or 465, "tls", user, password)
    if starttls == "false":
        if user and not _is_loopback(parts.hostname):
            raise ChannelError(
                "invalid SMTP URL: starttls=false would send the password in plain text to "
                f"{parts.hostname}; plain SMTP with a login is only for a relay on this machine (127.0.0.1)"
            )
        return SmtpServer(parts.hostname, port or 25, "plain", user, password)
    return SmtpServer(parts.hostname, port or 587, "starttls", user, password)


@dataclass(frozen=True)
class NotifySettings:
    webhook_secret: str = field(default="", repr=False)
    """The HMAC-SHA256 key that signs webhook bodies (``X-Tallyhub-Signature``); empty: unsigned."""
    smtp_url: str = field(default="", repr=False)
    """See ``parse_smtp_url``; empty: no e-mail."""
    smtp_from: str = ""
    """The sender; empty: ``tallyhub@<hostname>``."""
    smtp_ca_file: str = ""
    """A PEM bundle of CAs to trust for the SMTP server's certificate (a private mail server); empty: the system's."""
    timeout_s: float = 10.0
    """Per connection and per read or write of one delivery attempt."""

    def __post_init__(self) -> None:
        if self.smtp_url:
            parse_smtp_url(self.smtp_url)
        if self.smtp_ca_file and not os.path.isfile(self.smtp_ca_file):
            raise ChannelError(f"SMTP CA file {self.smtp_ca_file} does not exist (TALLYHUB_SMTP_CA_FILE)")
        if self.smtp_from and not _ADDRESS.fullmatch(parseaddr(self.smtp_from)[1]):
            raise ChannelError(
                f"invalid sender {self.smtp_from!r} (TALLYHUB_SMTP_FROM): use alerts@example.com "
                "or 'Tallyhub <alerts@example.com>'"
            )
        if not self.timeout_s > 0:
            raise ChannelError(f"the notification timeout must be positive, not {self.timeout_s}")

    @property
    def smtp(self) -> SmtpServer | None:
        return parse_smtp_url(self.smtp_url) if self.smtp_url else None

    @property
    def sender(self) -> str:
        """The From header (may hold a display name); ``parseaddr(sender)[1]`` is the envelope's address."""
        return self.smtp_from or f"tallyhub@{socket.gethostname()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NotifySettings:
        """From ``TALLYHUB_WEBHOOK_SECRET``, ``TALLYHUB_SMTP_URL``, ``TALLYHUB_SMTP_FROM`` and
        ``TALLYHUB_SMTP_CA_FILE`` (``os.environ`` by default); ``ChannelError`` names what is wrong."""
        env = os.environ if environ is None else environ
        return cls(
            webhook_secret=env.get("TALLYHUB_WEBHOOK_SECRET", ""),
            smtp_url=env.get("TALLYHUB_SMTP_URL", "").strip(),
            smtp_from=env.get("TALLYHUB_SMTP_FROM", "").strip(),
            smtp_ca_file=env.get("TALLYHUB_SMTP_CA_FILE", "").strip(),
        )
