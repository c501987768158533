"""Uptime health checks (`alerts/health_checks.py`) against a real HTTP app on 127.0.0.1 that answers,
goes down (503, then a closed port), comes back, fails once, hangs, redirects; the results recorded
in real chDB and read back as uptime. Rounds are driven with ``run_once`` and a clock set by the test."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tallyhub.alerts.health_checks import HealthChecker, HealthTarget, check
from tallyhub.storage.uptime_queries import CheckResult, latest_checks, record_checks, uptime

UTC = dt.UTC


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client gone before its answer (a check that timed out) is what these tests do."""


class App:
    """An HTTP app on 127.0.0.1 (on ``port``, or a free one) whose answers the test sets."""

    def __init__(self, port: int = 0) -> None:
        self.status = 200
        self.hits: Counter[str] = Counter()
        self.answered: list[str] = []
        self.fast_answered = threading.Event()
        self.release = threading.Event()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path
                app.hits[path] += 1
                if path == "/health":
                    self.answer(app.status)
                elif path == "/flaky":
                    self.answer(503 if app.hits[path] == 1 else 200)
                elif path == "/hang":
                    app.release.wait(10)
                    self.answer(200)
                elif path == "/slow":  # answers only once /fast has been answered
                    self.answer(200 if app.fast_answered.wait(10) else 500)
                elif path == "/fast":
                    self.answer(200)
                    app.fast_answered.set()
                elif path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", "/health" if path == "/redirect" else "/missing")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.answer(404)

            def answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                self.wfile.flush()
                app.answered.append(self.path)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def app() -> Iterator[App]:
    app = App()
    yield app
    app.close()


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def target(app: App, path: str) -> HealthTarget:
    return HealthTarget("shop", "prod", app.url(path))


def test_an_app_that_goes_down_and_comes_back_is_recorded_as_an_incident(app: App, runner) -> None:
    t0 = dt.datetime.now(UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=10)
    clock = Clock(t0)
    checker = HealthChecker(
        lambda: [target(app, "/health")],
        lambda results: record_checks(runner, results),
        retry_delay_s=0.01,
        clock=clock,
    )

    def round_at(minute: int) -> CheckResult:
        clock.now = t0 + dt.timedelta(minutes=minute)
        (result,) = checker.run_once()
        return result

    up = round_at(0)
    assert (up.ok, up.status, up.attempts, up.error, up.time) == (True, 200, 1, "", t0)
    app.status = 503
    down = round_at(1)
    assert (down.ok, down.status, down.attempts, down.error) == (False, 503, 2, "HTTP 503")
    app.close()
    refused = round_at(2)
    assert (refused.ok, refused.status, refused.attempts, refused.error) == (False, 0, 2, "connection refused")
    back = App(port=app.port)
    try:
        assert round_at(3).ok
    finally:
        back.close()

    day = uptime(runner, "shop", t0 + dt.timedelta(minutes=3))["24h"]
    start, end = int(t0.timestamp()) + 60, int(t0.timestamp()) + 180
    assert day == {
        "checks": 4,
        "failed": 2,
        "uptime": 0.5,
        "incidents": [
            {"url": app.url("/health"), "env": "prod", "start": start, "end": end, "checks": 2, "error": "HTTP 503"}
        ],
    }
    latest = latest_checks(runner, ["shop"])[("shop", "prod", app.url("/health"))]
    assert latest.ok and latest.time == t0 + dt.timedelta(minutes=3)


def test_a_failure_is_retried_once(app: App) -> None:
    result = check(target(app, "/flaky"), retry_delay_s=0.01)
    assert (result.ok, result.status, result.attempts, result.error) == (True, 200, 2, "")
    assert app.hits["/flaky"] == 2
    missing = check(target(app, "/nothing-here"), retry_delay_s=0.01)
    assert (missing.ok, missing.status, missing.attempts, missing.error) == (False, 404, 2, "HTTP 404")
    assert app.hits["/nothing-here"] == 2


def test_an_answer_later_than_the_timeout_fails(app: App) -> None:
    result = check(target(app, "/hang"), timeout_s=0.3, retry_delay_s=0.01)
    assert (result.ok, result.status, result.attempts, result.error) == (False, 0, 2, "timed out after 0.3 s")
    assert result.duration_ms >= 300  # the last attempt's
    assert app.hits["/hang"] == 2


def test_redirects_are_followed_and_the_last_answer_counts(app: App) -> None:
    assert check(target(app, "/redirect"), retry_delay_s=0.01).status == 200
    moved = check(target(app, "/redirect-to-nowhere"), retry_delay_s=0.01)
    assert (moved.ok, moved.status, moved.error) == (False, 404, "HTTP 404")


def test_tls_to_a_plain_http_port_is_a_tls_error(app: App) -> None:
    result = check(HealthTarget("shop", "", f"https://127.0.0.1:{app.port}/health"), retry_delay_s=0.01)
    assert not result.ok and result.status == 0 and result.error.startswith("TLS error: "), result.error


def test_a_slow_target_does_not_delay_the_others(app: App) -> None:
    """/slow answers only after /fast has been answered: checked one after the other, it would time
    out; and /hang times out (twice) without holding the others back."""
    rounds: list[list[CheckResult]] = []
    targets = [target(app, "/hang"), target(app, "/slow"), target(app, "/fast")]
    checker = HealthChecker(lambda: targets, rounds.append, timeout_s=0.5, retry_delay_s=0.01)
    results = checker.run_once()
    assert rounds == [results]  # recorded once, all together
    assert [(r.url, r.ok, r.attempts) for r in results] == [
        (targets[0].url, False, 2),
        (targets[1].url, True, 1),
        (targets[2].url, True, 1),
    ]
    assert app.answered[:2] == ["/fast", "/slow"]


def test_failing_targets_or_record_are_logged_and_the_checker_goes_on(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tallyhub.alerts")
    calls = iter([RuntimeError("no config"), [target(app, "/health")]])

    def targets() -> list[HealthTarget]:
        answer = next(calls)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def record(results: list[CheckResult]) -> None:
        raise RuntimeError("storage is away")

    checker = HealthChecker(targets, record)
    assert checker.run_once() == []
    assert "cannot read the targets" in caplog.text
    (result,) = checker.run_once()
    assert result.ok and "cannot record 1 results" in caplog.text


def test_the_thread_runs_rounds_until_stopped(app: App) -> None:
    rounds: list[list[CheckResult]] = []
    two = threading.Event()

    def record(results: list[CheckResult]) -> None:
        rounds.append(results)
        if len(rounds) == 2:
            two.set()

    checker = HealthChecker(lambda: [target(app, "/health")], record, interval_s=0.05)
    checker.start()
    assert two.wait(10)
    checker.stop()
    done = len(rounds)
    assert not any(t.name == "tallyhub-health-checks" for t in threading.enumerate())
    assert len(rounds) == done and all(r[0].ok for r in rounds)


def test_rounds_start_on_whole_minutes() -> None:
    clock = Clock(dt.datetime(2026, 1, 1, 12, 0, 30, 500000, tzinfo=UTC))
    assert HealthChecker(list, print, clock=clock)._until_next_round() == 29.5
    assert HealthChecker(list, print, interval_s=300, clock=clock)._until_next_round() == 269.5
