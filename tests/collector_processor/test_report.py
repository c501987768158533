"""`tallyhub report`: the window (--since, --from/--to, alignment, level), and the report's numbers
against real chDB tables (through the CLI, pointed at the test's database), in JSON, CSV and
table form; `tallyhub sql` with stdin and parameters."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tallyhub.collector_processor.cli import main
from tallyhub.collector_processor.report import _per_minute, text_table
from tallyhub.storage.apps import create_app
from tallyhub.storage.backend import ClientRunner
from tallyhub.storage.report_queries import SECTIONS, section_sql
from tallyhub.storage.window import (
    DAY,
    HOUR,
    MINUTE,
    WindowError,
    choose_level,
    parse_duration,
    parse_instant,
    resolve_window,
)
from tallyhub.storage.writer import (
    CONSUMER_COLUMNS,
    REQUEST_COLUMNS,
    SERVER_ERROR_COLUMNS,
    VALIDATION_ERROR_COLUMNS,
    insert_rows,
)

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 26, 12, 34, 20, tzinfo=UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- the window ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", dt.timedelta(minutes=30)),
        ("1h", dt.timedelta(hours=1)),
        ("7d", dt.timedelta(days=7)),
        ("2w", dt.timedelta(days=14)),
        ("90s", dt.timedelta(seconds=90)),
        ("1d12h", dt.timedelta(days=1, hours=12)),
        (" 1h 30m ", dt.timedelta(minutes=90)),
        ("2H", dt.timedelta(hours=2)),
    ],
)
def test_durations(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "not a duration"),
        ("1", "not a duration"),
        ("1x", "not a duration"),
        ("1.5h", "not a duration"),
        ("-1h", "not a duration"),
        ("h", "not a duration"),
        ("an hour", "not a duration"),
        ("0m", "must be positive"),
        ("99999d", "too long"),
    ],
)
def test_bad_durations(text: str, error: str) -> None:
    with pytest.raises(WindowError, match=error):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", at("2026-11-01 00:00")),
        ("2026-11-01T10:15", at("2026-11-01 10:15")),
        ("2026-11-01 10:15:30", at("2026-11-01 10:15:30")),
        ("2026-11-01T10:15:00Z", at("2026-11-01 10:15")),
        ("2026-11-01T10:15:00+02:00", at("2026-11-01 08:15")),
    ],
)
def test_times_are_iso_8601_and_utc_without_an_offset(text: str, expected: dt.datetime) -> None:
    assert parse_instant(text) == expected


def test_a_bad_time_names_its_option() -> None:
    with pytest.raises(WindowError, match="--from: not an ISO 8601 time: 'yesterday'"):
        parse_instant("yesterday", "--from")


@pytest.mark.parametrize(
    ("span", "level"),
    [
        (dt.timedelta(minutes=1), MINUTE),
        (dt.timedelta(days=1), MINUTE),
        (dt.timedelta(days=1, seconds=1), HOUR),
        (dt.timedelta(days=30), HOUR),
        (dt.timedelta(days=30, seconds=1), DAY),
        (dt.timedelta(days=365), DAY),
    ],
)
def test_the_level_follows_the_windows_length(span: dt.timedelta, level) -> None:
    assert choose_level(span) is level


@pytest.mark.parametrize(
    ("since", "start", "end", "level", "minutes"),
    [
        # the last hour: whole minutes, the current one included
        (None, "2026-11-26 11:35", "2026-11-26 12:35", MINUTE, 60),
        ("30m", "2026-11-26 12:05", "2026-11-26 12:35", MINUTE, 30),
        ("90s", "2026-11-26 12:33", "2026-11-26 12:35", MINUTE, 2),
        ("1d", "2026-11-25 12:35", "2026-11-26 12:35", MINUTE, 1440),
        # beyond a day: whole hours; the elapsed minutes stop at the current minute
        ("25h", "2026-11-25 12:00", "2026-11-26 13:00", HOUR, 24 * 60 + 35),
        ("7d", "2026-11-19 13:00", "2026-11-26 13:00", HOUR, 7 * 1440 - 25),
        ("30d", "2026-10-27 13:00", "2026-11-26 13:00", HOUR, 30 * 1440 - 25),
        # beyond 30 days: whole UTC days
        ("31d", "2026-10-27 00:00", "2026-11-27 00:00", DAY, 30 * 1440 + 12 * 60 + 35),
    ],
)
def test_since(since, start: str, end: str, level, minutes: int) -> None:
    window = resolve_window(NOW, since=since)
    assert (window.start, window.end, window.level, window.minutes) == (at(start), at(end), level, minutes)


@pytest.mark.parametrize(
    ("args", "start", "end", "level"),
    [
        ({"start": "2026-11-20T10:15", "end": "2026-11-20T12:10:30"}, "2026-11-20 10:15", "2026-11-20 12:11", MINUTE),
        ({"start": "2026-11-20T10:15", "end": "2026-11-22T09:00"}, "2026-11-20 10:00", "2026-11-22 09:00", HOUR),
        ({"start": "2026-09-01", "end": "2026-11-20T09:30"}, "2026-09-01 00:00", "2026-11-21 00:00", DAY),
        ({"start": "2026-11-26T12:00:10"}, "2026-11-26 12:00", "2026-11-26 12:35", MINUTE),  # to: now
        ({"start": "2026-11-26T14:00+02:00"}, "2026-11-26 12:00", "2026-11-26 12:35", MINUTE),
        ({"since": "2h", "end": "2026-11-20T12:00"}, "2026-11-20 10:00", "2026-11-20 12:00", MINUTE),
    ],
)
def test_from_and_to_are_widened_to_whole_units(args: dict, start: str, end: str, level) -> None:
    window = resolve_window(NOW, **args)
    assert (window.start, window.end, window.level) == (at(start), at(end), level)


def test_a_past_window_counts_all_its_minutes() -> None:
    window = resolve_window(NOW, start="2026-11-20T10:00", end="2026-11-20T12:00")
    assert window.minutes == 120
    assert window.parameters() == {
        "from": int(at("2026-11-20 10:00").timestamp()),
        "to": int(at("2026-11-20 12:00").timestamp()),
    }


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"since": "1h", "start": "2026-11-20"}, "--since, or --from"),
        ({"start": "2026-11-20T12:00", "end": "2026-11-20T12:00"}, "--from must be before --to"),
        ({"start": "2026-11-21", "end": "2026-11-20"}, "--from must be before --to"),
        ({"start": "2026-11-27"}, "--from is in the future"),
        ({"start": "2000-01-01"}, "too long"),
        ({"end": "soon"}, "--to: not an ISO 8601 time"),
        ({"since": "1 hour"}, "not a duration"),
    ],
)
def test_bad_windows(args: dict, error: str) -> None:
    with pytest.raises(WindowError, match=error):
        resolve_window(NOW, **args)


def test_text_tables_align_their_columns() -> None:
    lines = text_table(("A", "NUMBER", "B"), [("x", "1", "long text"), ("longer", "1,000", "")], right=[1])
    assert lines == ["A       NUMBER  B", "x            1  long text", "longer   1,000"]


# --- the report against chDB -----------------------------------------------------------------

T0 = (dt.datetime.now(UTC) - dt.timedelta(days=3)).replace(minute=0, second=0, microsecond=0, tzinfo=None)
FROM, TO = T0.isoformat(), (T0 + dt.timedelta(hours=1)).isoformat()


def minute(offset: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=offset)


def request(offset, method, route, status, n, buckets, consumer="", app="shop", env="prod") -> list:
    values = {
        "minute": minute(offset), "app": app, "env": env, "service": "api", "instance": "i-1",
        "consumer": consumer, "method": method, "route": route, "status": status, "requests": n,
        "duration_sum": 0.1 * n, "duration_min": 0.01, "duration_max": 2.0, "duration_buckets": buckets,
        "request_size_sum": 20.0 * n, "request_size_buckets": {}, "response_size_sum": 100.0 * n,
        "response_size_buckets": {},
    }  # fmt: skip
    return [values[c] for c in REQUEST_COLUMNS]


def by_columns(columns: tuple[str, ...], **values) -> list:
    return [values[c] for c in columns]


def error_key(offset: int, consumer: str, method: str, route: str, instance: str = "i-1") -> dict:
    return {
        "minute": minute(offset), "app": "shop", "env": "prod", "service": "api", "instance": instance,
        "consumer": consumer, "method": method, "route": route,
    }  # fmt: skip


@pytest.fixture
def shop(ch, runner: ClientRunner) -> ClientRunner:
    """An hour of traffic of app `shop` (env prod), with rows just outside it, in another env and
    of another app."""
    create_app(runner, "shop", "hash-1")
    create_app(runner, "other", "hash-2")
    insert_rows(
        ch,
        "requests",
        [
            request(10, "GET", "/items/{id}", 200, 5, {-150: 3, -100: 2}, "acme"),
            request(20, "GET", "/items/{id}", 200, 1, {-50: 1}),
            request(20, "GET", "/items/{id}", 404, 2, {-200: 2}, "acme"),
            request(30, "POST", "/items", 201, 3, {-20: 3}, "old-co"),
            request(59, "POST", "/items", 500, 1, {10: 1}, "old-co"),
            request(30, "GET", "/missing", 404, 4, {-300: 4}),
            request(40, "GET", "/health", 200, 10, {-400: 10}),
            # outside the hour, in another env, of another app
            request(-1, "GET", "/items/{id}", 200, 100, {-150: 100}),
            request(60, "GET", "/items/{id}", 200, 100, {-150: 100}),
            request(10, "GET", "/items/{id}", 200, 7, {-150: 7}, env="staging"),
            request(10, "GET", "/items/{id}", 200, 50, {-150: 50}, app="other"),
        ],
        "requests",
    )
    ch.command("INSERT INTO expected_client_errors (app, method, route) VALUES ('shop', 'GET', '/missing')")
    insert_rows(
        ch,
        "validation_errors",
        [
            by_columns(
                VALIDATION_ERROR_COLUMNS, **error_key(20, "acme", "POST", "/items"),
                location="body.sku", message="Field required", type="missing", count=3,
            ),
            by_columns(
                VALIDATION_ERROR_COLUMNS, **error_key(25, "old-co", "POST", "/items", "i-2"),
                location="body.sku", message="Field required", type="missing", count=2,
            ),
            by_columns(
                VALIDATION_ERROR_COLUMNS, **error_key(30, "", "POST", "/items"),
                location="body.qty", message="Input should be a valid integer", type="int_parsing", count=1,
            ),
            by_columns(
                VALIDATION_ERROR_COLUMNS, **error_key(-1, "", "POST", "/items"),
                location="body.qty", message="Input should be a valid integer", type="int_parsing", count=50,
            ),
        ],
        "validation",
    )  # fmt: skip
    insert_rows(
        ch,
        "server_errors",
        [
            by_columns(
                SERVER_ERROR_COLUMNS, **error_key(59, "old-co", "POST", "/items"), exception_type="KeyError",
                message="'crash'", fingerprint="abcd1234abcd1234",
                stacktrace="Traceback (most recent call last):\n  ...\nKeyError: 'crash'", count=1,
            ),
            by_columns(
                SERVER_ERROR_COLUMNS, **error_key(15, "", "GET", "/items/{id}"), exception_type="ValueError",
                message="bad\nvalue", fingerprint="ffff0000ffff0000", stacktrace="Traceback ...", count=2,
            ),
        ],
        "server",
    )  # fmt: skip
    insert_rows(
        ch,
        "consumers",
        [
            by_columns(
                CONSUMER_COLUMNS, app="shop", env="prod", identifier="acme", first_seen=minute(10),
                last_seen=minute(20), latest=(minute(20), "Acme", "customers"),
            ),
            by_columns(
                CONSUMER_COLUMNS, app="shop", env="prod", identifier="old-co", first_seen=minute(-10 * 1440),
                last_seen=minute(59), latest=(minute(59), "Old Co", "partners"),
            ),
        ],
        "consumers",
    )  # fmt: skip
    return runner


@pytest.fixture
def report(chdb_url: str, database: str, tmp_path: Path):
    """Runs `tallyhub report` on the test's database; returns the CliRunner result."""

    def run(*args: str, code: int = 0):
        result = CliRunner().invoke(
            main,
            ["report", *args, "--storage-url", chdb_url, "--database", database, "--data-dir", str(tmp_path)],
            catch_exceptions=False,
        )
        assert result.exit_code == code, result.output
        return result

    return run


def quantile_ms(ch, q: float, where: str) -> float:
    """tallyhub_quantile over the raw rows of the window, in ms: what the report must show."""
    ((seconds,),) = ch.query(
        f"SELECT tallyhub_quantile({q}, sumMap(duration_buckets), sum(requests)) FROM requests "
        f"WHERE app = 'shop' AND env = 'prod' AND minute >= {{f:DateTime}} AND minute < {{t:DateTime}} AND {where}",
        parameters={"f": minute(0), "t": minute(60)},
    ).result_rows
    return seconds * 1000


def middle_ms(k: int) -> float:
    return 1000 * 2 ** ((k + 0.5) / 32)


def test_the_reports_numbers_in_json(ch, shop, report) -> None:
    out = json.loads(report("shop", "--env", "prod", "--from", FROM, "--to", TO, "--format", "json").stdout)
    assert {k: out[k] for k in ("app", "env", "from", "to", "level", "minutes", "apdex_threshold_s", "traffic")} == {
        "app": "shop",
        "env": "prod",
        "from": T0.isoformat() + "Z",
        "to": (T0 + dt.timedelta(hours=1)).isoformat() + "Z",
        "level": "minute",
        "minutes": 60,
        "apdex_threshold_s": 0.5,
        "traffic": True,
    }
    endpoints = {(e["method"], e["route"]): e for e in out["endpoints"]}
    # the most requested first; ties by route
    assert list(endpoints) == [("GET", "/health"), ("GET", "/items/{id}"), ("POST", "/items"), ("GET", "/missing")]
    items = endpoints["GET", "/items/{id}"]
    assert {k: items[k] for k in ("requests", "client_errors", "server_errors", "client_error_rate")} == {
        "requests": 8,
        "client_errors": 2,
        "server_errors": 0,
        "client_error_rate": 0.25,
    }
    assert items["requests_per_minute"] == round(8 / 60, 4)  # JSON: to what was measured
    for q, name in ((0.5, "p50_ms"), (0.75, "p75_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
        assert items[name] == round(quantile_ms(ch, q, "route = '/items/{id}'"), 3)  # to the microsecond
    # 8 values: 2 at bucket -200, 3 at -150, 2 at -100, 1 at -50
    assert items["p50_ms"] == pytest.approx(middle_ms(-150), abs=0.001)
    assert items["p75_ms"] == pytest.approx(middle_ms(-100), abs=0.001)
    assert items["p95_ms"] == items["p99_ms"] == pytest.approx(middle_ms(-50), abs=0.001)
    assert items["apdex"] == 1.0  # every value under 0.5 s
    assert items["mean_ms"] == pytest.approx(100.0)
    assert items["mean_request_bytes"] == 20.0 and items["mean_response_bytes"] == 100.0

    post = endpoints["POST", "/items"]
    assert (post["requests"], post["server_errors"], post["server_error_rate"], post["client_errors"]) == (
        4,
        1,
        0.25,
        0,
    )
    assert post["apdex"] == 0.5  # 3 at 0.65 s and 1 at 1.25 s: tolerating
    assert (
        post["p50_ms"] == round(quantile_ms(ch, 0.5, "route = '/items'"), 3) == pytest.approx(middle_ms(-20), rel=1e-4)
    )
    # a 404 that is expected for this endpoint is no client error
    assert (endpoints["GET", "/missing"]["client_errors"], endpoints["GET", "/missing"]["client_error_rate"]) == (0, 0)

    summary = out["summary"]
    assert {k: summary[k] for k in ("requests", "client_errors", "server_errors", "endpoints")} == {
        "requests": 26,
        "client_errors": 2,
        "server_errors": 1,
        "endpoints": 4,
    }
    assert summary["client_error_rate"] == round(2 / 26, 4) and summary["server_error_rate"] == round(1 / 26, 4)
    assert summary["requests_per_minute"] == round(26 / 60, 4)
    assert summary["p95_ms"] == round(quantile_ms(ch, 0.95, "1"), 3)
    assert summary["apdex"] == round((22 + 26) / 52, 4)  # POST /items: 4 tolerating, the others satisfied

    assert out["validation_errors"] == [
        {"method": "POST", "route": "/items", "location": "body.sku", "message": "Field required", "type": "missing",
         "errors": 5, "consumers": 2},
        {"method": "POST", "route": "/items", "location": "body.qty", "message": "Input should be a valid integer",
         "type": "int_parsing", "errors": 1, "consumers": 1},
    ]  # fmt: skip
    assert out["server_errors"] == [
        {"method": "GET", "route": "/items/{id}", "exception_type": "ValueError", "message": "bad\nvalue",
         "fingerprint": "ffff0000ffff0000", "errors": 2, "first_seen": minute(15).isoformat() + "Z",
         "last_seen": minute(15).isoformat() + "Z", "stacktrace": "Traceback ..."},
        {"method": "POST", "route": "/items", "exception_type": "KeyError", "message": "'crash'",
         "fingerprint": "abcd1234abcd1234", "errors": 1, "first_seen": minute(59).isoformat() + "Z",
         "last_seen": minute(59).isoformat() + "Z",
         "stacktrace": "Traceback (most recent call last):\n  ...\nKeyError: 'crash'"},
    ]  # fmt: skip
    assert out["consumers"] == [
        {"consumer": "acme", "name": "Acme", "group": "customers", "requests": 7, "errors": 2, "error_rate": 0.2857,
         "new": True, "first_seen": minute(10).isoformat() + "Z", "last_seen": minute(20).isoformat() + "Z"},
        {"consumer": "old-co", "name": "Old Co", "group": "partners", "requests": 4, "errors": 1, "error_rate": 0.25,
         "new": False, "first_seen": minute(-10 * 1440).isoformat() + "Z",
         "last_seen": minute(59).isoformat() + "Z"},
    ]  # fmt: skip
    assert out["truncated"] == []


def test_every_env_and_the_apdex_threshold(shop, report) -> None:
    out = json.loads(report("shop", "--from", FROM, "--to", TO, "--apdex-threshold", "1", "--format", "json").stdout)
    assert out["env"] is None
    endpoints = {(e["method"], e["route"]): e for e in out["endpoints"]}
    assert endpoints["GET", "/items/{id}"]["requests"] == 8 + 7  # staging too
    assert endpoints["POST", "/items"]["apdex"] == (3 + 4) / 8  # 0.65 s satisfied at T = 1 s


def test_the_levels_agree_on_whole_hours_and_days(shop, report) -> None:
    def sections(*window: str) -> tuple[str, dict]:
        out = json.loads(report("shop", "--env", "prod", *window, "--format", "json").stdout)
        # the mean duration is a sum of floats, added up in another order at each level
        varying = ("requests_per_minute", "mean_ms")
        out["endpoints"] = [{k: v for k, v in e.items() if k not in varying} for e in out["endpoints"]]
        return out["level"], {s: out[s] for s in ("endpoints", "validation_errors", "server_errors", "consumers")}

    around = ("--from", (T0 - dt.timedelta(hours=1)).isoformat(), "--to", (T0 + dt.timedelta(hours=2)).isoformat())
    level, by_minute = sections(*around)
    assert level == "minute"
    items = by_minute["endpoints"][0]
    assert (items["route"], items["requests"]) == ("/items/{id}", 208)  # with the rows around the hour
    assert by_minute["validation_errors"][0]["errors"] == 50 + 1
    assert [(c["consumer"], c["requests"]) for c in by_minute["consumers"]] == [("acme", 7), ("old-co", 4)]
    assert sections("--since", "10d") == ("hour", by_minute)
    level, by_day = sections("--since", "40d")
    assert by_day["consumers"][1]["new"]  # first seen 10 days before the hour: new in 40 days
    by_day["consumers"][1]["new"] = False
    assert (level, by_day) == ("day", by_minute)


def test_every_section_reads_every_env_without_an_env_parameter() -> None:
    for level in (MINUTE, HOUR, DAY):
        for section in SECTIONS:
            assert "{env:String}" in section_sql(section, level)
            sql = section_sql(section, level, every_env=True)
            assert "{env:String}" not in sql and "{app:String}" in sql


def test_csv_of_one_section_is_plain_csv(ch, shop, report) -> None:
    out = report("shop", "--env", "prod", "--from", FROM, "--to", TO, "--format", "csv", "--section", "endpoints")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["method"], r["route"], r["requests"]) for r in rows] == [
        ("GET", "/health", "10"),
        ("GET", "/items/{id}", "8"),
        ("POST", "/items", "4"),
        ("GET", "/missing", "4"),
    ]
    items = rows[1]
    assert float(items["p95_ms"]) == quantile_ms(ch, 0.95, "route = '/items/{id}'")
    assert float(items["client_error_rate"]) == 0.25 and float(items["apdex"]) == 1.0
    assert float(items["requests_per_minute"]) == 8 / 60


def test_csv_of_every_section(shop, report) -> None:
    out = report("shop", "--env", "prod", "--from", FROM, "--to", TO, "--format", "csv").stdout
    blocks = out.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        "# summary",
        "# endpoints",
        "# validation_errors",
        "# server_errors",
        "# consumers",
    ]
    sections = {b.splitlines()[0][2:]: list(csv.DictReader(io.StringIO(b.split("\n", 1)[1]))) for b in blocks}
    assert sections["summary"][0]["requests"] == "26"
    assert [(r["exception_type"], r["message"], r["errors"]) for r in sections["server_errors"]] == [
        ("ValueError", "bad\nvalue", "2"),
        ("KeyError", "'crash'", "1"),
    ]
    assert "stacktrace" not in sections["server_errors"][0]  # only in JSON
    assert [(r["consumer"], r["requests"], r["new"]) for r in sections["consumers"]] == [
        ("acme", "7", "true"),
        ("old-co", "4", "false"),
    ]


def test_the_table(shop, report) -> None:
    out = report("shop", "--env", "prod", "--from", FROM, "--to", TO).stdout
    lines = out.splitlines()
    end = T0 + dt.timedelta(hours=1)
    assert lines[0] == f"shop, env prod: {T0:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC (1 h, per minute)"
    summary = " ".join(lines[1 : lines.index("")])  # wrapped to the terminal's width
    assert summary.startswith("26 requests on 4 endpoints, 0.43/min, 4xx 7.7%, 5xx 3.8%, p50 ")
    assert summary.endswith("Apdex 0.92 (T = 500 ms)")
    assert [line for line in lines if len(line) > 80] == []  # not a terminal: 80 columns
    header = lines.index("Endpoints (p50, p95, p99 in ms)") + 1
    assert lines[header].split() == ["METHOD", "ROUTE", "REQUESTS", "RATE", "4XX", "5XX", "P50", "P95", "P99", "APDEX"]
    assert lines[header + 2].split()[:6] == ["GET", "/items/{id}", "8", "0.13/min", "25.0%", "0.0%"]
    assert lines[header + 2].split()[-1] == "1.00"
    # numbers are aligned right, under their header
    requests_end = lines[header].index("REQUESTS") + len("REQUESTS")
    for line in lines[header + 1 : header + 5]:
        assert line[requests_end - 1].isdigit() and line[requests_end] == " "
    assert "bad value" in out and "Traceback" not in out  # one line per error; no stack trace
    assert "Acme" in out and "returning" in out


def test_limit_per_section(shop, report) -> None:
    out = json.loads(report("shop", "--from", FROM, "--to", TO, "--limit", "2", "--format", "json").stdout)
    assert [e["route"] for e in out["endpoints"]] == ["/items/{id}", "/health"]
    assert out["truncated"] == ["endpoints"]
    table = report("shop", "--from", FROM, "--to", TO, "--limit", "2").stdout
    assert "(the first 2; --limit for more)" in table


def test_sections(shop, report) -> None:
    out = json.loads(
        report(
            "shop", "--from", FROM, "--to", TO, "--section", "consumers", "--section", "summary", "--format", "json"
        ).stdout
    )
    assert set(out) & {"summary", "endpoints", "validation_errors", "server_errors", "consumers"} == {
        "summary",
        "consumers",
    }


def test_an_empty_window_says_there_was_no_traffic(shop, report) -> None:
    out = report("shop", "--from", "2026-01-01", "--to", "2026-01-02").stdout
    assert out.splitlines()[1] == "No traffic: no requests in this window."
    assert "Endpoints" not in out
    result = report("shop", "--from", "2026-01-01", "--to", "2026-01-02", "--format", "json")
    out = json.loads(result.stdout)
    assert out["traffic"] is False and out["summary"]["requests"] == 0 and out["endpoints"] == []
    assert out["summary"]["p95_ms"] is None and out["summary"]["client_error_rate"] is None
    assert "no traffic for shop" in result.stderr
    csv_out = report("shop", "--from", "2026-01-01", "--to", "2026-01-02", "--format", "csv", "--section", "endpoints")
    assert csv_out.stdout.splitlines() == [",".join(("method", "route", "requests", "requests_per_minute",
        "client_errors", "server_errors", "client_error_rate", "server_error_rate", "p50_ms", "p75_ms", "p95_ms",
        "p99_ms", "apdex", "mean_ms", "mean_request_bytes", "mean_response_bytes"))]  # fmt: skip


def test_an_unknown_app_lists_the_apps(shop, report) -> None:
    result = report("shap", code=1)
    assert "unknown app 'shap'; apps: other, shop" in result.output


def test_a_bad_window_is_a_usage_error(report, ch) -> None:
    result = report("shop", "--since", "1 hour", code=2)
    assert "not a duration: '1 hour'" in result.output
    result = report("shop", "--since", "1h", "--from", "2026-01-01", code=2)
    assert "--since, or --from" in result.output


# --- tallyhub sql ----------------------------------------------------------------------------


@pytest.fixture
def sql(chdb_url: str, database: str, tmp_path: Path):
    def run(*args: str, stdin: str | None = None, code: int = 0):
        result = CliRunner().invoke(
            main,
            ["sql", *args, "--storage-url", chdb_url, "--database", database, "--data-dir", str(tmp_path)],
            input=stdin,
            catch_exceptions=False,
        )
        assert result.exit_code == code, result.output
        return result.output

    return run


def test_sql_reads_the_query_from_an_argument_or_stdin(shop, sql) -> None:
    query = "SELECT route, sum(requests) FROM requests WHERE app = 'other' GROUP BY route"
    assert sql(query) == "/items/{id}\t50\n"
    assert sql(stdin=query) == "/items/{id}\t50\n"
    assert sql("-", stdin=query) == "/items/{id}\t50\n"
    assert sql("--format", "JSONEachRow", query) == '{"route":"\\/items\\/{id}","sum(requests)":50}\n'
    assert "no query" in sql(stdin="  \n", code=2)


def test_sql_takes_parameters(shop, sql) -> None:
    out = sql(
        "--param",
        "app=shop",
        "-p",
        f"from={T0:%Y-%m-%d %H:%M:%S}",
        "SELECT sum(requests) FROM requests WHERE app = {app:String} AND minute >= toDateTime({from:String}, 'UTC')",
    )
    assert out == f"{26 + 100 + 7}\n"  # the hour (prod), the minute after it, staging
    assert "expected NAME=VALUE" in sql("--param", "app", "SELECT 1", code=2)


def test_sql_is_read_only_unless_told(shop, sql) -> None:
    assert "readonly" in sql("INSERT INTO expected_client_errors (app, method, route) VALUES ('a', 'b', 'c')", code=1)


def test_the_table_fits_the_terminal_it_is_printed_in(ch, runner: ClientRunner, report, chdb_url: str) -> None:
    """Rows never wrap into noise: at the terminal's width (COLUMNS, as a real terminal sets it)
    long routes are cut with an ellipsis, the summary is wrapped, and every line fits."""
    create_app(runner, "wide", "hash-w")
    long_route = "/v1/organisations/{organisation_id}/projects/{project_id}/environments/{environment_id}/deploys"
    insert_rows(
        ch,
        "requests",
        [
            request(10, "GET", long_route, 200, 5, {-150: 5}, app="wide"),
            request(12, "GET", "/", 200, 1, {}, app="wide"),
        ],
        "wide-rows",
    )
    for columns in (80, 100, 220):
        with pytest.MonkeyPatch.context() as env:
            env.setenv("COLUMNS", str(columns))
            lines = report("wide", "--from", FROM, "--to", TO).output.splitlines()
        assert [line for line in lines if len(line) > columns] == []
        row = next(line for line in lines if "/v1/" in line)
        route = row.split()[1]
        if columns < 220:
            assert route.endswith("…") and long_route.startswith(route[:-1])
        else:
            assert route == long_route  # room enough: nothing cut


@pytest.mark.parametrize(
    ("per_minute", "shown"),
    [(120.0, "120.0/min"), (2.5, "2.50/min"), (0.2, "0.20/min"), (0.01, "0.60/h"), (0.0002, "0.29/d"), (0, "0/min")],
)
def test_rates_are_shown_in_a_unit_that_shows_them(per_minute: float, shown: str) -> None:
    """An API with traffic never shows 0.00 requests per minute."""
    assert _per_minute(per_minute) == shown
