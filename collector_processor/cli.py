"""The `tallyhub` command: run the hub, manage apps, query the data."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import platformdirs

from tallyhub import __version__
from tallyhub.alerts.notify.channels import ChannelError, NotifySettings
from tallyhub.alerts.rules import RuleError
from tallyhub.collector_processor import cli_alerts
from tallyhub.collector_processor.hub import AppKeysError, HubSettings, prepare_data_dir, serve
from tallyhub.collector_processor.logs_view import render_detail as render_logs_detail
from tallyhub.collector_processor.logs_view import render_json as render_logs_json
from tallyhub.collector_processor.logs_view import render_table as render_logs_table
from tallyhub.collector_processor.query_api import HubRunner, QueryAddressError
from tallyhub.collector_processor.queue import MAX_BYTES as QUEUE_MAX_BYTES
from tallyhub.collector_processor.receive.auth import generate_key, hash_key, parse_app_keys
from tallyhub.collector_processor.receive.quota import DEFAULT_PER_DAY as DEFAULT_REQUEST_LOG_QUOTA
from tallyhub.collector_processor.receive.receiver import ListenError
from tallyhub.collector_processor.report import RENDERERS, render_table
from tallyhub.collector_processor.tls import Tls, TlsError
from tallyhub.dashboard.passwords import MIN_PASSWORD, hash_password
from tallyhub.dashboard.server import DashboardAddressError
from tallyhub.demo import missing_packages as missing_demo_packages
from tallyhub.storage.apps import AppError, SqlRunner, create_app, list_apps, revoke_app, rotate_key
from tallyhub.storage.backend import DEFAULT_DATABASE, ClientRunner, is_embedded, open_client, redact_url
from tallyhub.storage.cluster import apply_retention_on_cluster
from tallyhub.storage.migrate import migrate
from tallyhub.storage.report_queries import SECTIONS, UnknownApp, build_report
from tallyhub.storage.request_log_queries import FilterError, LogFilter, search, status_ranges
from tallyhub.storage.retention import REQUEST_LOG_DAYS, apply_retention
from tallyhub.storage.users import UserError, list_users, remove_user, save_user
from tallyhub.storage.window import WindowError, resolve_window
from tallyhub.wire import APP_KEY_HEADER


def storage_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--data-dir, --storage-url, --cluster and --database, shared by every command."""
    command = click.option(
        "--database",
        envvar="TALLYHUB_DATABASE",
        default=DEFAULT_DATABASE,
        show_default=True,
        show_envvar=True,
        help="ClickHouse database that holds tallyhub's tables (a database in --storage-url wins).",
    )(command)
    command = click.option(
        "--cluster",
        envvar="TALLYHUB_CLUSTER",
        show_envvar=True,
        expose_value=False,  # read by settings_from, so that the commands' signatures stay as they are
        callback=lambda ctx, _param, value: ctx.meta.__setitem__(_CLUSTER, value or None),
        help="ClickHouse cluster (remote_servers) to create the tables on: Replicated tables on each "
        "shard, Distributed tables over them. Default: one server.",
    )(command)
    command = click.option(
        "--storage-url",
        envvar="TALLYHUB_STORAGE_URL",
        show_envvar=True,
        help="ClickHouse to use: chdb:///path (embedded) or clickhouse://user:password@host:8123/db "
        "(clickhouses:// or https:// for TLS, port 8443; password also from TALLYHUB_CLICKHOUSE_PASSWORD). "
        "Default: embedded, under DATA_DIR/clickhouse.",
    )(command)
    return click.option(
        "--data-dir",
        envvar="TALLYHUB_DATA_DIR",
        default=default_data_dir,
        show_default=str(default_data_dir()),
        show_envvar=True,
        type=click.Path(file_okay=False, path_type=Path),
        callback=lambda _ctx, _param, value: value.expanduser().absolute(),
        help="Directory of the hub's queue and embedded ClickHouse: one place whatever directory a command "
        "runs in, so that every command finds the running hub.",
    )(command)


def default_data_dir() -> Path:
    """The platform's data directory for tallyhub (``~/.local/share/tallyhub`` on Linux, honouring
    ``XDG_DATA_HOME``): absolute, so that `tallyhub serve` and the commands that read its data agree
    wherever they are started."""
    return Path(platformdirs.user_data_dir("tallyhub", appauthor=False))


def retention_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--retention-months",
        envvar="TALLYHUB_RETENTION_MONTHS",
        type=click.IntRange(min=1),
        show_envvar=True,
        help="Keep data this many months in every table (raw and rollups); applied to existing tables. "
        "Default: as the tables are (12 months when created).",
    )(command)


_CLUSTER = "tallyhub.cluster"


def settings_from(data_dir: Path, storage_url: str | None, database: str, **extra: Any) -> HubSettings:
    ctx = click.get_current_context(silent=True)
    extra.setdefault("cluster", ctx.meta.get(_CLUSTER) if ctx is not None else None)
    return HubSettings(data_dir=data_dir, storage_url=storage_url, database=database, **extra)


@contextmanager
def sql_runner(settings: HubSettings) -> Iterator[SqlRunner]:
    """Through the running hub when it owns the embedded data directory, else directly."""
    url = settings.resolved_storage_url
    if is_embedded(url):
        hub = HubRunner.find(settings.data_dir)
        if hub is not None:
            yield hub
            return
        prepare_data_dir(settings.data_dir)
    try:
        client = open_client(url, settings.database, create=True, cluster=settings.cluster)
    except Exception as exc:
        raise click.ClickException(
            f"cannot open {redact_url(url)}: {exc}\n(is another process using this data directory? "
            "while `tallyhub serve` runs, commands go through it)"
        ) from exc
    try:
        migrate(client, settings.cluster)
        # read-only queries on a client of their own (see open_client)
        reader = open_client(url, settings.database, cluster=settings.cluster, readonly=True)
        try:
            yield ClientRunner(client, reader)
        finally:
            reader.close()
    finally:
        client.close()


@click.group()
@click.version_option(__version__, prog_name="tallyhub")
def main() -> None:
    """tallyhub: API monitoring and analytics on OpenTelemetry and ClickHouse."""


@main.command("serve")
@storage_options
@click.option(
    "--grpc-address",
    envvar="TALLYHUB_GRPC_ADDRESS",
    default="127.0.0.1:4317",
    show_default=True,
    show_envvar=True,
    help="host:port on which to receive OTLP gRPC (0.0.0.0:4317 to accept other machines).",
)
@click.option(
    "--http-address",
    envvar="TALLYHUB_HTTP_ADDRESS",
    default="127.0.0.1:4318",
    show_default=True,
    show_envvar=True,
    help="host:port on which to receive OTLP/HTTP (0.0.0.0:4318 to accept other machines; 'off' or '' turns it off).",
)
@click.option(
    "--query-address",
    envvar="TALLYHUB_QUERY_ADDRESS",
    default="127.0.0.1:8124",
    show_default=True,
    show_envvar=True,
    help="Loopback host:port of the query endpoint that local `tallyhub` commands use.",
)
@click.option(
    "--allow-remote-query",
    envvar="TALLYHUB_ALLOW_REMOTE_QUERY",
    is_flag=True,
    show_envvar=True,
    help="Accept a --query-address that is not loopback. The endpoint runs any SQL, writes too, with the "
    "hub's own ClickHouse credentials, guarded only by the token in DATA_DIR/hub.json, over plain HTTP.",
)
@click.option(
    "--dashboard-address",
    envvar="TALLYHUB_DASHBOARD_ADDRESS",
    default="127.0.0.1:8125",
    show_default=True,
    show_envvar=True,
    help="host:port of the web dashboard ('off' or '' turns it off). Not loopback: only with dashboard "
    "users (`tallyhub users add NAME`), who sign in with a password.",
)
@click.option(
    "--queue-max-bytes",
    envvar="TALLYHUB_QUEUE_MAX_BYTES",
    type=int,
    default=QUEUE_MAX_BYTES,
    show_default=True,
    show_envvar=True,
    help="Cap of the durable queue on disk; when it is full, exports get UNAVAILABLE and are retried later.",
)
@click.option(
    "--request-log-days",
    envvar="TALLYHUB_REQUEST_LOG_DAYS",
    type=click.IntRange(1, 3650),
    default=None,
    show_envvar=True,
    help="Days the request log is kept (clients log requests with request_logging=True). Set at every start; "
    f"the table is created with {REQUEST_LOG_DAYS} [default: leave it as it is].",
)
@click.option(
    "--request-log-quota",
    envvar="TALLYHUB_REQUEST_LOG_QUOTA",
    type=click.IntRange(min=0),
    default=DEFAULT_REQUEST_LOG_QUOTA,
    show_default=True,
    show_envvar=True,
    help="Logged requests an app may store per UTC day (0: no quota). Beyond it, exports' logged requests get "
    "OTLP partial success and are counted in `tallyhub status`; metrics are never refused for it.",
)
@click.option(
    "--receivers",
    envvar="TALLYHUB_RECEIVERS",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    show_envvar=True,
    help="Receiver processes beside the hub's own, on the same gRPC port: each takes exports on a core of "
    "its own (about one per core beyond the first pays off under heavy load).",
)
@click.option(
    "--queue-dir",
    envvar="TALLYHUB_QUEUE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_envvar=True,
    help="The durable queue's directory [default: DATA_DIR/queue]; each hub replica needs its own.",
)
@click.option(
    "--exactly-once-across-hubs",
    envvar="TALLYHUB_EXACTLY_ONCE_ACROSS_HUBS",
    is_flag=True,
    show_envvar=True,
    help="Insert each export as a block of its own, deduplicated by ClickHouse on its client's batch id, so "
    "that an export retried against another hub writing to the same ClickHouse is stored once (each insert "
    "costs ClickHouse ~30 ms: for replicas behind a load balancer, not for one hub under heavy load).",
)
@click.option(
    "--tls-cert-file",
    envvar="TALLYHUB_TLS_CERT_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_envvar=True,
    help="PEM certificate (chain) for TLS on OTLP gRPC, OTLP/HTTP and the dashboard; with --tls-key-file.",
)
@click.option(
    "--tls-key-file",
    envvar="TALLYHUB_TLS_KEY_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_envvar=True,
    help="PEM private key of --tls-cert-file.",
)
@click.option(
    "--grpc-max-connection-age",
    "grpc_max_connection_age_s",
    envvar="TALLYHUB_GRPC_MAX_CONNECTION_AGE",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    show_envvar=True,
    metavar="SECONDS",
    help="Close each gRPC client connection after this long (clients reconnect at once): behind a plain "
    "Kubernetes Service, replicas then share long-lived clients (300 is a good value). 0: never.",
)
@click.option(
    "--app-keys-file",
    envvar="TALLYHUB_APP_KEYS_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_envvar=True,
    help="A file of NAME=KEY lines (a Docker or Kubernetes secret): at start, each app is created or given "
    "that key, so a deploy provisions its apps' keys without `tallyhub apps create`.",
)
@click.option(
    "--alert-rules",
    "alert_rules_file",
    envvar="TALLYHUB_ALERT_RULES",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_envvar=True,
    help="A TOML file of alert rules ([[rule]] tables, docs/alerts.md) made the rules from that file at start; "
    "notifications use TALLYHUB_WEBHOOK_SECRET, TALLYHUB_SMTP_URL, TALLYHUB_SMTP_FROM, TALLYHUB_SMTP_CA_FILE.",
)
@retention_option
@click.option("--log-level", envvar="TALLYHUB_LOG_LEVEL", default="INFO", show_default=True, show_envvar=True)
def serve_command(
    data_dir: Path,
    storage_url: str | None,
    database: str,
    grpc_address: str,
    http_address: str,
    query_address: str,
    allow_remote_query: bool,
    dashboard_address: str,
    queue_max_bytes: int,
    receivers: int,
    queue_dir: Path | None,
    exactly_once_across_hubs: bool,
    tls_cert_file: Path | None,
    tls_key_file: Path | None,
    grpc_max_connection_age_s: float,
    app_keys_file: Path | None,
    alert_rules_file: Path | None,
    retention_months: int | None,
    request_log_days: int | None,
    request_log_quota: int,
    log_level: str,
) -> None:
    """Run the hub: receive OTLP, queue durably, write to ClickHouse. Stops on SIGTERM/SIGINT."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    running = HubRunner.find(data_dir)
    if running is not None:
        raise click.ClickException(
            f"a hub is already running on {data_dir} (pid {running.pid}, queries on {running.url}): "
            "stop it first, or start this one with another --data-dir"
        )
    click.echo(f"data directory: {data_dir}")
    old = Path("tallyhub-data").absolute()
    if old != data_dir and (old / "clickhouse").is_dir():
        click.echo(
            f"note: {old} holds data of an earlier hub (tallyhub used ./tallyhub-data by default): "
            f"to go on with it, run `tallyhub serve --data-dir {old}` (or move it to {data_dir})",
            err=True,
        )
    http_address = _address_or_off(http_address)
    try:
        serve(
            settings_from(
                data_dir,
                storage_url,
                database,
                grpc_address=grpc_address,
                http_address=http_address,
                query_address=query_address,
                allow_remote_query=allow_remote_query,
                dashboard_address=_address_or_off(dashboard_address),
                queue_max_bytes=queue_max_bytes,
                retention_months=retention_months,
                request_log_days=request_log_days,
                request_log_quota=request_log_quota,
                receivers=receivers,
                queue_dir=queue_dir,
                exactly_once_across_hubs=exactly_once_across_hubs,
                app_keys_file=app_keys_file,
                alert_rules_file=alert_rules_file,
                notify=NotifySettings.from_env(),
                grpc_max_connection_age_s=grpc_max_connection_age_s,
                tls=Tls.from_files(tls_cert_file, tls_key_file),
                log_level=log_level,
            )
        )
    except (QueryAddressError, DashboardAddressError) as exc:
        raise click.UsageError(str(exc)) from exc
    except (ListenError, AppKeysError, TlsError, RuleError, ChannelError) as exc:
        raise click.ClickException(str(exc)) from None


def _address_or_off(address: str) -> str:
    return "" if address.strip().lower() in ("", "off") else address.strip()


@main.command("dashboard")
@storage_options
def dashboard_command(data_dir: Path, storage_url: str | None, database: str) -> None:
    """Print a new link that signs in to the running hub's dashboard (each link works once)."""
    hub = HubRunner.find(data_dir)
    if hub is None:
        raise click.ClickException(f"no hub is running on {data_dir}: start one with `tallyhub serve`")
    link = hub.dashboard_link()
    if not link:
        raise click.ClickException("the running hub has no dashboard (it was started with --dashboard-address off)")
    click.echo(f"dashboard: {link}")


@main.group("users")
def users_group() -> None:
    """People who may sign in to the dashboard with a password."""


@users_group.command("add")
@click.argument("name")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (its first line) instead of asking."
)
@storage_options
def users_add_command(name: str, password_stdin: bool, data_dir: Path, storage_url: str | None, database: str) -> None:
    """Add a dashboard user, or set a new password for one."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        raise click.ClickException(f"the password is too short: at least {MIN_PASSWORD} characters")
    with sql_runner(settings_from(data_dir, storage_url, database)) as runner:
        try:
            new = save_user(runner, name, hash_password(password))
        except UserError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"{'added' if new else 'changed the password of'} dashboard user {name}")


@users_group.command("list")
@storage_options
def users_list_command(data_dir: Path, storage_url: str | None, database: str) -> None:
    """The dashboard users."""
    with sql_runner(settings_from(data_dir, storage_url, database)) as runner:
        users = list_users(runner)
    if not users:
        click.echo("no dashboard users (add one with `tallyhub users add NAME`)")
    for user in users:
        click.echo(f"{user['name']:<32} added {user['created_at']}")


@users_group.command("rm")
@click.argument("name")
@storage_options
def users_rm_command(name: str, data_dir: Path, storage_url: str | None, database: str) -> None:
    """Remove a dashboard user (sessions already open last until the hub restarts or they sign out)."""
    with sql_runner(settings_from(data_dir, storage_url, database)) as runner:
        try:
            remove_user(runner, name)
        except UserError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"removed dashboard user {name}")


@main.command("status")
@storage_options
@click.option("--json", "as_json", is_flag=True, help="Print the counters as JSON.")
def status_command(data_dir: Path, storage_url: str | None, database: str, as_json: bool) -> None:
    """The running hub's counters: received, acknowledged, refused, queued, inserted, set aside."""
    hub = HubRunner.find(data_dir)
    set_aside = sorted((data_dir / "rejected").glob("*.txt"))
    if hub is None:
        raise click.ClickException(
            f"no hub is running on {data_dir} ({len(set_aside)} exports set aside in {data_dir / 'rejected'})"
        )
    status = hub.status()
    status["set aside"] = {
        "exports": len(set_aside),
        "latest": set_aside[-1].read_text().strip().replace("\n", "; ") if set_aside else "",
    }
    if as_json:
        click.echo(json.dumps(snake_case_keys(status), indent=2))
        return
    click.echo(f"hub on {data_dir}: up {status['uptime s']:.0f} s")
    for section in ("counters", "queue", "set aside"):
        click.echo(f"{section}:")
        for name, value in status[section].items():
            click.echo(f"  {name:<40} {value}")
    click.echo(f"cumulative series tracked: {status['cumulative series tracked']}")
    click.echo(f"receiver processes: {status['receiver processes']}")
    click.echo(f"converter: {status['converter']}")
    click.echo(f"processor error: {status['processor error'] or '-'}")
    alerts = status.get("alerts", {})
    if alerts:
        firing = ", ".join(alerts.get("firing", [])) or "none"
        click.echo(
            f"alerts: {alerts['rules']} rules, firing: {firing}; last evaluation {alerts.get('last evaluation') or '-'}"
        )
        if alerts.get("last error"):
            click.echo(f"alerts error: {alerts['last error']}")


def snake_case_keys(value: Any) -> Any:
    """``value`` with every dict key in snake_case, for scripts (``exports refused: UNAUTHENTICATED``
    becomes ``exports_refused_unauthenticated``); the text output keeps the words."""
    if isinstance(value, dict):
        return {
            re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_"): snake_case_keys(item) for key, item in value.items()
        }
    return value


@main.command("migrate")
@storage_options
@retention_option
def migrate_command(data_dir: Path, storage_url: str | None, database: str, retention_months: int | None) -> None:
    """Create or upgrade the schema, and set the retention (the hub also does both at start-up)."""
    settings = settings_from(data_dir, storage_url, database)
    with sql_runner(settings) as runner:
        if retention_months is not None:
            if not isinstance(runner, ClientRunner):
                raise click.ClickException("stop the hub first, or restart it with --retention-months")
            if settings.cluster:
                changed = apply_retention_on_cluster(runner.client, retention_months, settings.cluster)
            else:
                changed = apply_retention(runner.client, retention_months)
            click.echo(f"retention: {retention_months} months ({len(changed)} tables changed)")
        click.echo("schema is up to date")


@main.group("apps")
def apps_group() -> None:
    """Apps and their keys."""


@apps_group.command("create")
@click.argument("name")
@storage_options
def apps_create(name: str, data_dir: Path, storage_url: str | None, database: str) -> None:
    """Create an app and print its key (shown once: only its hash is stored)."""
    key = generate_key()
    with sql_runner(settings_from(data_dir, storage_url, database)) as runner:
        try:
            create_app(runner, name, hash_key(key))
        except AppError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(key)
    click.echo(
        f"App {name!r} created. Keep this key: it is not shown again. Clients send it as the "
        f"{APP_KEY_HEADER} header, e.g. OTEL_EXPORTER_OTLP_HEADERS={APP_KEY_HEADER}={key}",
        err=True,
    )


@apps_group.command("revoke")
@click.argument("name")
@storage_options
def apps_revoke(name: str, data_dir: Path, storage_url: str | None, database: str) -> None:
    """Revoke an app's key: a running hub refuses it within seconds. The app's data is kept;
    `tallyhub apps rotate NAME` gives it a new key."""
    with sql_runner(settings_from(data_dir, storage_url, database)) as runner:
        try:
            app = revoke_app(runner, name)
        except AppError as exc:
            raise click.ClickException(str(exc)) from exc
    if app["revoked_at"] is not None:
        click.echo(f"App {name!r} was revoked already, at {app['revoked_at']}.", err=True)
        return
    click.echo(
        f"App {name!r} revoked: a running hub refuses its key within seconds. Its data is kept; "
        f"`tallyhub apps rotate {name}` gives it a new key.",
        err=True,
    )


@apps_group.command("rotate")
@click.argument("name")
@storage_options
def apps_rotate(name: str, data_dir: Path, storage_url: str | None, database: str) -> None:
    """Give an app a new key and print it (shown once); the old key stops working within seconds.
    A revoked app works again with the new key."""
    key = generate_key()
    with sql_runner(settings_from(data_dir, storage_url, database)) as runner:
        try:
            app = rotate_key(runner, name, hash_key(key))
        except AppError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(key)
    click.echo(
        f"App {name!r} has a new key{' and is no longer revoked' if app['revoked_at'] else ''}; a running hub "
        "refuses the old one within seconds. Keep this key: it is not shown again.",
        err=True,
    )


@apps_group.command("list")
@storage_options
def apps_list(data_dir: Path, storage_url: str | None, database: str) -> None:
    """List the apps: name, created, current key since, and whether the key is revoked."""
    with sql_runner(settings_from(data_dir, storage_url, database)) as runner:
        for app in list_apps(runner):
            state = f"revoked {app['revoked_at']}" if app["revoked_at"] else "active"
            click.echo(f"{app['name']}\t{app['created_at']}\t{app['key_created_at']}\t{state}")


@main.command("sql")
@click.argument("query", required=False)
@storage_options
@click.option(
    "--format",
    "fmt",
    default=None,
    help="Any ClickHouse output format (TabSeparated, CSVWithNames, JSONEachRow, PrettyCompact, ...). "
    "Default: PrettyCompact (a table) on a terminal, TabSeparated otherwise.",
)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A query parameter, used in the query as {NAME:Type}; repeatable.",
)
@click.option("--write", is_flag=True, help="Allow statements that change data (queries are read-only by default).")
def sql_command(
    query: str | None,
    data_dir: Path,
    storage_url: str | None,
    database: str,
    fmt: str | None,
    params: tuple[str, ...],
    write: bool,
) -> None:
    """Run a SQL query and print the result. QUERY omitted or '-': read it from standard input."""
    parameters = {}
    for param in params:
        name, sep, value = param.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{param!r}: expected NAME=VALUE", param_hint="--param")
        parameters[name] = value
    if query is None or query == "-":
        if sys.stdin.isatty():
            click.echo("reading the query from standard input (end it with Ctrl-D)", err=True)
        sql = sys.stdin.read()
    else:
        sql = query
    if not sql.strip():
        raise click.UsageError("no query: pass it as an argument or on standard input")
    fmt = fmt or ("PrettyCompact" if sys.stdout.isatty() else "TabSeparated")
    with sql_runner(settings_from(data_dir, storage_url, database)) as runner:
        try:
            out = runner.raw(sql, parameters, fmt=fmt, readonly=not write)
        except Exception as exc:
            hint = "\nthis query changes data: run it again with --write" if "(READONLY)" in str(exc) else ""
            raise click.ClickException(f"{exc}{hint}") from exc
    sys.stdout.buffer.write(out)
    sys.stdout.flush()


@main.command("report")
@click.argument("app")
@storage_options
@click.option("--env", default="", help="Only this environment. Default: every environment.")
@click.option(
    "--since",
    metavar="DURATION",
    help="The last DURATION, up to now (or --to): 30m, 1h, 7d, 2w, 1d12h (units s, m, h, d, w). Default: 1h.",
)
@click.option("--from", "start", metavar="TIME", help="Start of the window, ISO 8601 (UTC without an offset).")
@click.option("--to", "end", metavar="TIME", help="End of the window (excluded), ISO 8601. Default: now.")
@click.option(
    "--apdex-threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="Apdex T: satisfied up to T, tolerating up to 4 T.",
)
@click.option("--format", "fmt", type=click.Choice(list(RENDERERS)), default="table", show_default=True)
@click.option(
    "--section",
    "sections",
    type=click.Choice(SECTIONS),
    multiple=True,
    help="Only this section (repeatable). Default: all. With --format csv and one section: plain CSV.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Rows per section, the largest first."
)
def report_command(
    app: str,
    data_dir: Path,
    storage_url: str | None,
    database: str,
    env: str,
    since: str | None,
    start: str | None,
    end: str | None,
    apdex_threshold: float,
    fmt: str,
    sections: tuple[str, ...],
    limit: int,
) -> None:
    """An app's endpoints (requests, error rates, p50/p95/p99, Apdex), top validation and server
    errors, and consumers over a time window: a table, JSON or CSV."""
    try:
        window = resolve_window(datetime.now(UTC), since, start, end)
    except WindowError as exc:
        raise click.UsageError(str(exc)) from exc
    with sql_runner(settings_from(data_dir, storage_url, database)) as runner:
        try:
            report = build_report(runner, app, window, env, apdex_threshold, limit, sections or SECTIONS)
        except UnknownApp as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            raise click.ClickException(f"the report's queries failed: {exc}") from exc
    if not report["traffic"] and fmt != "table":
        click.echo(f"no traffic for {app} in this window", err=True)
    if fmt == "table":
        click.echo(render_table(report, shutil.get_terminal_size().columns), nl=False)  # COLUMNS, else the tty's
    else:
        click.echo(RENDERERS[fmt](report), nl=False)


@main.command("logs")
@click.argument("app")
@storage_options
@click.option("--env", default="", help="Only this environment. Default: every environment.")
@click.option("--since", metavar="DURATION", help="The last DURATION (30m, 1h, 2d). Default: 1h.")
@click.option("--from", "start", metavar="TIME", help="Start of the window, ISO 8601 (UTC without an offset).")
@click.option("--to", "end", metavar="TIME", help="End of the window (excluded), ISO 8601. Default: now.")
@click.option("--status", default="", help="Codes or classes, comma-separated: 500, 5xx, 4xx,429.")
@click.option("--method", default="", help="Only this HTTP method.")
@click.option("--path", default="", help="A part of the path, or a route template (/items/{item_id}).")
@click.option("--consumer", default="", help="Only this consumer's requests (its identifier).")
@click.option("--client-ip", default="", help="Only requests from this address.")
@click.option("--min-ms", type=click.FloatRange(min=0), default=None, help="Only requests that took this long.")
@click.option("--body", default="", help="A text the request or the response body contains.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Requests, newest first.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "detail", "json"]),
    default="table",
    show_default=True,
    help="detail: headers, bodies and stack traces too; json: one object per line, every field.",
)
def logs_command(
    app: str,
    data_dir: Path,
    storage_url: str | None,
    database: str,
    env: str,
    since: str | None,
    start: str | None,
    end: str | None,
    status: str,
    method: str,
    path: str,
    consumer: str,
    client_ip: str,
    min_ms: float | None,
    body: str,
    limit: int,
    fmt: str,
) -> None:
    """An app's logged requests, newest first (apps log them with request_logging=True)."""
    try:
        window = resolve_window(datetime.now(UTC), since, start, end)
        log_filter = LogFilter(
            app,
            window.start,
            min(window.end, window.now),
            env,
            status,
            method,
            path,
            consumer,
            client_ip,
            min_ms,
            body,
            limit=limit,
        )
        status_ranges(status)
    except (WindowError, FilterError) as exc:
        raise click.UsageError(str(exc)) from exc
    with sql_runner(settings_from(data_dir, storage_url, database)) as runner:
        try:
            rows = search(runner, log_filter, detail=fmt != "table")
        except Exception as exc:
            raise click.ClickException(f"the request log's query failed: {exc}") from exc
    if fmt == "table":
        click.echo(render_logs_table(rows, shutil.get_terminal_size().columns), nl=False)
    elif fmt == "detail":
        click.echo(render_logs_detail(rows), nl=False)
    else:
        click.echo(render_logs_json(rows), nl=False)


@main.command("demo")
@click.option(
    "--data-dir",
    default="tallyhub-demo-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The demo hub's own data directory (never TALLYHUB_DATA_DIR: demo data stays out of real data).",
)
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True, help="Requests per second."
)
@click.option(
    "--export-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How often the bookshop exports (60 s in a real app): data shows up this soon.",
)
@click.option(
    "--dashboard-address",
    envvar="TALLYHUB_DASHBOARD_ADDRESS",
    default="127.0.0.1:8125",
    show_default=True,
    show_envvar=True,
    help="host:port of the demo hub's dashboard.",
)
@click.option(
    "--hub",
    "hub_endpoint",
    envvar="TALLYHUB_DEMO_HUB",
    default=None,
    show_envvar=True,
    metavar="URL",
    help="Export to a hub that runs elsewhere (OTLP gRPC, e.g. http://hub:4317) instead of starting one: "
    "the compose file's demo. The app's key: the line `demo=KEY` of --app-keys-file.",
)
@click.option(
    "--app-keys-file",
    envvar="TALLYHUB_APP_KEYS_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_envvar=True,
    help="With --hub: the hub's app-keys file (NAME=KEY lines), of which the demo uses the key of `demo`.",
)
@click.option("--log-level", default="INFO", show_default=True)
def demo_command(
    data_dir: Path,
    rate: float,
    export_interval: float,
    dashboard_address: str,
    hub_endpoint: str | None,
    app_keys_file: Path | None,
    log_level: str,
) -> None:
    """Run a hub, a small bookshop API measured by tallyhub and traffic against it, until Ctrl-C/SIGTERM."""
    missing = missing_demo_packages()
    if missing:
        raise click.ClickException(
            f"tallyhub demo needs {', '.join(missing)} (the demo extra): pip install -e '.[hub,demo]' or ./run-demo"
        )
    from tallyhub.demo.runner import DEMO_APP, run_demo, run_demo_against  # only now: FastAPI and uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if hub_endpoint is None:
        run_demo(data_dir, rate, export_interval, click.echo, _address_or_off(dashboard_address))
        return
    if app_keys_file is None:
        raise click.UsageError("--hub needs --app-keys-file (or TALLYHUB_APP_KEYS_FILE) with a line demo=KEY")
    try:
        keys = parse_app_keys(app_keys_file.read_text(encoding="utf-8"), str(app_keys_file))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot use the app keys file: {exc}") from None
    if DEMO_APP not in keys:
        raise click.ClickException(f"{app_keys_file} has no line {DEMO_APP}=KEY for the demo app")
    run_demo_against(hub_endpoint, keys[DEMO_APP], rate, export_interval, click.echo)


cli_alerts.register(main, storage_options, lambda *args: sql_runner(settings_from(*args)))
