"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

A hub process and two real agent processes (sites online with real capacity, a dataset at
one of them, jobs), people signing in through the dashboard's PKCE flow. Screenshots go
to a temp dir, or to ``$CRYOMESH_SCREENSHOTS`` (``docs/images`` for the README)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Account
from tests.processes import AgentProcess, HubProcess, enrolled_agent
from tests.services import wait_for
from tests.test_transfers_e2e import Network, make_data, transfers_section

pytestmark = pytest.mark.slow
PASSWORD = "dashboard password 1"
#: Playwright waits: they end as soon as the page shows what is awaited, so a generous
#: limit only matters when something is wrong (or the machine is very busy).
PAGE_TIMEOUT_MS = 60_000


def person(hub: HubProcess, username: str, **kw: Any) -> dict[str, Any]:
    acct = hub.api("POST", "/api/v1/accounts", json={"name": username, "username": username, **kw})
    r = httpx.post(
        f"{hub.url}/api/v1/accounts/setup", json={"username": username, "code": acct["setup_code"], "password": PASSWORD}
    )
    assert r.status_code == 204, r.text
    return dict(acct)


# kek-krios declares a GPU partition (this machine has none), so the capacity chart has CPUs
# (over a hundred) and GPUs (a handful) to draw on their own axes.
DECLARED_GPUS = """backend = "declared"

[[discovery.declared]]
name = "gpu"
max_nodes = 2
cpus_per_node = 64
memory_gb_per_node = 256
gpu_model = "a100"
gpus_per_node = 4
"""


def gpu_agent(net: Network, name: str, institution: str) -> AgentProcess:
    """Like ``Network.agent``, with declared GPUs."""
    a = enrolled_agent(net.hub, net.tmp, name, discovery=DECLARED_GPUS, extra=transfers_section(net.tmp, name),
                       institution=institution)  # fmt: skip
    a.env = {**net.hub.env}  # type: ignore[attr-defined]
    net.hub.api("POST", f"/api/v1/sites/{name}/activate")
    return a


def duration(s: float) -> str:
    """The dashboard's words for a span (app.js ``duration``), for spans a test can produce."""
    return f"{round(s)} s" if round(s) < 90 else f"{round(s / 60)} min"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One network for this module's tests (a hub and two agent processes take a while to start)."""
    tmp_path = tmp_path_factory.mktemp("world")
    hub = HubProcess(tmp_path / "hub", history_bucket_s=2)  # a capacity chart with points within the test
    hub.start()
    net = Network(hub, tmp_path)
    try:
        src = gpu_agent(net, "kek-krios", "kek")
        dst = net.agent("osaka-gpu", "osaka-u")
        ds = net.register(src, make_data(tmp_path / "ds", {"movies/m1.mrc": 3_000_000, "run.star": 100}))
        net.register(src, make_data(tmp_path / "secret", {"unpublished.mrc": 1000}), visibility="private", title="kek-only")
        net.start(src)
        net.start(dst)
        wait_for(lambda: hub.api("GET", "/api/v1/network/summary")["sites_by_reachability"].get("online") == 2, 60, "sites")
        person(hub, "kek-admin", role="site_admin", site="kek-krios", name="Aiko Sato")
        person(hub, "osaka-admin", role="site_admin", site="osaka-gpu")
        rin = person(hub, "rin", role="researcher", institution="osaka-u")
        ken = hub.account("researcher", institution="kek")
        job = {"kind": "generic.command", "command": ["sh", "-c", "echo averaged 800 images"], "resources": {"cpus": 1}}
        # At kek-krios, so kek's site admin sees a job another institution ran at their site (the
        # broker alone would pick either site: both finish it as soon).
        osaka_job = hub.call("POST", "/api/v1/jobs", account=net.researcher,
                             json={**job, "name": "osaka-2d-average", "placement": {"allowed_sites": ["kek-krios"]}})  # fmt: skip
        hub.call("POST", "/api/v1/jobs", account=ken, json={**job, "name": "kek-private-job"})
        rin_account = Account(rin["client_id"], rin["client_secret"], "researcher")
        req = hub.call("POST", f"/api/v1/datasets/{ds['id']}/share-requests", account=rin_account,
                       json={"dest_site": "osaka-gpu", "purpose": "2D classification at Osaka"})  # fmt: skip
        wait_for(lambda: hub.api("GET", f"/api/v1/jobs/{osaka_job['id']}")["state"] == "COMPLETE", 60, "the job")
        yield {"hub": hub, "net": net, "ds": ds, "job": osaka_job, "request": req, "rin": rin}
    finally:
        for a in net.agents:
            a.stop()
        hub.stop()


def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("CRYOMESH_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def sign_in(page: Any, hub: HubProcess, username: str) -> None:
    page.goto(f"{hub.url}/dashboard/")
    page.wait_for_url(re.compile(r".*/oauth/authorize\?.*"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("[data-testid=signout]:visible", timeout=PAGE_TIMEOUT_MS)


def test_coordinator_flow_in_a_real_browser(world: dict[str, Any], chromium: Any, tmp_path: Path) -> None:
    hub, out = world["hub"], shots(tmp_path)
    page = chromium.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    # An unsigned visitor is sent to sign in; the dashboard API refuses them.
    page.goto(f"{hub.url}/dashboard/#/overview")
    page.wait_for_url(re.compile(r".*/oauth/authorize\?.*code_challenge_method=S256.*"))
    page.screenshot(path=str(out / "signin.png"))
    r = httpx.get(f"{hub.url}/api/v1/dashboard/overview")
    assert r.status_code == 401 and r.json()["error"] == "Unauthorized"
    page.fill("input[name=username]", "kek-admin")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "Wrong username or password" in page.inner_text("main")

    # The owner site's admin signs in and sees the sites, live, with capacity.
    sign_in(page, hub, "kek-admin")
    page.wait_for_selector("[data-testid=site-row][data-site=kek-krios]")
    who = page.inner_text("[data-testid=who]")
    assert page.inner_text("[data-testid=who-name]") == "Aiko Sato", "the header names the person, not their client id"
    assert "(kek-admin)" in who and "site_admin of kek-krios" in who and "user-" not in who, who
    assert page.inner_text("[data-testid=sites-online]") == "2 / 2"
    rows = page.inner_text("[data-testid=sites]")
    assert "kek-krios" in rows and "osaka-gpu" in rows and "online" in rows and "CPUs free" in rows
    # The sites come a filtered page at a time; the totals stay the network's.
    assert page.inner_text("[data-testid=sites-shown]") == "1\u20132 of 2"
    page.fill("[data-testid=sites-q]", "osaka")
    page.press("[data-testid=sites-q]", "Enter")
    page.wait_for_selector("[data-testid=site-row][data-site=kek-krios]", state="detached")
    assert page.locator("[data-testid=site-row]").count() == 1 and page.inner_text("[data-testid=sites-shown]") == "1\u20131 of 1"
    assert page.inner_text("[data-testid=sites-online]") == "2 / 2"
    page.evaluate("location.hash = '#/overview'")
    page.wait_for_selector("[data-testid=site-row][data-site=kek-krios]")
    # Capacity: CPUs and GPUs each on their own labelled axis, under a title that says what
    # span the points cover (not the 6-hour window asked for). Wait for a few points first.
    wait_for(lambda: len(hub.api("GET", "/api/v1/dashboard/capacity", params={"hours": 6})["points"]) >= 4, 60, "history")
    page.reload()
    page.wait_for_selector("[data-testid=capacity-chart-gpus]")
    assert page.locator("[data-testid=capacity-chart-cpus] [data-testid=y-axis]").text_content() == "CPUs"
    assert page.locator("[data-testid=capacity-chart-gpus] [data-testid=y-axis]").text_content() == "GPUs"
    # One read of the label and the points it describes (the page re-renders every 5 s).
    text, first, last = page.eval_on_selector("[data-testid=chart-span]", "e => [e.textContent, e.dataset.first, e.dataset.last]")
    cap = hub.api("GET", "/api/v1/dashboard/capacity", params={"hours": 6})
    times = [p["t"] for p in cap["points"]]
    assert first == times[0] and last in times, "the label is about the points the chart drew"
    span = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    assert text == f"last {duration(span)}" and "hour" not in text, (text, span)
    cpu_max = float(page.get_attribute("[data-testid=capacity-chart-cpus]", "data-max") or 0)
    gpu_max = float(page.get_attribute("[data-testid=capacity-chart-gpus]", "data-max") or 0)
    most_cpus = max(p["cpus_total"] for p in cap["points"])
    most_gpus = max(g["total"] for p in cap["points"] for g in p["gpus"].values())
    assert most_cpus <= cpu_max <= 2.5 * most_cpus and most_gpus <= gpu_max <= 2.5 * most_gpus, (cpu_max, gpu_max)
    ticks = page.locator("[data-testid=capacity-chart-gpus] [data-testid=y-tick]").all_text_contents()
    assert ticks[-1] == f"{gpu_max:g}", "the GPU axis is scaled to GPUs, not to CPUs"
    page.screenshot(path=str(out / "dashboard-overview.png"), full_page=True)

    # One site's capacity over time.
    page.select_option("[data-testid=chart-site]", "osaka-gpu")
    page.wait_for_selector("h2:has-text('osaka-gpu: capacity')")

    # Jobs, filtered by site; then one job: its placement reasons and output.
    page.click("nav a[data-page=jobs]")
    page.wait_for_selector(f"[data-testid=job-row][data-job='{world['job']['id']}']")
    ran_at = hub.api("GET", f"/api/v1/jobs/{world['job']['id']}")["site"]
    other = "osaka-gpu" if ran_at == "kek-krios" else "kek-krios"
    page.select_option("[data-testid=site-filter]", other)
    page.locator(f"[data-job='{world['job']['id']}']").wait_for(state="detached")
    sites = page.locator("[data-testid=job-row] td:nth-child(3)").all_inner_texts()
    assert all(x == other for x in sites), sites
    page.select_option("[data-testid=site-filter]", ran_at)
    page.wait_for_selector(f"[data-testid=job-row][data-job='{world['job']['id']}']")
    page.click(f"[data-testid=job-row][data-job='{world['job']['id']}']")
    page.wait_for_selector("[data-testid=explanation]")
    assert "placed on" in page.inner_text("[data-testid=explanation]")
    assert page.locator("[data-testid=verdict]").count() == 2
    assert "averaged 800 images" in page.inner_text("[data-testid=stdout]")
    page.screenshot(path=str(out / "dashboard-job.png"), full_page=True)

    # The share request waits for this admin: approve it and watch the transfer start.
    page.click("nav a[data-page=data]")
    row = f"[data-testid=share-row][data-request='{world['request']['id']}']"
    page.wait_for_selector(f"{row} [data-testid=approve]")
    page.click(f"{row} [data-testid=approve]")
    page.wait_for_selector(f"{row}:has-text('approved')")
    page.wait_for_selector("[data-testid=transfer-row]")
    wait_for(lambda: "DONE" in page.inner_text("[data-testid=transfers]"), 40, "the transfer to finish on the page", interval=1)
    assert "osaka-gpu" in page.inner_text("[data-testid=datasets]")
    page.screenshot(path=str(out / "dashboard-data.png"), full_page=True)

    page.click("nav a[data-page=usage]")
    page.wait_for_selector("[data-testid=usage-chart]")
    heads = page.inner_text("[data-testid=usage]")
    assert "LENT CPU-H" in heads.upper() and "OWN USE CPU-H" in heads.upper(), "own use is apart from lent and borrowed"
    page.screenshot(path=str(out / "dashboard-usage.png"), full_page=True)

    # Sign out: the page says so and the token no longer works anywhere.
    token = page.evaluate("sessionStorage.getItem('token')")
    assert httpx.get(f"{hub.url}/api/v1/dashboard/overview", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    page.click("[data-testid=signout]")
    page.wait_for_selector("[data-testid=signed-out]")
    r = httpx.get(f"{hub.url}/api/v1/dashboard/overview", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "sign in again" in r.json()["detail"]
    for name in ("signin", "dashboard-overview", "dashboard-job", "dashboard-data", "dashboard-usage"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
    page.close()


def test_each_person_sees_what_they_may(world: dict[str, Any], chromium: Any) -> None:
    hub = world["hub"]
    page = chromium.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    sign_in(page, hub, "rin")
    page.click("nav a[data-page=jobs]")
    page.wait_for_selector("[data-testid=job-row]")
    jobs = page.inner_text("[data-testid=jobs]")
    assert "osaka-2d-average" in jobs and "kek-private-job" not in jobs, "only their institution's jobs"
    # While no job changes, the 5 s refresh asks with If-None-Match and the hub answers 304;
    # the page keeps showing what it had.
    with page.expect_response(lambda r: "/api/v1/dashboard/jobs" in r.url and r.status == 304) as unchanged:
        pass
    assert unchanged.value.request.headers.get("if-none-match") == unchanged.value.headers["etag"]
    assert "osaka-2d-average" in page.inner_text("[data-testid=jobs]")
    page.click("nav a[data-page=data]")
    page.wait_for_selector("[data-testid=share-row]")
    assert page.locator("[data-testid=approve]").count() == 0, "a researcher decides nothing"
    catalog = page.inner_text("[data-testid=datasets]")
    assert "apoferritin" in catalog and "kek-only" not in catalog, "another institution's private dataset stays hidden"
    page.close()
    # The receiving site's admin sees the request but may not decide it; agents may not use the API.
    page = chromium.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    sign_in(page, hub, "osaka-admin")
    page.click("nav a[data-page=data]")
    page.wait_for_selector("[data-testid=share-row]")
    assert page.locator("[data-testid=approve]").count() == 0, "Approve only for requests to one's own site"
    page.close()


def test_a_slow_answer_for_the_page_left_does_not_replace_the_page_shown(world: dict[str, Any], chromium: Any) -> None:
    """The overview's answer is held back in the browser until the job page has been drawn: when
    it arrives it must be dropped, not painted over the job page (the race CI once hit when a
    test went to a job page straight after signing in)."""
    hub = world["hub"]
    page = chromium.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    sign_in(page, hub, "rin")
    held: list[Any] = []
    page.route("**/api/v1/dashboard/overview?*", lambda route: held.append(route))
    page.goto(f"{hub.url}/dashboard/#/overview?status=active")  # a new render of the overview, answer held
    for _ in range(600):  # the route handler runs while Playwright is waiting
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the overview asked for its sites"
    page.goto(f"{hub.url}/dashboard/#/job/{world['job']['id']}")
    page.wait_for_selector("[data-testid=explanation]")
    with page.expect_response(lambda r: "/api/v1/dashboard/overview" in r.url):
        for route in held:
            route.continue_()
    page.unroute("**/api/v1/dashboard/overview?*")
    page.wait_for_timeout(500)  # time for the late render to run to its end
    assert page.locator("[data-testid=explanation]").count() == 1, "the job page is still shown"
    assert page.locator("[data-testid=sites]").count() == 0, "the overview was not painted over it"
    page.close()
