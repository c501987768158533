"""The dashboard as a person sees it: Debian's Chromium driven by Playwright, against a real hub
(`tallyhub serve`) fed by a real app (uvicorn + tallyhub's client). Numbers on the pages are
checked against SQL; screenshots go to test-artifacts/dashboard/."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest

from tallyhub.alerts.rules import Rule, parse_rule
from tallyhub.collector_processor.query_api import HubRunner
from tallyhub.storage import alert_queries as aq
from tallyhub.storage.apps import create_app as create_hub_app
from tallyhub.storage.uptime_queries import CheckResult, record_checks
from tests.conftest import free_port
from tests.e2e.conftest import REPO, App, Hub, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")

ARTIFACTS = REPO / "test-artifacts" / "dashboard"
TRAFFIC = {"ok": 40, "invalid": 6, "boom": 3}


class Site:
    def __init__(self, hub: Hub, base: str, app_url: str) -> None:
        self.hub = hub
        self.base = base
        self.app_url = app_url

    def link(self) -> str:
        """A new sign-in link, from the running hub."""
        out = self.hub.cli("dashboard").stdout
        return re.search(r"dashboard: (\S+)", out).group(1)

    def total(self, sql_where: str = "1") -> int:
        return int(self.hub.sql(f"SELECT sum(requests) FROM requests WHERE app = 'shop' AND {sql_where}")[0][0])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("dashboard")
    hub = Hub(tmp / "data")
    hub.start()
    key = hub.cli("apps", "create", "shop").stdout.split()[-1]
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": hub.endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-tallyhub-app-key={key}",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "TALLYHUB_REQUEST_LOGGING": "1",
    }
    app = None
    try:
        app = App(tmp / "app.log", env)
        with httpx.Client(base_url=app.url, headers={"Connection": "close"}) as client:
            for i in range(TRAFFIC["ok"]):
                client.get(f"/items/{i}", headers={"x-consumer": "acme" if i % 4 else "globex"})
            for _ in range(TRAFFIC["invalid"]):
                client.post("/orders", json={"sku": "x"})  # quantity missing: 422
            for _ in range(TRAFFIC["boom"]):
                client.get("/boom")
        expected = TRAFFIC["ok"] + TRAFFIC["invalid"] + TRAFFIC["boom"] + 1  # + the readiness probe
        wait_for(lambda: _sum(hub) >= expected, 60, "the app's requests in ClickHouse")
        wait_for(lambda: _logged(hub) >= expected, 60, "the app's logged requests in ClickHouse")
        found = wait_for(lambda: re.search(r"dashboard: (http://[^/\s]+)", hub.log.read_text()), 10, "the link")
        base = found.group(1)
        yield Site(hub, base, app.url)
    finally:
        if app is not None:
            app.stop()
        hub.stop()


def _logged(hub: Hub) -> int:
    return int(hub.sql("SELECT count() FROM request_log WHERE app = 'shop'")[0][0])


def _sum(hub: Hub) -> int:
    rows = hub.sql("SELECT sum(requests) FROM requests WHERE app = 'shop'")
    return int(rows[0][0] or 0) if rows else 0


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, site: Site, request: pytest.FixtureRequest) -> Iterator:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, timezone_id="UTC")
    page = context.new_page()
    page.requests_seen = []
    page.errors_seen = []
    page.on("request", lambda r: page.requests_seen.append(r.url))
    page.on("pageerror", lambda e: page.errors_seen.append(str(e)))
    page.on("console", lambda m: m.type == "error" and page.errors_seen.append(m.text))
    page.goto(site.link())
    page.wait_for_load_state("networkidle")
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def open_page(page, site: Site, path: str) -> None:
    page.goto(site.base + path)
    page.wait_for_load_state("networkidle")
    page.wait_for_selector("main h1")


def stat(page, label: str) -> str:
    return page.locator(f'[data-stat="{label}"] .value').inner_text()


def test_the_sign_in_link_opens_the_apps_overview_with_the_counts_of_clickhouse(page, site: Site) -> None:
    assert page.url.rstrip("/") == site.base  # the token is gone from the address bar
    row = page.locator("tr", has=page.locator("a", has_text="shop"))
    assert row.locator("td").nth(2).inner_text() == f"{site.total():,}"
    assert not page.errors_seen


def test_traffic_headline_and_chart_data_match_sql(page, site: Site) -> None:
    open_page(page, site, "/apps/shop/traffic?range=1h")
    assert stat(page, "Requests") == f"{site.total():,}"
    assert stat(page, "Server errors (5xx)") == str(site.total("status >= 500"))
    assert stat(page, "Server errors (5xx)") == str(TRAFFIC["boom"])
    chart = page.locator('table[data-chart="Requests per minute"]')
    assert chart.locator("tbody tr").count() == 60  # one point a minute over the hour, empty ones too
    assert not page.errors_seen


def test_endpoints_list_introspected_ones_without_traffic(page, site: Site) -> None:
    open_page(page, site, "/apps/shop/endpoints?range=1h")
    rows = {
        (r.locator("td").nth(0).inner_text(), r.locator("td").nth(1).inner_text()): r
        for r in page.locator("tbody tr").all()
    }
    assert ("POST", "/items") in rows  # never called
    assert rows[("POST", "/items")].locator("td").nth(3).inner_text() == "0"
    items = rows[("GET", "/items/{item_id}")].locator("td").nth(3).inner_text()
    assert items == str(site.total("route = '/items/{item_id}'"))
    assert rows[("GET", "/boom")].locator(".flag").count() == 1  # the server-error flag


def test_errors_page_shows_the_stack_trace(page, site: Site) -> None:
    open_page(page, site, "/apps/shop/errors?range=1h")
    error = page.locator("details.server-error", has_text="RuntimeError")
    assert "an unhandled error" in error.inner_text()
    error.locator("summary").click()
    trace = error.locator("pre.trace").inner_text()
    assert "Traceback" in trace and 'raise RuntimeError("an unhandled error")' in trace
    validation = page.locator("table", has=page.locator("caption", has_text="Validation errors"))
    assert "quantity" in validation.inner_text()


def test_dark_mode_and_a_non_utc_time_zone(page, site: Site) -> None:
    page.emulate_media(color_scheme="dark")
    page.evaluate("localStorage.removeItem('tallyhub-theme')")
    open_page(page, site, "/apps/shop/traffic?range=1h&tz=Asia%2FKolkata")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 20, 25)"
    assert page.locator("#tz").input_value() == "Asia/Kolkata"
    first = page.locator('table[data-chart="Requests per minute"] tbody tr td').first.inner_text()
    window_from = int(page.evaluate("fetch('/api/traffic?app=shop&range=1h').then(r => r.json())")["window"]["from"])
    shown = datetime.fromtimestamp(window_from, UTC).astimezone(ZoneInfo("Asia/Kolkata")).strftime("%Y-%m-%d %H:%M")
    assert first == shown


def test_no_request_leaves_the_hubs_origin(page, site: Site) -> None:
    for path in ("/apps/shop/traffic", "/apps/shop/latency", "/apps/shop/consumers", "/apps/shop/instances"):
        open_page(page, site, path + "?range=1h")
    assert page.requests_seen and all(url.startswith(site.base + "/") for url in page.requests_seen)
    assert not page.errors_seen


def test_without_a_session_nothing_is_shown(browser, site: Site) -> None:
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(site.base + "/apps/shop/traffic")
    assert response.status == 401 and "tallyhub dashboard" in page.content()
    assert page.goto(site.base + "/api/traffic?app=shop").status == 401
    link = site.link()
    assert page.goto(link).status == 200  # signed in, redirected to the page
    other = browser.new_context().new_page()
    assert other.goto(link).status == 401  # the link worked once
    assert "used already" in other.content()
    context.close()


def test_bad_input_gets_a_404_page_or_a_400_message(page, site: Site) -> None:
    assert page.goto(site.base + "/apps/nope/traffic").status == 404
    assert page.goto(site.base + "/apps/shop/endpoint?method=GET&route=/nowhere").status == 404
    api = page.request
    bad = api.get(site.base + "/api/traffic?app=shop&range=5y")
    assert bad.status == 400 and "unknown range" in bad.json()["error"]
    assert api.get(site.base + "/api/traffic?app=shop&status=6xx").status == 400
    assert api.get(site.base + "/api/traffic?app=shop&from=2026-12-05T10:00&to=2026-12-05T09:00").status == 400
    injection = quote("x' OR 1=1 --")
    answer = api.get(site.base + f"/api/traffic?app=shop&range=1h&consumer={injection}")
    assert answer.status == 200 and answer.json()["totals"]["requests"] == 0
    assert site.total() > 0  # and the data is still there


def test_a_window_of_twelve_months_is_bucketed_on_the_server(page, site: Site) -> None:
    answer = page.request.get(site.base + "/api/traffic?app=shop&range=12mo").json()
    assert answer["window"]["level"] == "day"
    assert len(answer["series"]["time"]) <= 2000
    assert sum(answer["series"]["requests"]) == site.total()


def test_csv_export_of_a_table(page, site: Site) -> None:
    answer = page.request.get(site.base + "/api/endpoints?app=shop&range=1h&format=csv&table=endpoints")
    assert answer.headers["content-type"].startswith("text/csv")
    lines = answer.text().splitlines()
    assert lines[0].startswith("method,route")
    assert any(line.startswith("GET,/items/{item_id},") for line in lines)


def test_settings_hide_an_endpoint_and_mark_a_4xx_expected(page, site: Site) -> None:
    open_page(page, site, "/apps/shop/endpoints?range=1h")
    boom = page.locator("tbody tr", has_text="/boom")
    page.get_by_role("button", name="Hide GET /boom").click()
    expect(boom).to_have_count(0)
    assert not page.get_by_label("show hidden endpoints").is_checked()
    page.get_by_label("show hidden endpoints").check()
    expect(page.locator("tr.hidden-endpoint", has_text="/boom")).to_have_count(1)
    assert "hidden=1" in page.url  # the view can be shared
    page.get_by_role("button", name="Show GET /boom").click()
    expect(page.locator("tr.hidden-endpoint")).to_have_count(0)
    expect(boom).to_have_count(1)
    before = page.request.get(site.base + "/api/traffic?app=shop&range=1h").json()["totals"]["client_errors"]
    assert before == TRAFFIC["invalid"]
    put = page.request.put(
        site.base + "/api/settings/endpoint",
        data={"app": "shop", "method": "POST", "route": "/orders", "expected_statuses": [422]},
    )
    assert put.status == 200 and put.json()["expected_statuses"] == [422]
    after = page.request.get(site.base + "/api/traffic?app=shop&range=1h").json()["totals"]["client_errors"]
    assert after == 0
    page.request.put(
        site.base + "/api/settings/endpoint",
        data={"app": "shop", "method": "POST", "route": "/orders", "expected_statuses": []},
    )


def serve(data_dir: Path, dashboard_address: str) -> list[str]:
    return [
        *(sys.executable, "-m", "tallyhub", "serve", "--data-dir", str(data_dir), "--http-address", "off"),
        *("--grpc-address", f"127.0.0.1:{free_port()}", "--query-address", f"127.0.0.1:{free_port()}"),
        *("--dashboard-address", dashboard_address),
    ]


def test_a_dashboard_on_other_addresses_needs_users_and_their_passwords(browser, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    refused = subprocess.run(serve(data_dir, "0.0.0.0:0"), capture_output=True, text=True, timeout=120, cwd=REPO)
    assert refused.returncode == 2
    assert "no dashboard user exists" in refused.stderr and "tallyhub users add" in refused.stderr

    added = subprocess.run(
        [sys.executable, "-m", "tallyhub", "users", "add", "ada", "--password-stdin", "--data-dir", str(data_dir)],
        input="correct horse\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    log = tmp_path / "hub.log"
    hub = subprocess.Popen(
        serve(data_dir, f"0.0.0.0:{port}"), stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO
    )
    try:
        wait_for(lambda: "dashboard: " in log.read_text() or hub.poll() is not None, 60, "the hub")
        assert f"dashboard: http://0.0.0.0:{port}/login" in log.read_text()
        page = browser.new_context().new_page()
        assert page.goto(f"http://127.0.0.1:{port}/?token=guess").status == 401
        page.fill("input[name=name]", "ada")
        page.fill("input[name=password]", "wrong horse")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert "Wrong name or password" in page.content()
        page.fill("input[name=name]", "ada")
        page.fill("input[name=password]", "correct horse")
        with page.expect_navigation():
            page.click("button[type=submit]")
        page.wait_for_selector("main h1:text('Apps')")
    finally:
        hub.terminate()
        hub.wait(30)


def test_new_data_shows_without_reloading(page, site: Site) -> None:
    open_page(page, site, "/apps/shop/traffic?range=1h")
    before = site.total()
    with httpx.Client(base_url=site.app_url, headers={"Connection": "close"}) as client:
        for i in range(5):
            client.get(f"/items/{i}")
    wait_for(lambda: site.total() == before + 5, 30, "the new requests in ClickHouse")
    expect(page.locator('[data-stat="Requests"] .value')).to_have_text(f"{before + 5:,}", timeout=20_000)


def test_dragging_across_a_chart_zooms_into_that_time(page, site: Site) -> None:
    open_page(page, site, "/apps/shop/traffic?range=6h")
    over = page.locator('figure[aria-label="Requests per minute"] .u-over')
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + 20, steps=5)
    page.mouse.up()
    page.wait_for_url(re.compile(r"from=\d+&to=\d+"))
    page.wait_for_selector('figure[aria-label="Requests per minute"]')
    span = page.evaluate(
        "(() => { const q = new URLSearchParams(location.search); return q.get('to') - q.get('from'); })()"
    )
    assert 0.3 * 6 * 3600 < span < 0.5 * 6 * 3600  # about the 40 % of the chart dragged across
    assert page.locator("#ranges [aria-pressed=true]").count() == 0


def test_usable_by_keyboard(page, site: Site) -> None:
    open_page(page, site, "/apps/shop/endpoints?range=1h")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.get_by_role("button", name="Requests", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.locator("th[aria-sort]")).to_have_text(re.compile("Requests"))
    assert "sort=requests" in page.url
    page.locator("#ranges button", has_text="15m").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile("range=15m"))


def test_an_endpoints_page_consumers_and_instances_match_sql(page, site: Site) -> None:
    open_page(page, site, "/apps/shop/endpoints?range=1h")
    page.get_by_role("link", name="/items/{item_id}").click()
    page.wait_for_selector("main h1:has-text('GET /items/{item_id}')")
    assert stat(page, "Requests") == str(site.total("route = '/items/{item_id}'"))
    histogram = page.locator('table[data-chart="Latency histogram"] tbody tr td:nth-child(2)').all_inner_texts()
    assert sum(int(n.replace(",", "")) for n in histogram) == site.total("route = '/items/{item_id}'")
    consumers = page.locator("table", has=page.locator("caption", has_text="Top consumers")).inner_text()
    assert "acme" in consumers and "globex" in consumers

    open_page(page, site, "/apps/shop/consumers?range=1h")
    table = page.locator("table", has=page.locator("caption", has_text="Consumers"))
    row = table.locator("tr", has=page.locator("a", has_text="acme"))
    acme = site.total("consumer = 'acme'")
    assert row.locator("td").nth(3).inner_text() == str(acme) and row.locator("td").nth(2).inner_text() == "customers"

    open_page(page, site, "/apps/shop/instances?range=1h")
    (instance,) = site.hub.sql("SELECT instance, versions['python'] FROM instances WHERE app = 'shop'")
    text = page.locator("table", has=page.locator("caption", has_text="Instances")).inner_text()
    assert instance[0] in text and instance[1] in text and "reporting" in text


def js_percent(fraction: float) -> str:
    """``fmt.percent`` of format.js."""
    p = fraction * 100
    if p == 0:
        return "0 %"
    return "<0.1 %" if p < 0.1 else f"{p:.1f} %" if p < 10 else f"{p:.0f} %"


def js_bytes(n: float) -> str:
    """``fmt.bytes`` of format.js (``toPrecision(3)``: '#' keeps the trailing zeros, as it does)."""
    units, i = ["B", "KB", "MB", "GB", "TB"], 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{round(n)} B" if i == 0 else f"{format(n, '#.3g').rstrip('.')} {units[i]}"


def test_the_instances_page_shows_each_instances_cpu_and_memory(page, site: Site) -> None:
    """The app's client sends the process's CPU and memory with every export (each second here):
    the page shows the latest, as sent (one of the values in `metrics` whichever export it was)."""
    open_page(page, site, "/apps/shop/instances?range=1h")
    table = page.locator("table", has=page.locator("caption", has_text="Instances"))
    headers = table.locator("thead th").all_inner_texts()
    ((instance,),) = site.hub.sql("SELECT instance FROM instances WHERE app = 'shop'")
    row = table.locator("tbody tr", has_text=instance)
    cpu = row.locator("td").nth(headers.index("CPU"))
    memory = row.locator("td").nth(headers.index("Memory"))
    cpu_text, memory_text = cpu.inner_text(), memory.inner_text()
    assert re.fullmatch(r"(<?\d+(\.\d)?) %", cpu_text) and re.fullmatch(r"\d+(\.\d+)? MB", memory_text)

    assert re.fullmatch(r"[0-9a-f-]+", instance)  # safe to put in the SQL
    sent = site.hub.sql(
        f"SELECT name, value FROM metrics WHERE app = 'shop' AND instance = '{instance}' AND kind = 'gauge' "
        "AND name IN ('process.cpu.utilization', 'process.memory.usage')"
    )
    assert cpu_text in {js_percent(float(v)) for name, v in sent if name == "process.cpu.utilization"}
    assert memory_text in {js_bytes(float(v)) for name, v in sent if name == "process.memory.usage"}
    assert 10e6 < max(float(v) for name, v in sent if name == "process.memory.usage") < 2e9
    assert cpu.locator("span").get_attribute("title").startswith("highest in this window: ")
    expect(table.locator("th", has_text="Memory")).to_be_visible()


def test_the_request_log_lists_filters_and_opens_a_request(page, site: Site) -> None:
    open_page(page, site, "/apps/shop/requests?range=1h")
    rows = page.locator("section[aria-label='Logged requests'] tbody tr")
    assert rows.count() == _logged(site.hub)  # every logged request of the hour, newest first
    newest = site.hub.sql("SELECT url_path FROM request_log WHERE app = 'shop' ORDER BY time DESC LIMIT 1")[0][0]
    assert rows.first.locator("td").nth(2).inner_text() == newest  # newest first
    page.get_by_label("Body contains").fill("quantity")  # the 422s' answers name the missing field
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(TRAFFIC["invalid"])
    assert all(r.locator("td").nth(3).inner_text() == "422" for r in rows.all())
    rows.first.locator("a").click()
    page.wait_for_selector("pre[data-body='Response body']")
    assert "POST /orders → 422" in page.locator("main h1").inner_text()
    body = page.locator("pre[data-body='Request body']").inner_text()
    assert body == '{\n  "sku": "x"\n}'  # pretty-printed JSON
    headers = page.locator("section[aria-label='Request headers']").inner_text()
    assert "content-type" in headers and "application/json" in headers
    assert not page.errors_seen


def test_a_500s_logged_request_shows_its_exception_and_the_log_exports_as_csv(page, site: Site) -> None:
    open_page(page, site, "/apps/shop/errors?range=1h")
    page.get_by_role("link", name="Logged 5xx requests →").click()
    rows = page.locator("section[aria-label='Logged requests'] tbody tr")
    expect(rows).to_have_count(TRAFFIC["boom"])
    rows.first.locator("a").click()
    page.wait_for_selector("pre.stacktrace")
    assert 'raise RuntimeError("an unhandled error")' in page.locator("pre.stacktrace").inner_text()
    answer = page.request.get(site.base + "/api/requests?app=shop&range=1h&status=5xx&format=csv&table=requests")
    lines = answer.text().splitlines()
    assert lines[0].startswith("time,request_id,env,method,url_path") and len(lines) == 1 + TRAFFIC["boom"]
    assert not page.errors_seen


# -- alerts and uptime: an app `ops` whose rules, states, history and health checks are written through
# the running hub (as its evaluator and health checker write them), and instances that stopped exporting

NEVER = "0 0 31 2 *"
"""The rules' cron, February 31st: the running hub never evaluates them, so their states stay as written."""
SLACK_SECRET = "T0001/B0001/s3cr3tT0k3n"


def ops_checks(now: datetime) -> list[CheckResult]:
    """Every 30 min over the last day (the latest two failed: an ongoing incident), then one a day
    from 1 to 29 days ago (3 days ago failed, 2 days ago healthy: a closed incident of 1 day).
    24 h: 46 of 48 healthy, 7 d: 51 of 54, 30 d: 74 of 77."""
    url = "https://ops.example/health"

    def check(at: datetime, ok: bool, error: str = "") -> CheckResult:
        return CheckResult(at, "ops", "prod", url, ok, 200 if ok else 503 * (error != "timed out"), 9.5, 1, error)

    recent = [now - timedelta(minutes=1 + 30 * k) for k in range(48)]
    daily = [now - timedelta(days=d, hours=2) for d in range(1, 30)]
    return [
        *(check(at, k > 1, "" if k > 1 else "timed out" if k == 1 else "HTTP 503") for k, at in enumerate(recent)),
        *(check(at, d != 3, "" if d != 3 else "HTTP 503") for d, at in enumerate(daily, start=1)),
    ]


@pytest.fixture(scope="module")
def ops(site: Site) -> HubRunner:
    runner = HubRunner.find(site.hub.data_dir)
    assert runner is not None
    create_hub_app(runner, "ops", "4" * 64)
    now = datetime.now(UTC)
    rules = [
        parse_rule({"name": "errors", "app": "ops", "metric": "error_rate", "threshold": 0.05, "cron": NEVER,
                    "channels": [f"slack:https://hooks.slack.com/services/{SLACK_SECRET}"],
                    "description": "Too many errors"}),
        parse_rule({"name": "slow", "app": "ops", "metric": "p95", "threshold": 0.5, "window": "10m", "cron": NEVER,
                    "pending": "5m", "endpoint": "GET /items/{item_id}"}),
        parse_rule({"name": "heartbeat", "app": "ops", "metric": "heartbeat", "cron": NEVER}),
        parse_rule({"name": "backup-job", "app": "ops", "metric": "requests", "op": "<", "threshold": 1,
                    "cron": NEVER}),
    ]  # fmt: skip
    for rule in rules:
        aq.save_rule(runner, rule.name, rule.app, rule.metric, rule.to_json(), "cli")
    ago = {m: now - timedelta(minutes=m) for m in (3, 20, 25, 120, 130)}
    blank = {"breach_since": None, "clear_since": None, "evaluated_at": now}
    aq.save_states(runner, {
        "errors": blank | {"state": "firing", "since": ago[20], "value": 0.125},
        "slow": blank | {"state": "pending", "since": ago[3], "value": 0.75},
        "heartbeat": blank | {"state": "ok", "since": ago[120], "value": 0.5},
    })  # fmt: skip

    def transition(rule: Rule, at: datetime, before: str, after: str, value: float) -> dict:
        return {
            **{"time": at, "rule": rule.name, "app": "ops", "env": "", "metric": rule.metric, "before": before},
            **{"after": after, "value": value, "threshold": rule.threshold, "condition": rule.condition()},
            **{"since": aq.sql_time(at), "notification_id": "", "notification": "", "channels": list(rule.channels)},
        }  # the channels as the evaluator records them: unredacted

    errors, slow, heartbeat, _ = rules
    aq.record_history(runner, [
        transition(heartbeat, ago[130], "ok", "firing", 4.0),
        transition(heartbeat, ago[120], "firing", "resolved", 0.5),
        transition(errors, ago[25], "ok", "pending", 0.08),
        transition(errors, ago[20], "pending", "firing", 0.125) | {"notification_id": "n1"},
        transition(slow, ago[3], "ok", "pending", 0.75),
    ])  # fmt: skip
    aq.record_deliveries(runner, [
        {"time": ago[20], "notification_id": "n1", "rule": "errors", "state": "firing",
         "channel": "slack:https://hooks.slack.com/***", "attempt": 1, "ok": True, "final": True, "error": "",
         "duration_ms": 80.0},
    ])  # fmt: skip
    checks = ops_checks(now)
    for i in range(0, len(checks), 20):  # small batches: the rows travel in the query string
        record_checks(runner, checks[i : i + 20])
    return runner


def cells(row) -> list[str]:
    return row.locator("td").all_inner_texts()


def test_the_alerts_page_shows_rules_history_and_uptime(page, site: Site, ops: HubRunner) -> None:
    open_page(page, site, "/apps/shop/alerts")  # an app without rules or health checks says what to do
    empty = page.locator("main").inner_text()
    assert "No alert rules: add one with `tallyhub alerts add …` or the rules file (docs/alerts.md)." in empty
    assert "No health checks: add a rule with --metric health_check --url …" in empty

    open_page(page, site, "/apps/ops/alerts")
    assert page.locator("#tabs a[aria-current=page]").inner_text() == "Alerts"
    rows = page.locator("section[aria-label='Alert rules'] tbody tr")
    expect(rows).to_have_count(4)
    shown = [cells(row) for row in rows.all()]
    # firing first, then pending, then the rest by name
    assert [(c[0], c[1].splitlines()[0]) for c in shown] == [
        ("firing", "errors"),
        ("pending", "slow"),
        ("not evaluated", "backup-job"),
        ("ok", "heartbeat"),
    ]
    colors = [
        page.evaluate("(n) => getComputedStyle(n).color", rows.nth(i).locator(".badge").element_handle())
        for i in range(4)
    ]
    assert colors == ["rgb(201, 48, 44)", "rgb(179, 89, 0)", "rgb(91, 101, 113)", "rgb(26, 127, 55)"]
    errors, slow, backup, heartbeat = shown
    assert "error_rate > 0.05 over 5m" in errors[2] and "Too many errors" in errors[1]
    assert errors[5] == "13 %" and "(20 min ago)" in errors[4]
    assert errors[6] == "slack:https://hooks.slack.com/***" and errors[7].startswith(
        "slack:https://hooks.slack.com/***"
    )
    assert "p95 > 0.5 over 10m" in slow[2] and "pending 5 min" in slow[2] and "GET /items/{item_id}" in slow[3]
    assert slow[5] == "750 ms"
    assert "requests < 1 over 5m" in backup[2] and backup[4] == "\u2013" and backup[6] == "none"
    assert "heartbeat >= 3" in heartbeat[2] and heartbeat[5] == "30 s since the last export"
    assert SLACK_SECRET not in page.content()

    history = page.locator("section[aria-label='Alert history'] tbody tr")
    assert [(c[1], c[2], c[3]) for c in map(cells, history.all())] == [
        ("slow", "ok → pending", "750 ms"),
        ("errors", "pending → firing", "13 %"),
        ("errors", "ok → pending", "8.0 %"),
        ("heartbeat", "firing → resolved", "30 s since the last export"),
        ("heartbeat", "ok → firing", "4 min since the last export"),
    ]

    assert [stat(page, f"Uptime {w}") for w in ("24 h", "7 d", "30 d")] == ["95.83 %", "94.44 %", "96.10 %"]
    incidents = [cells(row) for row in page.locator("section[aria-label='Incidents'] tbody tr").all()]
    assert [(c[1], c[2], c[5], c[6]) for c in incidents] == [
        ("ongoing", "31 min", "2", "timed out"),
        (incidents[1][1], "1 d 0 h", "1", "HTTP 503"),
    ]
    latest = cells(page.locator("section[aria-label='Health checks'] tbody tr"))
    assert latest[:3] == ["https://ops.example/health", "prod", "down"]
    assert page.locator("#filters").is_hidden()  # consumer, method, path and status do not apply here

    # a notification's link: the rule's row is highlighted and scrolled to, the history is its own
    open_page(page, site, "/apps/ops/alerts?rule=slow")
    highlighted = page.locator("tr.highlight")
    expect(highlighted).to_have_count(1)
    assert cells(highlighted)[1].startswith("slow")
    expect(highlighted).to_be_in_viewport()
    assert [c[1] for c in map(cells, history.all())] == ["slow"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "alerts-page-rule-link.png"), full_page=True)
    page.get_by_role("link", name="Show every rule's history").click()
    expect(history).to_have_count(5)
    assert "rule=" not in page.url
    assert not page.errors_seen


def test_an_instance_that_stopped_exporting_shows_as_down(page, site: Site, ops: HubRunner) -> None:
    now = datetime.now(UTC)
    for name, started in (("ops-gone", now - timedelta(minutes=10)), ("ops-fresh", now - timedelta(minutes=1))):
        ops.raw(
            "INSERT INTO instances (app, env, service, instance, host, pid, versions, started_at, received_at) "
            "SELECT 'ops', 'prod', 'api', {name:String}, 'host-1', 7, map('python', '3.11'), "
            "toDateTime64({started:String}, 3, 'UTC'), now64(3)",
            {"name": name, "started": aq.sql_time(started)},
        )
    open_page(page, site, "/apps/ops/instances?range=1h")
    table = page.locator("section[aria-label='Instances']")
    headers = table.locator("thead th").all_inner_texts()
    state = {
        row.locator("td").nth(headers.index("Instance")).inner_text(): row.locator("td").nth(headers.index("State"))
        for row in table.locator("tbody tr").all()
    }
    assert {name: cell.inner_text() for name, cell in state.items()} == {"ops-gone": "down", "ops-fresh": "reporting"}
    assert state["ops-gone"].locator(".badge.bad").count() == 1
    assert not page.errors_seen
