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
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from tallyhub.storage.cluster import SYNC_INSERT_SETTING, render_for_cluster

DEFAULT_DATABASE = "tallyhub"
PASSWORD_ENV = "TALLYHUB_CLICKHOUSE_PASSWORD"

_PLAIN_SCHEMES = ("clickhouse", "http")
_TLS_SCHEMES = ("clickhouses", "https")
_BOOLEAN_OPTIONS = ("secure", "verify", "compress")
_TEXT_OPTIONS = ("ca_cert", "client_cert", "client_cert_key", "server_host_name")
_NUMBER_OPTIONS = ("connect_timeout", "send_receive_timeout")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class StorageUrlError(ValueError):
    """A storage URL that tallyhub cannot use (its message never holds the password)."""


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
        "password": unquote(parts.password or "") or environ.get(PASSWORD_ENV, ""),
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
) -> Client:
    """A client on ``database`` (or the URL's database); ``create`` makes the database first if it
    does not exist (``ON CLUSTER`` with ``cluster``). With a cluster, inserts into the Distributed
    tables reach the shards before they return (with their deduplication tokens)."""
    kwargs = connection_settings(url, environ)
    database = kwargs.pop("database", None) or database
    if cluster:
        if is_embedded(url):
            raise StorageUrlError("cluster mode needs a ClickHouse server URL, not embedded chDB")
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


class ClientRunner:
    """Runs SQL on a clickhouse-connect client and returns ClickHouse's own rendering of the result."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def raw(
        self, sql: str, parameters: Mapping[str, Any] | None = None, fmt: str = "TabSeparated", readonly: bool = False
    ) -> bytes:
        settings = {"readonly": 1} if readonly else None
        return self.client.raw_query(sql, parameters=dict(parameters or {}), fmt=fmt, settings=settings)
