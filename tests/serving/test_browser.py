"""A real headless Chromium loads the running demo dashboard, checks that every chart has
data (admin), that a customer key sees only its customer, and saves screenshots to
artifacts/ (gitignored)."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.db import init_db, make_engine
from billing.models import LedgerEntry, table_of
from billing.synthetic import demo_workload
from costctl.demo import (
    DemoClock,
    DemoFleetHook,
    DemoKeys,
    Replayer,
    backfill,
    demo_settings,
    prepare,
)
from costctl.serve import Stack
from costctl.settings import Settings
from dashboard.layout import GRAPHS
from tests.conftest import REQUIRE

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

# For every graph: points plotted over its traces (plotly's computed _length, which also
# counts base64-encoded arrays), or -1 before the graph has rendered.
POINTS_JS = """
return arguments[0].map(function (id) {
  var el = document.querySelector('#' + id + ' .js-plotly-plot');
  if (!el || !el._fullData) { return -1; }
  return el._fullData.reduce(function (n, t) { return n + (t._length || 0); }, 0);
});
"""


def need_browser() -> None:
    problem = None
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        problem = (
            f"headless Chromium needs {CHROMIUM} and {CHROMEDRIVER} (apt: chromium chromium-driver)"
        )
    if problem and REQUIRE:
        pytest.fail(f"{problem} (COSTCTL_REQUIRE_SERVICES=1)")
    if problem:
        pytest.skip(problem)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Stack, DemoKeys, Engine]]:
    """The demo stack in-process on a fresh SQLite file: the synthetic workload with two days
    of history backfilled, then live at 1x."""
    need_browser()
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    settings = demo_settings(Settings(), url, 0, 0)
    engine = make_engine(url)
    init_db(engine)
    keys = prepare(engine, settings, datetime.now(UTC))
    clock = DemoClock(lambda: datetime.now(UTC))
    fleet = DemoFleetHook(keys.ingest, clock=clock)
    stack = Stack(
        settings,
        engine,
        clock=lambda: datetime.now(UTC),
        job_hooks=(fleet,),
        refresh_s=5.0,
        default_window="7d",
    )
    stack.start()
    fleet.start_agents(stack.api_url)
    workload = demo_workload(None, 7)
    live = datetime.now(UTC)
    assert fleet.demo is not None
    backfill(
        engine, settings, workload, fleet.demo, clock, start=live - timedelta(days=2), end=live
    )
    replay = Replayer(
        stack.api_url, keys.ingest, workload, start=live, clock=lambda: datetime.now(UTC)
    )
    replay.start()
    try:
        # wait until tenants are billed: the fleet's load follows the replayed usage, so the
        # first rollups (before any load) are rightly all idle
        deadline = time.monotonic() + 90
        billed = 0
        t = table_of(LedgerEntry).c
        while time.monotonic() < deadline and billed == 0:
            time.sleep(1)
            with engine.connect() as c:
                billed = c.execute(
                    select(func.coalesce(func.sum(t.cost_cents), 0)).where(t.kind == "attributed")
                ).scalar_one()
        assert billed > 0, f"no billed cost after 90 s (replay error: {replay.error})"
        yield stack, keys, engine
    finally:
        replay.stop()
        fleet.stop()
        stack.stop()


def chrome(tmp_path: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,2600",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def sign_in(driver: Any, base: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(base + "/")
    assert driver.current_url.endswith("/login")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "login").click()


def wait_points(driver: Any, ids: list[str], timeout: float = 60) -> dict[str, int]:
    """Poll until every graph has rendered with data (or the timeout)."""
    points: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = driver.execute_script(POINTS_JS, ids)
        points = {g: -1 if n is None else int(n) for g, n in zip(ids, got, strict=True)}
        if all(v > 0 for v in points.values()):
            break
        time.sleep(1)
    return points


E_NOTATION = re.compile(r"(?<![0-9a-fA-F-])\d+(\.\d+)?[eE][+-]\d+\b")
MONEY = re.compile(r"^\$[0-9][0-9,]*(\.[0-9]+)?$")
TRACES_JS = """
return document.querySelector('#' + arguments[0] + ' .js-plotly-plot')._fullData.map(
  function (t) { return {name: t.name, mode: t.mode, dash: t.line && t.line.dash,
                         n: t._length, x: Array.from(t.x || []).map(String)}; });
"""


def kpi(driver: Any, label: str) -> str:
    from selenium.webdriver.common.by import By

    for card in driver.find_elements(By.CLASS_NAME, "kpi"):
        lines = card.text.splitlines()
        if lines and lines[0] == label:
            return str(lines[1])
    raise AssertionError(f"no KPI {label!r}")


def check_values(driver: Any, engine: Engine) -> None:
    """Numbers in the DOM: per-1M units against the ledger, no e-notation, the idle line,
    daily buckets over the 7-day default, the rows table and its CSV export."""
    from selenium.webdriver.common.by import By

    t = table_of(LedgerEntry).c
    with engine.connect() as c:
        cents, tokens = c.execute(
            select(func.sum(t.cost_cents), func.sum(t.input_tokens + t.output_tokens)).where(
                t.kind == "attributed"
            )
        ).one()
    want = cents / 100 / tokens * 1e6
    text = kpi(driver, "billed per 1M tokens")
    assert MONEY.match(text), text
    assert float(text[1:].replace(",", "")) == pytest.approx(want, rel=0.05)
    assert len(text[1:].replace(",", "").replace(".", "").lstrip("0")) <= 4  # 2-4 digits
    body = driver.find_element(By.TAG_NAME, "body").text
    assert not E_NOTATION.search(body), E_NOTATION.search(body)
    assert "None" not in body and "NaN" not in body
    traces = driver.execute_script(TRACES_JS, "g-cost-per-1m")
    idle = [x for x in traces if x["dash"] == "dot"]
    assert idle and all("markers" in x["mode"] and x["n"] >= 1 for x in idle), traces
    days = {x for tr in traces for x in tr["x"]}
    assert len(days) >= 3, days  # two days of history + today, one bucket a day
    assert all(re.match(r"^\d{4}-\d{2}-\d{2}", d) for d in days), days
    burn = driver.execute_script(TRACES_JS, "g-budget")
    projected = [x for x in burn if str(x["name"]).endswith("projected")]
    assert len(projected) == 2 and all(x["dash"] == "dot" for x in projected), burn
    assert all(len(x["x"]) == 2 for x in projected)  # now -> the period's end
    rows = driver.find_elements(By.CSS_SELECTOR, "#t-rows tr td")
    assert len(rows) > 10
    assert driver.find_elements(By.CSS_SELECTOR, "#t-rows button.export")  # CSV download
    costs = driver.execute_script(
        "return Array.from(document.querySelectorAll('#t-rows td[data-dash-column=cost_usd]'))"
        ".map(function (td) { return parseFloat(td.innerText); });"
    )
    assert costs == sorted(costs, reverse=True) and costs[0] > 0  # largest cost first


def check_1024(driver: Any) -> None:
    """At 1024 px wide the page has no horizontal overflow (screenshot kept)."""
    driver.set_window_size(1024, 2600)
    time.sleep(1)
    width = driver.execute_script("return document.documentElement.scrollWidth")
    driver.save_screenshot(str(ARTIFACTS / "dashboard-1024.png"))
    assert width <= 1024, width
    driver.set_window_size(1400, 2600)


def test_dashboard_in_chromium(demo: tuple[Stack, DemoKeys, Engine], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    stack, keys, engine = demo
    ARTIFACTS.mkdir(exist_ok=True)
    driver = chrome(tmp_path)
    try:
        sign_in(driver, stack.dashboard_url, keys.admin)
        points = wait_points(driver, list(GRAPHS))
        driver.save_screenshot(str(ARTIFACTS / "dashboard-admin.png"))
        empty = {g: n for g, n in points.items() if n <= 0}
        assert not empty, f"charts without data: {empty}"
        kpis = driver.find_elements(By.CLASS_NAME, "kpi")
        assert len(kpis) == 8 and "$" in kpis[0].text
        check_values(driver, engine)
        check_1024(driver)

        sign_in(driver, stack.dashboard_url, keys.tenant)
        tenant_graphs = ["g-cost-per-1m", "g-by-customer", "g-by-request-type", "g-budget"]
        points = wait_points(driver, tenant_graphs)
        driver.save_screenshot(str(ARTIFACTS / "dashboard-acme.png"))
        assert all(n > 0 for n in points.values()), points
        names = driver.execute_script(
            "return document.querySelector('#g-by-customer .js-plotly-plot')._fullData"
            ".map(function (t) { return t.name; });"
        )
        assert set(names) == {"acme"}
        assert "customer acme" in driver.find_element(By.TAG_NAME, "body").text
        assert not driver.find_element(By.ID, "g-utilization").is_displayed()
    finally:
        driver.quit()
    assert (ARTIFACTS / "dashboard-admin.png").stat().st_size > 10_000
