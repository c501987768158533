"""Uptime health checks: the hub calls each app's configured URL every minute and records the result.

A check is one ``GET``; a 2xx answer within the timeout is healthy. Redirects are followed as a
browser follows them (urllib's, at most 10): the answer that counts is the last one, so a URL that
redirects to a login page or a moved health endpoint is judged by where it leads. A failure
(another status, a timeout, a refused connection, a TLS or DNS error) is tried once more after a
short delay before the check counts as failed, so that one lost packet or a restart in progress
is not an incident. Proxies come from the environment, as for any urllib client (``HTTPS_PROXY``,
``NO_PROXY``…). The result (`storage.uptime_queries.CheckResult`) says how many attempts were
made and what the last one got.

``HealthChecker`` runs the checks of every target concurrently, at the start of every interval,
and hands each round's results to ``record`` at once (one INSERT).
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from tallyhub.storage.uptime_queries import CheckResult

logger = logging.getLogger("tallyhub.alerts")

USER_AGENT = "tallyhub-health-check/1"


@dataclass(frozen=True)
class HealthTarget:
    app: str
    env: str
    url: str


def utc_now() -> datetime:
    return datetime.now(UTC)


def check(
    target: HealthTarget,
    *,
    timeout_s: float = 5.0,
    retry_delay_s: float = 2.0,
    now: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], object] = time.sleep,
) -> CheckResult:
    """Check ``target`` once, and once more after ``retry_delay_s`` if that failed. The result's
    ``time`` is when the check began (``now()``); ``status``, ``duration_ms`` and ``error`` are the
    last attempt's. Never raises: whatever goes wrong is the result's ``error``."""
    started = now()
    attempts = 0
    while True:
        attempts += 1
        status, duration_ms, error = _attempt(target.url, timeout_s)
        if not error or attempts == 2:
            break
        sleep(retry_delay_s)
    return CheckResult(
        time=started,
        app=target.app,
        env=target.env,
        url=target.url,
        ok=not error,
        status=status,
        duration_ms=duration_ms,
        attempts=attempts,
        error=error,
    )


def _attempt(url: str, timeout_s: float) -> tuple[int, float, str]:
    """One GET: (status, milliseconds, error), error empty for a 2xx answer within ``timeout_s``.

    urllib's timeout bounds each socket operation, not the whole request (nor the DNS lookup): an
    answer that comes later than ``timeout_s`` in all is a timeout too. The body is not read."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Cache-Control": "no-cache"})
    start = time.perf_counter()
    status, error = 0, ""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # every status but 2xx, after the redirects
        status, error = exc.code, f"HTTP {exc.code}"
        exc.close()
    except Exception as exc:  # what a URL can do to us is open-ended: each is a failed attempt
        error = _describe(exc, timeout_s)
    duration_ms = (time.perf_counter() - start) * 1000
    if not error and duration_ms > timeout_s * 1000:
        error = f"timed out after {timeout_s:g} s (HTTP {status} after {duration_ms / 1000:.1f} s)"
    return status, duration_ms, error


def _describe(exc: BaseException, timeout_s: float) -> str:
    """What went wrong, in words: ``timed out after 5 s``, ``connection refused``, ``TLS error: …``."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, TimeoutError):  # socket.timeout too
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS error: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed: {exc.strerror or exc}"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class HealthChecker:
    """Checks ``targets()`` every ``interval_s`` on a thread of its own, and passes each round's
    results to ``record`` (once per round).

    Rounds start at multiples of ``interval_s`` since the epoch on ``clock`` (whole minutes for 60 s),
    the first at the next one after ``start()``; a round that takes longer than an interval skips
    the starts it missed. A failing ``targets()`` or ``record`` is logged, and the next round comes."""

    def __init__(
        self,
        targets: Callable[[], Sequence[HealthTarget]],
        record: Callable[[list[CheckResult]], None],
        *,
        interval_s: float = 60.0,
        timeout_s: float = 5.0,
        retry_delay_s: float = 2.0,
        workers: int = 8,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if interval_s <= 0 or workers < 1:
            raise ValueError("interval_s must be positive and workers at least 1")
        self.targets = targets
        self.record = record
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.retry_delay_s = retry_delay_s
        self.workers = workers
        self.clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[CheckResult]:
        """Check every target concurrently (a slow URL holds one worker, never the others), record
        the results together and return them (in the order of the targets)."""
        try:
            targets = list(self.targets())
        except Exception:
            logger.exception("health checks: cannot read the targets")
            return []
        if not targets:
            return []
        results: list[CheckResult] = []
        with ThreadPoolExecutor(min(self.workers, len(targets)), thread_name_prefix="tallyhub-health-check") as pool:
            futures = [pool.submit(self._check, target) for target in targets]
            for target, future in zip(targets, futures, strict=True):
                try:
                    results.append(future.result())
                except Exception:  # a bug of ours, not the target's failure: no result rather than a false one
                    logger.exception("health check of %s failed", target.url)
        try:
            self.record(results)
        except Exception:
            logger.exception("health checks: cannot record %d results", len(results))
        return results

    def _check(self, target: HealthTarget) -> CheckResult:
        # stop() cuts the wait before a retry short (the retry still runs: its result is recorded)
        return check(
            target,
            timeout_s=self.timeout_s,
            retry_delay_s=self.retry_delay_s,
            now=self.clock,
            sleep=self._stopping.wait,
        )

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the health checker runs already")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="tallyhub-health-checks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop, after the round in progress has recorded its results (at most two attempts' time)."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.join(2 * self.timeout_s + 5)
        if thread.is_alive():
            logger.warning("health checks: the last round did not finish within %.0f s", 2 * self.timeout_s + 5)

    def _run(self) -> None:
        while not self._stopping.wait(self._until_next_round()):
            try:
                self.run_once()
            except Exception:  # run_once logs what it expects; this keeps the thread alive whatever else
                logger.exception("health checks: round failed")

    def _until_next_round(self) -> float:
        now = self.clock().timestamp()
        return (now // self.interval_s + 1) * self.interval_s - now
