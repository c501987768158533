"""Alert rules: what a rule watches, its condition, window, schedule and delays, and where it notifies.
Pure: parsing and checking a rule (from the CLI, a rules file, the stored JSON) and nothing else.

A rule watches one app (and optionally one environment, endpoint, consumer or consumer group) and
compares one metric, measured over its window, with its threshold. The metrics and their units:

- traffic: ``requests`` (count), ``requests_per_minute``, ``client_errors`` and ``server_errors``
  (the 4xx that are not expected answers, and the 5xx, counts), ``error_rate`` (both over
  requests, 0..1), ``consumers`` (unique consumers), ``bytes_in`` / ``bytes_out``;
- latency: ``p50`` / ``p95`` / ``p99`` (seconds) and ``apdex`` (0..1, with the app's or the
  endpoint's threshold);
- instances: ``cpu`` (the busiest instance's CPU utilization, 0..1 of the CPUs it may use) and
  ``memory`` (the largest instance's resident memory, bytes);
- uptime: ``heartbeat`` (minutes since the app, or the environment, last exported: a rule fires
  when they reach the threshold, 3 by default) and ``health_check`` (the hub calls ``url`` every
  minute; the value is 1 while it answers 2xx, 0 when it does not, after one retry).

These are the numbers of the dashboard and `tallyhub report`, computed by the same SQL
(`storage/alert_queries.py`).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tallyhub.alerts.notify.channels import parse_channel
from tallyhub.storage.alert_queries import REQUEST_VALUES
from tallyhub.storage.apps import APP_NAME
from tallyhub.storage.window import WindowError, parse_duration

REQUEST_METRICS = REQUEST_VALUES
"""Measured on the `requests` table, narrowed as the rule says."""
RESOURCE_METRICS = ("cpu", "memory")
HEARTBEAT = "heartbeat"
HEALTH_CHECK = "health_check"
METRICS = (*REQUEST_METRICS, *RESOURCE_METRICS, HEARTBEAT, HEALTH_CHECK)

OPERATORS = (">", ">=", "<", "<=")
DEFAULT_HEARTBEAT_MINUTES = 3.0
MAX_WINDOW_S = 24 * 3600
"""Windows are read from the per-minute table, which holds every minute of the last day cheaply."""
RULE_NAME = APP_NAME
"""Rule names follow the app names' rule: 1-64 letters, digits, '.', '_' or '-', starting alphanumeric."""
_ENDPOINT = re.compile(r"^([A-Z]+)\s+(/\S*)$")


class RuleError(ValueError):
    """A rule that cannot be kept: the message says which rule, what is wrong and what is accepted."""


@dataclass(frozen=True)
class Rule:
    name: str
    app: str
    metric: str
    threshold: float
    op: str = ">"
    env: str = ""
    """"": every environment of the app, together."""
    endpoint: str = ""
    """``METHOD /route/{template}``, as the dashboard shows it; "": every endpoint."""
    consumer: str = ""
    consumer_group: str = ""
    url: str = ""
    """``health_check`` only: the URL the hub calls."""
    window_s: int = 300
    every_s: int = 60
    """Evaluated every so many seconds (a whole number of minutes), unless ``cron`` is set."""
    cron: str = ""
    """A cron schedule (5 fields, UTC), evaluated at the minutes it matches instead of ``every_s``."""
    pending_s: int = 0
    """The condition must hold so long (and be seen at each evaluation) before the rule fires."""
    keep_firing_s: int = 0
    """A firing rule resolves only after its condition has been clear so long."""
    channels: tuple[str, ...] = ()
    """``webhook:URL``, ``slack:URL``, ``email:ADDRESS[,ADDRESS]`` (`alerts/notify/channels.py`)."""
    description: str = ""
    source: str = field(default="cli", compare=False)
    """Where the rule came from: ``cli``, ``file`` (the rules file the hub reads at start) or ``dashboard``."""

    @property
    def method_route(self) -> tuple[str, str]:
        match = _ENDPOINT.match(self.endpoint)
        return (match.group(1), match.group(2)) if match else ("", "")

    def condition(self) -> str:
        """The condition as people read it: ``error_rate > 0.05 over 5m``."""
        text = f"{self.metric} {self.op} {_number(self.threshold)}"
        if self.metric in (*REQUEST_METRICS, *RESOURCE_METRICS):
            text += f" over {format_duration(self.window_s)}"
        return text

    def scope(self) -> str:
        """What the rule narrows to beyond app and environment, as people read it ("" for none)."""
        parts = [self.endpoint]
        parts.append(f"consumer {self.consumer}" if self.consumer else "")
        parts.append(f"consumer group {self.consumer_group}" if self.consumer_group else "")
        parts.append(self.url)
        return " ".join(part for part in parts if part)

    def schedule(self) -> str:
        return f"cron {self.cron}" if self.cron else f"every {format_duration(self.every_s)}"

    def to_json(self) -> str:
        """What is stored: every field, channels as a list."""
        return json.dumps(asdict(self), sort_keys=True)


_DURATIONS = {"window": "window_s", "every": "every_s", "pending": "pending_s", "keep_firing": "keep_firing_s"}
_KEYS = {f.name for f in fields(Rule)} | set(_DURATIONS)


def parse_rule(values: Mapping[str, Any], source: str = "cli") -> Rule:
    """A checked rule from a mapping: the stored JSON, a rules file's table, the CLI's options.
    Durations may be given as text (``window = "5m"``) or seconds (``window_s = 300``)."""
    name = str(values.get("name", ""))
    where = f"rule {name!r}" if name else "rule"
    unknown = sorted(set(values) - _KEYS)
    if unknown:
        raise RuleError(f"{where}: unknown key {', '.join(map(repr, unknown))} (known: {', '.join(sorted(_KEYS))})")
    given = dict(values)
    for text_key, seconds_key in _DURATIONS.items():
        if text_key in given:
            given[seconds_key] = _duration(where, text_key, given.pop(text_key))
    metric = str(given.get("metric", ""))
    if metric == HEARTBEAT:
        given.setdefault("threshold", DEFAULT_HEARTBEAT_MINUTES)
        given.setdefault("op", ">=")
    if metric == HEALTH_CHECK:
        given.setdefault("threshold", 1)
        given.setdefault("op", "<")
    for required in ("name", "app", "metric", "threshold"):
        if given.get(required) in (None, ""):
            raise RuleError(f"{where}: {required} is required")
    try:
        rule = Rule(
            **{key: value for key, value in given.items() if key not in ("channels", "threshold", "source")},
            threshold=float(given["threshold"]),
            channels=tuple(str(channel) for channel in given.get("channels") or ()),
            source=source,
        )
    except (TypeError, ValueError) as exc:
        raise RuleError(f"{where}: {exc}") from None
    check_rule(rule)
    return rule


def check_rule(rule: Rule) -> None:
    """Raise ``RuleError`` saying what is wrong with the rule, if anything."""
    where = f"rule {rule.name!r}"
    if not RULE_NAME.fullmatch(rule.name):
        raise RuleError(f"invalid rule name {rule.name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if not APP_NAME.fullmatch(rule.app):
        raise RuleError(f"{where}: invalid app name {rule.app!r}")
    if rule.metric not in METRICS:
        raise RuleError(f"{where}: unknown metric {rule.metric!r} (one of: {', '.join(METRICS)})")
    if rule.op not in OPERATORS:
        raise RuleError(f"{where}: unknown condition {rule.op!r} (one of: {' '.join(OPERATORS)})")
    if not math.isfinite(rule.threshold):
        raise RuleError(f"{where}: the threshold must be a number")
    if rule.endpoint and not _ENDPOINT.match(rule.endpoint):
        raise RuleError(f"{where}: endpoint {rule.endpoint!r}: write it as METHOD /route, e.g. 'GET /items/{{id}}'")
    if rule.consumer and rule.consumer_group:
        raise RuleError(f"{where}: narrow to a consumer or a consumer group, not both")
    narrowed = rule.endpoint or rule.consumer or rule.consumer_group
    if narrowed and rule.metric not in REQUEST_METRICS:
        raise RuleError(f"{where}: {rule.metric} is measured per app and environment: drop endpoint and consumer")
    if (rule.metric == HEALTH_CHECK) != bool(rule.url):
        raise RuleError(
            f"{where}: a health_check rule needs url (http:// or https://)"
            if rule.url == ""
            else f"{where}: url is for health_check rules only"
        )
    if rule.url and not re.match(r"^https?://[^/\s]+", rule.url):
        raise RuleError(f"{where}: url {rule.url!r}: give an http:// or https:// URL")
    if not 60 <= rule.window_s <= MAX_WINDOW_S or rule.window_s % 60:
        raise RuleError(f"{where}: the window must be whole minutes from 1m to 24h")
    if rule.every_s < 60 or rule.every_s % 60:
        raise RuleError(f"{where}: the interval must be whole minutes, at least 1m")
    if rule.pending_s < 0 or rule.keep_firing_s < 0:
        raise RuleError(f"{where}: delays cannot be negative")
    if rule.cron:
        from tallyhub.alerts.schedule import check_cron

        check_cron(where, rule.cron)
    for channel in rule.channels:
        try:
            parse_channel(channel)
        except ValueError as exc:
            raise RuleError(f"{where}: {exc}") from None


def rule_from_json(text: str) -> Rule:
    values = json.loads(text)
    return parse_rule(values, source=values.pop("source", "cli"))


def rules_from_toml(text: str, origin: str) -> list[Rule]:
    """The rules of a rules file: ``[[rule]]`` tables, each a rule's keys (see docs/alerts.md)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{origin}: not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"rule"})
    if unknown:
        raise RuleError(f"{origin}: unknown table {', '.join(map(repr, unknown))}: write each rule as a [[rule]] table")
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise RuleError(f"{origin}: write each rule as a [[rule]] table")
    rules = []
    for table in tables:
        try:
            rules.append(parse_rule(table, source="file"))
        except RuleError as exc:
            raise RuleError(f"{origin}: {exc}") from None
    duplicated = _duplicates(rule.name for rule in rules)
    if duplicated:
        raise RuleError(f"{origin}: rule names must be unique: {', '.join(duplicated)} more than once")
    return rules


def _duplicates(names: Iterable[str]) -> list[str]:
    return sorted(name for name, count in Counter(names).items() if count > 1)


def _duration(where: str, key: str, value: Any) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if str(value).strip() in ("0", "0s", "0m"):
        return 0
    try:
        return int(parse_duration(str(value)).total_seconds())
    except WindowError as exc:
        raise RuleError(f"{where}: {key}: {exc}") from None


def format_duration(seconds: int) -> str:
    """``300`` → ``5m``, ``5400`` → ``1h30m``, ``0`` → ``0s``."""
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _number(value: float) -> str:
    return f"{value:g}"
