"""Health check results in real chDB (`storage/uptime_queries.py`): 31 days of checks every 10 minutes
with known failures, read as uptime and incidents over 24 h, 7 d and 30 d, and as the latest result
per URL. Times are a fixed ``NOW`` (this minute: the rows stay inside the tables' 12-month TTL)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from tallyhub.storage.uptime_queries import CheckResult, latest_checks, record_checks, uptime

UTC = dt.UTC
NOW = dt.datetime.now(UTC).replace(second=0, microsecond=0)
STEP = dt.timedelta(minutes=10)
SHOP = "https://shop.example/health"
STAGING = "https://staging.shop.example/health?probe='x'"


def at(k: int) -> dt.datetime:
    """The time of check ``k``, counted back from NOW (check 0 is at NOW, 144 a day before)."""
    return NOW - k * STEP


def ts(k: int) -> int:
    return int(at(k).timestamp())


# Failed checks of the prod URL, by k: an ongoing incident (0-1), one across the start of the 24 h
# (143-145, 144 exactly 24 h before NOW: outside), one 3 days ago (432-437), one 20 days ago
# (2880-2882), and one across the start of the 30 days (4318-4325, 4320 exactly 30 days before NOW).
PROD_FAILURES = {0, 1, *range(143, 146), *range(432, 438), *range(2880, 2883), *range(4318, 4326)}
STAGING_FAILURES = {10, 11}


def check(k: int, url: str, env: str, failed: bool, app: str = "shop") -> CheckResult:
    return CheckResult(
        time=at(k),
        app=app,
        env=env,
        url=url,
        ok=not failed,
        status=503 if failed and k % 2 else 200 * (not failed),
        duration_ms=12.5,
        attempts=2 if failed else 1,
        # the first failed check of each run (the highest k: the earliest) says HTTP 503
        error=("HTTP 503" if k + 1 not in PROD_FAILURES | STAGING_FAILURES else "connection refused") if failed else "",
    )


def schedule() -> list[CheckResult]:
    prod = [check(k, SHOP, "prod", k in PROD_FAILURES) for k in range(31 * 144)]
    staging = [check(k, STAGING, "staging", k in STAGING_FAILURES) for k in range(2 * 144)]
    blog = [check(k, "http://blog.example/", "prod", True, app="blog") for k in range(5)]
    after_now = [check(-1, SHOP, "prod", False)]  # after NOW: neither counted nor ending the ongoing incident
    return prod + staging + blog + after_now


def incident(url: str, env: str, first: int, last: int, ongoing: bool = False) -> dict:
    return {
        "url": url,
        "env": env,
        "start": ts(first),
        "end": None if ongoing else ts(last - 1),
        "checks": first - last + 1,
        "error": "HTTP 503",
    }


ONGOING = incident(SHOP, "prod", 1, 0, ongoing=True)
ACROSS_24H = incident(SHOP, "prod", 145, 143)
DAYS_3 = incident(SHOP, "prod", 437, 432)
DAYS_20 = incident(SHOP, "prod", 2882, 2880)
# cut at the start of the 30 days: its first failed check (the one that said HTTP 503) is before them
ACROSS_30D = incident(SHOP, "prod", 4319, 4318) | {"error": "connection refused"}
STAGING_INCIDENT = incident(STAGING, "staging", 11, 10)


def test_uptime_and_incidents_over_24h_7d_30d(runner) -> None:
    record_checks(runner, schedule())

    prod = uptime(runner, "shop", NOW, env="prod")
    assert {w: (prod[w]["checks"], prod[w]["failed"]) for w in prod} == {
        "24h": (144, 3),
        "7d": (1008, 11),
        "30d": (4320, 16),
    }
    assert prod["24h"]["uptime"] == 141 / 144
    assert prod["7d"]["uptime"] == 997 / 1008
    assert prod["30d"]["uptime"] == 4304 / 4320
    # the latest first; a window holds the incidents with a failed check in it, whole
    assert prod["24h"]["incidents"] == [ONGOING, ACROSS_24H]
    assert prod["7d"]["incidents"] == [ONGOING, ACROSS_24H, DAYS_3]
    assert prod["30d"]["incidents"] == [ONGOING, ACROSS_24H, DAYS_3, DAYS_20, ACROSS_30D]

    every_env = uptime(runner, "shop", NOW)
    assert {w: (every_env[w]["checks"], every_env[w]["failed"]) for w in every_env} == {
        "24h": (288, 5),
        "7d": (1296, 13),
        "30d": (4608, 18),
    }
    assert every_env["24h"]["uptime"] == 283 / 288
    assert every_env["24h"]["incidents"] == [ONGOING, STAGING_INCIDENT, ACROSS_24H]
    assert every_env["30d"]["incidents"] == [ONGOING, STAGING_INCIDENT, ACROSS_24H, DAYS_3, DAYS_20, ACROSS_30D]

    staging = uptime(runner, "shop", NOW, env="staging")
    assert staging["7d"] == {"checks": 288, "failed": 2, "uptime": 286 / 288, "incidents": [STAGING_INCIDENT]}

    # an hour later the ongoing incident has ended with the check after it; a month on, nothing is left
    later = uptime(runner, "shop", NOW + dt.timedelta(hours=1), env="prod")
    assert later["24h"]["incidents"][0] == ONGOING | {"end": ts(-1)}
    assert later["24h"]["checks"] == 144 - 6 + 1
    blog = uptime(runner, "blog", NOW)
    assert blog["24h"]["uptime"] == 0.0 and len(blog["24h"]["incidents"]) == 1
    assert uptime(runner, "nobody", NOW)["30d"] == {"checks": 0, "failed": 0, "uptime": None, "incidents": []}
    assert uptime(runner, "shop", NOW + dt.timedelta(days=40))["30d"]["uptime"] is None


def test_latest_checks_per_url(runner) -> None:
    record_checks(runner, [])  # nothing to insert
    assert latest_checks(runner) == {}
    odd = CheckResult(
        time=(NOW + STEP).replace(microsecond=123000, tzinfo=None),  # naive: UTC
        app="shop",
        env="staging",
        url=STAGING,
        ok=False,
        status=0,
        duration_ms=301.25,
        attempts=2,
        error="TLS error: 'quoted' \\ back\nslash, ünïcode",
    )
    record_checks(runner, [*schedule(), odd])

    latest = latest_checks(runner)
    assert set(latest) == {
        ("shop", "prod", SHOP),
        ("shop", "staging", STAGING),
        ("blog", "prod", "http://blog.example/"),
    }
    assert latest["shop", "prod", SHOP] == check(-1, SHOP, "prod", False)
    assert latest["shop", "staging", STAGING] == dataclasses.replace(odd, time=odd.time.replace(tzinfo=UTC))
    assert latest["blog", "prod", "http://blog.example/"] == check(0, "http://blog.example/", "prod", True, app="blog")

    assert set(latest_checks(runner, ["blog", "other"])) == {("blog", "prod", "http://blog.example/")}
    assert latest_checks(runner, []) == {}
    # since: the URLs checked from then on only
    assert set(latest_checks(runner, since=NOW + STEP)) == {("shop", "prod", SHOP), ("shop", "staging", STAGING)}
    assert latest_checks(runner, since=NOW + 3 * STEP) == {}
