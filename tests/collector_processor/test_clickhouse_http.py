"""ClickHouse's HTTP conventions, as the query endpoint reads and answers them."""

from __future__ import annotations

import base64
import json

from tallyhub.collector_processor.clickhouse_http import Credentials, credentials, error, query_of, response_headers


def test_credentials_come_from_clickhouses_three_places() -> None:
    basic = "Basic " + base64.b64encode(b"alice:s:e:cret").decode()
    assert credentials({"x-clickhouse-user": "alice", "x-clickhouse-key": "k"}, {}) == Credentials("alice", "k")
    assert credentials({"authorization": basic}, {}) == Credentials("alice", "s:e:cret")
    assert credentials({}, {"user": "alice", "password": "p"}) == Credentials("alice", "p")
    assert credentials({"authorization": "Basic !!"}, {}) is None
    assert credentials({"authorization": "Bearer x"}, {}) is None
    assert credentials({}, {}) is None


def test_the_query_is_the_urls_then_the_body_and_its_format_clause_wins() -> None:
    assert query_of({}, b"SELECT 1") == ("SELECT 1", "TabSeparated")
    assert query_of({"default_format": "JSON"}, b"SELECT 1") == ("SELECT 1", "JSON")
    assert query_of({"query": "SELECT 1\nFORMAT JSONEachRow"}, b"") == (
        "SELECT 1",
        "JSONEachRow",
    )
    assert query_of({"query": "INSERT INTO t FORMAT CSV"}, b"1,2") == ("INSERT INTO t FORMAT CSV\n1,2", "TabSeparated")
    assert query_of({}, b"SELECT 2 format Native;") == ("SELECT 2", "Native")


def test_answers_and_errors_carry_clickhouses_headers() -> None:
    headers = response_headers("JSONEachRow", "q-1")
    assert headers["x-clickhouse-query-id"] == "q-1" and headers["x-clickhouse-format"] == "JSONEachRow"
    assert json.loads(headers["x-clickhouse-summary"])["read_rows"] == "0"
    assert response_headers("Native", None)["x-clickhouse-query-id"]  # one made up
    body, headers = error("some wrapper: Code: 62. DB::Exception: Syntax error (SYNTAX_ERROR)")
    assert (body, headers) == (
        "Code: 62. DB::Exception: Syntax error (SYNTAX_ERROR)\n",
        {"x-clickhouse-exception-code": "62"},
    )
    assert error("read-only: INSERT refused", 164) == (
        "Code: 164. DB::Exception: read-only: INSERT refused\n",
        {"x-clickhouse-exception-code": "164"},
    )
