"""The dashboard's cost views in a real browser (Debian's Chromium, headless, driven by
Playwright): a finished job's estimate beside its actual run, and the usage page's cost and
budget use, each number checked against what the API says to the same person.

The hub is the real app on a loopback port; the sites' agents are played by the test over
HTTP (as in tests/hub/test_dashboard_costs.py), so each run's length, and so its cost, is
known. Screenshots go where tests/test_dashboard.py puts them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Account, Hub, running_hub
from tests.hub.test_costs import CHEAP
from tests.hub.test_dashboard_costs import EIGHT_CPUS, run_attempt
from tests.hub.test_jobs import _CLIENTS, add_site, spec, submit
from tests.test_dashboard import PAGE_TIMEOUT_MS, PASSWORD, shots, sign_in

pytestmark = pytest.mark.slow


def js_duration(s: float) -> str:
    """app.js ``duration``, for the spans this test shows."""
    s = round(s)
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    return f"{round(s / 3600, 1):g} h"


def money(v: float, currency: str = "EUR") -> str:
    return f"{v:.2f} {currency}"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "data", sweep_interval_s=3600, currency="EUR") as h:
        yield h
        while _CLIENTS:
            _CLIENTS.pop().close()


def person(hub: Hub, username: str, institution: str) -> Account:
    """A researcher who signs in with a password (and whose client credentials the test uses for the API)."""
    with hub.as_admin() as c:
        r = c.post("/api/v1/accounts", json={"name": username, "username": username, "role": "researcher",
                                              "institution": institution})  # fmt: skip
    assert r.status_code == 201, r.text
    body = r.json()
    setup = {"username": username, "code": body["setup_code"], "password": PASSWORD}
    assert httpx.post(f"{hub.url}/api/v1/accounts/setup", json=setup).status_code == 204
    return Account(body["client_id"], body["client_secret"], "researcher")


def test_job_estimate_and_usage_costs_in_a_real_browser(hub: Hub, chromium: Any, tmp_path: Path) -> None:
    kek_site = add_site(hub, tmp_path, "kek-site", CHEAP, institution="kek")
    osaka_site = add_site(hub, tmp_path, "osaka-site", CHEAP, institution="osaka")
    rin = person(hub, "rin", "kek")
    job = submit(hub, rin, spec(name="kek-2d", resources=EIGHT_CPUS, placement={"allowed_sites": ["kek-site"]})).json()
    run_attempt(kek_site, hours=0.25)
    osaka = hub.account("researcher", institution="osaka")
    submit(hub, osaka, spec(resources=EIGHT_CPUS, placement={"allowed_sites": ["osaka-site"]}))
    run_attempt(osaka_site, hours=1)
    with hub.as_admin() as c:
        assert c.put("/api/v1/budgets/kek", json={"monthly_limit": 0.1, "warn_at": 0.1}).status_code == 200
        assert c.put("/api/v1/budgets/osaka", json={"monthly_limit": 5}).status_code == 200
    with hub.as_(rin) as c:
        [run] = c.get(f"/api/v1/dashboard/jobs/{job['id']}").json()["runs"]
        usage = c.get("/api/v1/dashboard/usage", params={"days": 30}).json()
        usage_year = c.get("/api/v1/dashboard/usage", params={"days": 365}).json()
    est, actual = run["estimate"], run["actual"]
    out = shots(tmp_path)
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    sign_in(page, hub, "rin")

    # The finished job: the estimate made at placement, the actual run, and the two compared.
    page.goto(f"{hub.url}/dashboard/#/job/{job['id']}")
    page.wait_for_selector("[data-testid=run-row][data-attempt='1']")
    row = "[data-testid=run-row][data-attempt='1']"

    def cell(testid: str) -> str:
        return str(page.inner_text(f"{row} [data-testid={testid}]")).strip()

    shown = page.eval_on_selector(f"{row} [data-testid=est-run]", "e => [e.dataset.p10, e.dataset.p50, e.dataset.p90]")
    assert [float(x) for x in shown] == [est["p10_s"], est["p50_s"], est["p90_s"]]
    assert cell("est-run") == f"{js_duration(est['p50_s'])} (p10 {js_duration(est['p10_s'])}, p90 {js_duration(est['p90_s'])})"
    assert (cell("est-copy"), cell("est-startup")) == (js_duration(est["copy_s"]), js_duration(est["startup_s"]))
    assert cell("est-cost") == money(est["cost"]) == "0.08 EUR"
    assert cell("est-learned") == f"{est['runs']} runs" == "0 runs"
    assert cell("actual-wall") == f"{js_duration(actual['wall_s'])} COMPLETE" == "15 min COMPLETE"
    assert cell("actual-cost") == money(actual["cost"]) == "0.02 EUR"
    assert cell("ratio") == f"{run['compared']['ratio']:.2f}\u00d7" == "0.25\u00d7"
    assert cell("inside") == "no", "15 minutes is below the p10"
    page.screenshot(path=str(out / "dashboard-job-estimate.png"), full_page=True)

    # Usage: this month's and the period's cost, and budget use, for rin's institution only.
    page.click("nav a[data-page=usage]")
    page.wait_for_selector("[data-testid=cost-row]")
    [kek] = usage["costs"]
    assert page.locator("[data-testid=cost-row]").count() == 1, "osaka's spending is not shown to kek's researcher"
    costs = "[data-testid=cost-row][data-institution=kek]"
    assert page.inner_text(f"{costs} [data-testid=cost-month]") == money(kek["month"]) == "0.02 EUR"
    assert page.inner_text(f"{costs} [data-testid=cost-period]") == money(kek["period"])
    bar = page.locator(f"{costs} [data-testid=budget-bar]")
    b = kek["budget"]
    assert (float(bar.get_attribute("data-spent") or -1), float(bar.get_attribute("data-limit") or -1)) == (b["spent"], 0.1)
    assert bar.inner_text().strip() == f"{money(b['spent'])} of {money(0.1)} (20 %)"
    assert page.inner_text(f"{costs} [data-testid=budget-warn-at]") == "warns at 10 %"
    mode = page.inner_text(f"{costs} [data-testid=budget-mode]")
    assert "enforced" in mode and b["state"] == "warning" and "warning" in mode
    assert "EUR" in page.inner_text("main h2") and usage["currency"] == "EUR"
    page.screenshot(path=str(out / "dashboard-usage-costs.png"), full_page=True)

    # Another period: the page asks for it and shows its total.
    page.select_option("[data-testid=usage-days]", "365")
    page.wait_for_selector("th:has-text('last 365 days')")
    assert page.inner_text(f"{costs} [data-testid=cost-period]") == money(usage_year["costs"][0]["period"])
    for name in ("dashboard-job-estimate", "dashboard-usage-costs"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
    page.close()
