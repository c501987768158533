"""`tallyhub alerts add|list|show|test|rm`: the alert rules, their states and history (docs/alerts.md).

Like every command, through the running hub when it owns the embedded data directory, else directly
on storage; a rule added while the hub runs is evaluated from its next minute.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from tallyhub.alerts.evaluator import load_rules, notification_of
from tallyhub.alerts.notify.channels import NotifySettings, parse_channel
from tallyhub.alerts.notify.outbox import Outbox
from tallyhub.alerts.rules import METRICS, OPERATORS, Rule, RuleError, format_duration, parse_rule
from tallyhub.alerts.states import Transition
from tallyhub.collector_processor.report import text_table
from tallyhub.storage import alert_queries as q
from tallyhub.storage.apps import SqlRunner


def register(main: click.Group, storage_options: Any, runner_for: Any) -> None:
    """Add the `alerts` group to ``main``; ``runner_for(data_dir, storage_url, database)`` opens a
    ``SqlRunner`` (a context manager) the way every command does."""

    @main.group("alerts")
    def alerts_group() -> None:
        """Alert rules: what the hub watches every minute, and where it notifies."""

    @alerts_group.command("add")
    @click.argument("name")
    @click.option("--app", required=True, help="The app the rule watches.")
    @click.option("--metric", required=True, type=click.Choice(METRICS), help="What is measured (docs/alerts.md).")
    @click.option(
        "--op", type=click.Choice(OPERATORS), help="The condition [default: >; >= for heartbeat, < for health_check]."
    )
    @click.option(
        "--threshold",
        type=float,
        help="The value compared (seconds for p50/p95/p99, 0-1 for rates, "
        "apdex and cpu, bytes for memory and data, minutes for heartbeat: default 3).",
    )
    @click.option("--env", default="", help="One environment (default: all of the app's, together).")
    @click.option("--endpoint", default="", help="One endpoint, as 'METHOD /route/{param}'.")
    @click.option("--consumer", default="", help="One consumer (its identifier).")
    @click.option("--consumer-group", default="", help="One consumer group.")
    @click.option("--url", default="", help="health_check: the URL the hub calls every minute.")
    @click.option("--window", default="5m", show_default=True, help="Measured over the last so long (1m to 24h).")
    @click.option("--every", default="1m", show_default=True, help="Evaluated every so long (whole minutes).")
    @click.option("--cron", default="", help="Evaluated at the minutes this cron schedule matches (UTC) instead.")
    @click.option("--pending", default="0", show_default=True, help="Fire only once the condition has held so long.")
    @click.option("--keep-firing", default="0", show_default=True, help="Resolve only once it has been clear so long.")
    @click.option(
        "--notify",
        "channels",
        multiple=True,
        help="Where to notify (repeatable): webhook:URL, slack:URL, email:ADDRESS[,ADDRESS].",
    )
    @click.option("--description", default="", help="Shown with the rule and in its notifications' records.")
    @click.option("--replace", is_flag=True, help="Replace the rule of that name if there is one.")
    @storage_options
    def add_command(
        name: str,
        data_dir: Path,
        storage_url: str | None,
        database: str,
        replace: bool,
        **options: Any,
    ) -> None:
        """Add an alert rule (--replace: change one). For example:

        \b
        tallyhub alerts add errors --app shop --metric error_rate \\
            --threshold 0.05 --window 5m --notify slack:URL
        """
        values = {key: value for key, value in options.items() if value not in (None, "", ())}
        values["keep_firing"] = values.pop("keep_firing", "0")
        try:
            rule = parse_rule({"name": name, **values})
        except RuleError as exc:
            raise click.ClickException(str(exc)) from None
        with runner_for(data_dir, storage_url, database) as runner:
            existing = {row["name"]: row for row in q.stored_rules(runner)}
            if name in existing and not replace:
                raise click.ClickException(f"a rule named {name!r} exists already (--replace replaces it)")
            q.save_rule(runner, rule.name, rule.app, rule.metric, rule.to_json(), rule.source)
        click.echo(f"{'replaced' if name in existing else 'added'} alert rule {describe(rule)}")
        if not rule.channels:
            click.echo(
                "it notifies no one: add --notify to be told (its state shows in `tallyhub alerts list`)", err=True
            )

    @alerts_group.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print the rules and their states as JSON.")
    @storage_options
    def list_command(data_dir: Path, storage_url: str | None, database: str, as_json: bool) -> None:
        """The rules, each with its state now ("-": not evaluated yet); `show` gives one in full."""
        with runner_for(data_dir, storage_url, database) as runner:
            rules = load_rules(runner)
            states = q.load_states(runner)
        if as_json:
            click.echo(json.dumps([_as_dict(rule, states.get(rule.name)) for rule in rules], indent=2, default=str))
            return
        if not rules:
            click.echo("no alert rules (add one with `tallyhub alerts add`)")
            return
        rows = [
            (
                rule.name,
                f"{rule.app}{'/' + rule.env if rule.env else ''}",
                (rule.scope() + " " if rule.scope() else "") + rule.condition(),
                *_state_cells(states.get(rule.name)),
            )
            for rule in rules
        ]
        headers = ("RULE", "APP", "CONDITION", "STATE", "SINCE (UTC)")
        width = shutil.get_terminal_size().columns
        click.echo("\n".join(text_table(headers, rows, fit=[2, 1], width=width)))

    @alerts_group.command("show")
    @click.argument("name")
    @storage_options
    def show_command(name: str, data_dir: Path, storage_url: str | None, database: str) -> None:
        """A rule, its state, its latest transitions and notifications."""
        with runner_for(data_dir, storage_url, database) as runner:
            rule = _find(runner, name)
            state = q.load_states(runner).get(name)
            transitions = q.history(runner, rule=name, limit=10)
            attempts = q.deliveries(runner, rule=name, limit=10)
        click.echo(f"rule       {rule.name}  ({rule.source})")
        click.echo(f"watches    {rule.app} {'env ' + rule.env if rule.env else 'all envs'} {rule.scope()}".rstrip())
        click.echo(f"condition  {rule.condition()}, {rule.schedule()}")
        click.echo(
            f"delays     pending {format_duration(rule.pending_s)}, keep firing {format_duration(rule.keep_firing_s)}"
        )
        for channel in rule.channels:
            click.echo(f"notifies   {parse_channel(channel).redacted()}")
        if rule.description:
            click.echo(f"about      {rule.description}")
        click.echo(f"state      {_state_text(state)}")
        if state and state["value"] is not None:
            click.echo(f"value      {state['value']:g} at {_when(state['evaluated_at'])}")
        click.echo("history:" if transitions else "history: none yet")
        for row in transitions:
            value = "no data" if row["value"] is None else f"{float(row['value']):g}"
            click.echo(f"  {_when(float(row['time']))}  {row['before']:>8} → {row['after']:<8}  value {value}")
        click.echo("notifications:" if attempts else "notifications: none yet")
        for row in attempts:
            outcome = "delivered" if row["ok"] else f"failed: {row['error']}"
            click.echo(
                f"  {_when(float(row['time']))}  {row['state']:<8} {row['channel']}  #{row['attempt']} {outcome}"
            )

    @alerts_group.command("test")
    @click.argument("name")
    @storage_options
    def test_command(name: str, data_dir: Path, storage_url: str | None, database: str) -> None:
        """Send a sample notification to each of the rule's channels now.

        Says how each went; the webhook secret and the SMTP server come from TALLYHUB_WEBHOOK_SECRET,
        TALLYHUB_SMTP_URL, … as the hub's do."""
        with runner_for(data_dir, storage_url, database) as runner:
            rule = _find(runner, name)
        if not rule.channels:
            raise click.ClickException(
                f"rule {name!r} notifies no one: add channels with `tallyhub alerts add --replace`"
            )
        try:
            settings = NotifySettings.from_env()
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        logging.getLogger("tallyhub.alerts").setLevel(logging.CRITICAL)  # each outcome is printed below
        outbox = Outbox(settings, lambda _delivery: None)
        now = datetime.now(UTC)
        sample = notification_of(Transition(rule, "ok", "test", now, rule.threshold, now))
        failed = 0
        for channel in rule.channels:
            delivery = outbox.send_now(parse_channel(channel), sample)
            failed += not delivery.ok
            # a failure's text names its channel already
            click.echo(f"{delivery.channel}: delivered" if delivery.ok else f"failed: {delivery.error}")
        if failed:
            raise click.ClickException(f"{failed} of {len(rule.channels)} channels failed")

    @alerts_group.command("rm")
    @click.argument("name")
    @storage_options
    def rm_command(name: str, data_dir: Path, storage_url: str | None, database: str) -> None:
        """Remove a rule (its history is kept). A rule from the rules file comes back at the hub's next
        start unless it is removed from the file."""
        with runner_for(data_dir, storage_url, database) as runner:
            rule = _find(runner, name)
            q.remove_rules(runner, [name])
        click.echo(f"removed alert rule {name}")
        if rule.source == "file":
            click.echo("it came from the rules file: remove it there too, or the hub adds it again at start", err=True)


def _find(runner: SqlRunner, name: str) -> Rule:
    for rule in load_rules(runner):
        if rule.name == name:
            return rule
    raise click.ClickException(f"no alert rule named {name!r} (see `tallyhub alerts list`)")


def describe(rule: Rule) -> str:
    where = f"{rule.app}{' env ' + rule.env if rule.env else ''}{' ' + rule.scope() if rule.scope() else ''}"
    return f"{rule.name}: {where}: {rule.condition()}, {rule.schedule()}"


def _state_cells(state: dict[str, Any] | None) -> tuple[str, str]:
    """The state and since when, short (month-day time): what `alerts list` shows ("-": not evaluated yet)."""
    if not state:
        return "-", "-"
    return state["state"], _when(state["since"])[5:16] if state["since"] else "-"


def _state_text(state: dict[str, Any] | None) -> str:
    if not state:
        return "not evaluated yet"
    return f"{state['state']} since {_when(state['since'])}" if state["since"] else state["state"]


def _when(moment: datetime | float | None) -> str:
    if moment is None:
        return "-"
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _as_dict(rule: Rule, state: dict[str, Any] | None) -> dict[str, Any]:
    values = json.loads(rule.to_json())
    values["channels"] = [parse_channel(channel).redacted() for channel in rule.channels]
    values["state"] = state
    return values
