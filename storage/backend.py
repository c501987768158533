"""Opening ClickHouse: embedded chDB (`chdb:///path`) or a server (`clickhouse://`, `https://`, …).

Both go through clickhouse-connect, so the SQL, the migrations and the inserts are the same.

Server URLs: ``clickhouse://user:password@host:8123/database`` or ``http://…`` (plain HTTP, port
8123 by default), ``clickhouses://…`` or ``https://…`` (TLS, port 8443 by default). The password
comes from ``TALLYHUB_CLICKHOUSE_PASSWORD`` when the URL has none; the database in the URL, when
there is one, wins over ``--database``. Query options: ``secure`` (TLS on ``clickhouse://``),
``verify`` (check the server's certificate, default true), ``ca_cert`` (a PEM file, or
``certifi``), ``client_cert``, ``client_cert_key``, ``server_host_name``, ``connect_timeout``,
``send_receive_timeout``, ``compress``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from tallyhub.storage.cluster import SYNC_INSERT_SETTING, render_for_cluster

DEFAULT_DATABASE = "tallyhub"
PASSWORD_ENV = "TALLYHUB_CLICKHOUSE_PASSWORD"
PASSWORD_FILE_ENV = "TALLYHUB_CLICKHOUSE_PASSWORD_FILE"
"""A file holding the password (a Docker or Kubernetes secret): never on a command line."""

_PLAIN_SCHEMES = ("clickhouse", "http")
_TLS_SCHEMES = ("clickhouses", "https")
_BOOLEAN_OPTIONS = ("secure", "verify", "compress")
_TEXT_OPTIONS = ("ca_cert", "client_cert", "client_cert_key", "server_host_name")
_NUMBER_OPTIONS = ("connect_timeout", "send_receive_timeout")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class StorageUrlError(ValueError):
    """A storage URL that tallyhub cannot use (its message never holds the password)."""


def _password(environ: Mapping[str, str]) -> str:
    """The password of a URL without one: ``TALLYHUB_CLICKHOUSE_PASSWORD``, else the contents of the
    file ``TALLYHUB_CLICKHOUSE_PASSWORD_FILE`` names (one trailing newline dropped)."""
    if environ.get(PASSWORD_ENV):
        return environ[PASSWORD_ENV]
    path = environ.get(PASSWORD_FILE_ENV)
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    except OSError as exc:
        raise StorageUrlError(
            f"cannot read the ClickHouse password from {PASSWORD_FILE_ENV}={path}: {exc.strerror}"
        ) from None


class StorageConnectionError(ConnectionError):
    """ClickHouse could not be reached or refused the connection (the message never holds the password)."""


def is_embedded(url: str) -> bool:
    return urlsplit(url).scheme == "chdb"


def connection_settings(url: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``clickhouse_connect.get_client`` for a storage URL.

    chDB URLs are passed on as they are (``dsn``). For a server: ``interface`` (http or https),
    ``host``, ``port``, ``username`` (when the URL has one), ``password``, ``secure``, and
    ``database`` when the URL's path names one, plus the query options.
    """
    environ = os.environ if environ is None else environ
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "chdb":
        return {"dsn": url}
    if scheme not in _PLAIN_SCHEMES + _TLS_SCHEMES:
        raise StorageUrlError(
            f"unsupported storage URL scheme {parts.scheme!r} in {redact_url(url)}: "
            "use chdb:///path, clickhouse://, clickhouses://, http:// or https://"
        )
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        raise StorageUrlError(f"invalid port in {redact_url(url)}") from None
    if not host:
        raise StorageUrlError(f"no host in {redact_url(url)}")
    options = _options(parts.query, url)
    secure = scheme in _TLS_SCHEMES
    if "secure" in options:
        wanted = options.pop("secure")
        if secure and not wanted:
            raise StorageUrlError(f"secure=false contradicts {scheme}:// in {redact_url(url)}")
        secure = wanted
    settings: dict[str, Any] = {
        "interface": "https" if secure else "http",
        "host": host,
        "port": port or (8443 if secure else 8123),
        "password": unquote(parts.password or "") or _password(environ),
        "secure": secure,
    }
    if parts.username:
        settings["username"] = unquote(parts.username)
    path = unquote(parts.path).strip("/")
    if "/" in path:
        raise StorageUrlError(f"the URL's path is a database name, not {path!r}: {redact_url(url)}")
    if path:
        settings["database"] = path
    settings.update(options)
    return settings


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: the form to log or show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def open_client(
    url: str,
    database: str = DEFAULT_DATABASE,
    create: bool = False,
    cluster: str | None = None,
    environ: Mapping[str, str] | None = None,
    readonly: bool = False,
) -> Client:
    """A client on ``database`` (or the URL's database); ``create`` makes the database first if it
    does not exist (``ON CLUSTER`` with ``cluster``). With a cluster, inserts into the Distributed
    tables reach the shards before they return (with their deduplication tokens).

    ``readonly``: a client with ClickHouse's ``readonly = 1`` for all its life (checked before it is
    returned), for ``ClientRunner``'s read-only queries. Read-only must be a client's, never one
    query's: clickhouse-connect's chDB backend applies a query's settings to its session with ``SET``
    and restores them with ``SET`` afterwards, which ``readonly = 1`` refuses, so a client that ran
    one read-only query would refuse every write after it."""
    if readonly and create:
        raise ValueError("a read-only client cannot create the database")
    kwargs = connection_settings(url, environ)
    database = kwargs.pop("database", None) or database
    if cluster and is_embedded(url):
        raise StorageUrlError("cluster mode needs a ClickHouse server URL, not embedded chDB")
    if readonly:
        client = _connect(url, {**kwargs, "settings": {"readonly": 1}}, database=database)
        if str(client.command("SELECT getSetting('readonly')")) != "1":
            client.close()
            raise StorageConnectionError(f"{redact_url(url)} did not take readonly = 1: no read-only client")
        return client
    if cluster:
        kwargs["settings"] = {SYNC_INSERT_SETTING: 1}
    if not create:
        return _connect(url, kwargs, database=database)
    bootstrap = _connect(url, kwargs)
    try:
        create_database = f"CREATE DATABASE IF NOT EXISTS `{database}`"
        for sql in render_for_cluster(create_database, cluster, database) if cluster else [create_database]:
            bootstrap.command(sql)
        # Opened before the bootstrap client closes: closing chDB's last handle stops the
        # embedded engine, and starting it again in the same process can fail on its own lock.
        return _connect(url, kwargs, database=database)
    finally:
        bootstrap.close()


def _connect(url: str, kwargs: dict[str, Any], **extra: Any) -> Client:
    if is_embedded(url):
        return clickhouse_connect.get_client(**kwargs, **extra)
    try:
        return clickhouse_connect.get_client(**kwargs, **extra)
    except Exception as exc:
        message = str(exc)
        for secret in {kwargs.get("password", ""), _url_password(url)} - {""}:
            message = message.replace(secret, "***")
        # Not chained: the original exception (and its traceback's locals) may hold the password.
        raise StorageConnectionError(f"cannot connect to ClickHouse at {redact_url(url)}: {message}") from None


def _url_password(url: str) -> str:
    return unquote(urlsplit(url).password or "")


def _options(query: str, url: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in _BOOLEAN_OPTIONS:
            if value.lower() not in _TRUE + _FALSE:
                raise StorageUrlError(f"{name}={value!r}: expected true or false, in {redact_url(url)}")
            options[name] = value.lower() in _TRUE
        elif name in _TEXT_OPTIONS and value:
            options[name] = value
        elif name in _NUMBER_OPTIONS:
            try:
                options[name] = float(value)
            except ValueError:
                raise StorageUrlError(f"{name}={value!r}: expected seconds, in {redact_url(url)}") from None
        else:
            known = ", ".join(_BOOLEAN_OPTIONS + _TEXT_OPTIONS + _NUMBER_OPTIONS)
            raise StorageUrlError(f"unknown storage URL option {name!r} (known: {known}) in {redact_url(url)}")
    return options


class ReadOnlyQueryError(ValueError):
    """A query that the read-only path refuses before running it."""


class ClientRunner:
    """Runs SQL and returns ClickHouse's own rendering of the result: writes on ``client``, read-only
    queries on ``reader`` (``open_client(readonly=True)``; see there why read-only is a client's)."""

    def __init__(self, client: Client, reader: Client | None = None) -> None:
        self.client = client
        self.reader = reader

    def raw(
        self, sql: str, parameters: Mapping[str, Any] | None = None, fmt: str = "TabSeparated", readonly: bool = False
    ) -> bytes:
        if not readonly:
            return self.client.raw_query(sql, parameters=dict(parameters or {}), fmt=output_format(sql, fmt))
        if self.reader is None:
            raise ValueError("this runner has no read-only client: pass one opened with open_client(readonly=True)")
        return read_only_query(self.reader, sql, parameters, fmt)


class TrustedRunner(ClientRunner):
    """A ``ClientRunner`` whose read-only queries skip ``check_read_only``: for tallyhub's own SQL
    only (the dashboard's, `storage/dashboard_queries.py`), never for SQL a user wrote.

    The check guards embedded chDB against a user's query (``INTO OUTFILE``, ``file()``); tallyhub's
    fixed SQL, with user values only as query parameters, has none of that, and on chDB the check
    costs two more parser queries per query (``formatQuery`` and ``EXPLAIN AST``: ~5-15 ms each on 2
    cores), which doubled the time of the dashboard's small reads. The reads still run on the
    read-only client, with ``readonly = 1``."""

    def raw(
        self, sql: str, parameters: Mapping[str, Any] | None = None, fmt: str = "TabSeparated", readonly: bool = False
    ) -> bytes:
        if not readonly or self.reader is None:
            return super().raw(sql, parameters, fmt, readonly)
        return self.reader.raw_query(sql, parameters=dict(parameters or {}), fmt=fmt)


class SessionlessRunner:
    """Runs each query on a client of its own, opened for it and closed after it (read-only ones on a
    read-only client): like ClickHouse's HTTP interface without a session, nothing a query leaves in
    its session (``readonly`` above all) reaches the next one, and queries do not wait for each other.
    The hub's query endpoint runs on it (opening a chDB client takes ~8 ms)."""

    def __init__(self, url: str, database: str = DEFAULT_DATABASE, cluster: str | None = None) -> None:
        self.url = url
        self.database = database
        self.cluster = cluster

    def raw(
        self, sql: str, parameters: Mapping[str, Any] | None = None, fmt: str = "TabSeparated", readonly: bool = False
    ) -> bytes:
        client = open_client(self.url, self.database, cluster=self.cluster, readonly=readonly)
        try:
            if readonly:
                return read_only_query(client, sql, parameters, fmt)
            return client.raw_query(sql, parameters=dict(parameters or {}), fmt=output_format(sql, fmt))
        finally:
            client.close()


_INSERT = re.compile(r"(\s|--[^\n]*\n|/\*.*?\*/)*INSERT\b", re.IGNORECASE | re.DOTALL)


def output_format(sql: str, fmt: str) -> str | None:
    """The ``FORMAT`` to append to ``sql``: none for an ``INSERT`` (its data, ``VALUES`` or
    ``SELECT``, follows the statement, where an appended ``FORMAT`` would be read as the data's)."""
    return None if _INSERT.match(sql) else fmt


def read_only_query(reader: Client, sql: str, parameters: Mapping[str, Any] | None, fmt: str) -> bytes:
    """``sql`` on ``reader``, a read-only client, after ``check_read_only`` on embedded ClickHouse.

    A server needs no check: it refuses ``INTO OUTFILE`` over HTTP, and confines ``file()`` to its
    ``user_files_path``."""
    if is_embedded(reader.uri):
        check_read_only(reader, sql, parameters)
    return reader.raw_query(sql, parameters=dict(parameters or {}), fmt=fmt)


def check_read_only(reader: Client, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
    """Refuse what ``readonly = 1`` lets through in embedded ClickHouse: chDB runs queries as
    clickhouse-local does, in the hub's process and as its user. ClickHouse's own parser finds it:

    - ``formatQuery`` (the query as a parameter: parsed, never run) refuses more than one statement,
      which chDB would run one after the other, and renders the statement canonically, every
      ``INTO OUTFILE`` (which chDB writes, on the hub's machine) at the start of a line;
    - ``EXPLAIN AST`` of that one statement (parsed, never run) gives its functions: ``file``, which
      reads any file the hub can read, and table functions that ClickHouse allows no read-only user
      (``allow_readonly`` in ``system.table_functions``: file, url, s3, remote, mysql, …), which
      ``readonly = 1`` refuses in a SELECT but not in ``DESCRIBE file(…)`` / ``DESCRIBE url(…)`` (a
      file's first line as column names, a request to any address).
    """
    try:
        formatted, not_readonly = reader.query(
            "SELECT formatQuery({sql:String}), "
            "(SELECT groupArray(lower(name)) FROM system.table_functions WHERE NOT allow_readonly)",
            parameters={"sql": sql},
        ).result_rows[0]
    except DatabaseError as exc:  # the parser's message, without the query that carried it
        raise ReadOnlyQueryError(
            re.sub(r": In scope SELECT formatQuery\(.*\)\. (\(\w+\))$", r" \1", str(exc), flags=re.DOTALL)
        ) from None
    if re.search(r"^\s*INTO OUTFILE\b", formatted, re.MULTILINE):
        raise ReadOnlyQueryError(
            "INTO OUTFILE is refused in read-only queries: embedded ClickHouse would write the file itself, "
            "on the hub's machine and as the hub's user. Redirect the output instead: tallyhub sql '…' > FILE"
        )
    try:
        # with the query's parameters: EXPLAIN AST substitutes some (a parameterized view's arguments)
        tree = [
            row[0] for row in reader.query(f"EXPLAIN AST {formatted}", parameters=dict(parameters or {})).result_rows
        ]
    except DatabaseError as exc:
        if getattr(exc, "name", None) != "SYNTAX_ERROR":
            raise  # e.g. READONLY for a SETTINGS clause: what the query itself would get
        raise ReadOnlyQueryError(
            f"this statement cannot be checked, so it is refused in read-only queries: {exc}"
        ) from None
    for above, line in zip(["", *tree], tree, strict=False):
        function = re.match(r"( *)Function (\S+)", line)
        if function is None:
            continue
        indent, name = function.groups()
        # EXPLAIN AST: a node a line, a space of indent a level; a table function is the first child of
        # its TableExpression. (A line break in a quoted identifier can make a line up: only refusals.)
        parent = re.match(r"( *)TableExpression\b", above)
        if parent is not None and len(parent[1]) == len(indent) - 1 and name.lower() in not_readonly:
            raise ReadOnlyQueryError(
                f"table function {name}() is refused in read-only queries: it reaches files, URLs or other "
                "servers with the hub's rights (ClickHouse allows it to no read-only user)"
            )
        if name.lower() == "file":
            raise ReadOnlyQueryError(
                f"{name}() is refused in read-only queries: it reads files on the hub's machine as the hub's user"
            )
