"""What a new user tripped over on the command line: dataset visibility, accounts with
dashboard usernames, site edits and policies, errors that show internals, and tables cut at
80 columns. Each runs the real `cryomesh` command against a real hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cli.test_cli import run
from tests.helpers import Account, Hub
from tests.hub.test_datasets import dataset_body, make_dataset_dir, register


def register_cli(config: Path, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cryomesh_cli.main", "datasets", "register", "--config", str(config), "--path", str(path)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


def assert_one_clear_error(out: subprocess.CompletedProcess[str], *expected: str) -> None:
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text and "errors.pydantic.dev" not in text and "For further information" not in text, text
    for e in expected:
        assert e in text, text


# ---------------------------------------------------------------- datasets


def test_visibility_from_the_cli_and_a_second_registration_refused(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("alpha", institution="kek")
    agent = sqlite_hub.enroll_agent("alpha", tmp_path / "state")
    config = tmp_path / "site.toml"
    config.write_text(f'[agent]\nhub_url = "{sqlite_hub.url}"\nstate_dir = "{agent.state_dir}"\n')
    data = make_dataset_dir(tmp_path / "apo")

    no_title = register_cli(config, data)
    assert_one_clear_error(no_title, "a dataset needs a title", "--title")
    assert len(no_title.stdout.strip().splitlines()) == 1, no_title.stdout
    bad_meta = tmp_path / "meta.yaml"
    bad_meta.write_text("title: x\nacquisition: {pixel_size_a: -1}\nsample: {}\n")
    out = register_cli(config, data, "--metadata", str(bad_meta))
    assert_one_clear_error(out, "acquisition.pixel_size_a:", "sample.name: Field required")

    first = register_cli(config, data, "--title", "Apoferritin", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    ds = json.loads(first.stdout)
    assert ds["visibility"] == "private"
    again = register_cli(config, data, "--title", "Apoferritin", "--visibility", "network")
    assert_one_clear_error(again, f"already registered as {ds['id']}", f"cryomesh datasets set-visibility {ds['id']}")

    researcher = sqlite_hub.account("researcher", institution="kek")
    out = run(sqlite_hub, "datasets", "set-visibility", ds["id"], "network", account=researcher)
    assert_one_clear_error(out, "403 Forbidden", "alpha")
    admin = sqlite_hub.account("site_admin", site="alpha")
    out = run(sqlite_hub, "datasets", "set-visibility", ds["id"], "network", account=admin)
    assert out.returncode == 0 and f"{ds['id']} 'Apoferritin' is now network" in out.stdout, out.stdout + out.stderr
    out = run(sqlite_hub, "datasets", "set-visibility", ds["id"], "institution", account=admin)
    assert out.returncode == 2 and "private" in out.stderr and "network" in out.stderr, "the real values are offered"
    outsider = sqlite_hub.account("researcher", institution="embl")
    out = run(sqlite_hub, "datasets", "list", account=outsider)
    assert ds["id"] in out.stdout


# ---------------------------------------------------------------- accounts, sites, policies


def test_accounts_with_usernames_and_client_credentials(sqlite_hub: Hub) -> None:
    sqlite_hub.create_site("alpha", institution="kek")
    out = run(sqlite_hub, "admin", "create-account", "--name", "Dr Sato", "--role", "researcher", "--institution", "kek",
              "--username", "sato")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "username sato" in out.stdout and "/dashboard/#/setup" in out.stdout and "CRYOMESH_CLIENT_ID=user-" in out.stdout
    args = ("--name", "Dr Ito", "--role", "researcher", "--institution", "kek", "--username", "ito", "--json")
    acct = json.loads(run(sqlite_hub, "admin", "create-account", *args).stdout)
    setup = {"username": "ito", "code": acct["setup_code"], "password": "a long passphrase"}
    with sqlite_hub.http() as c:
        r = c.post("/api/v1/accounts/setup", json=setup)
    assert r.status_code == 204, r.text
    # the client id and secret work from the CLI through the documented variables
    as_ito = Account(acct["client_id"], acct["client_secret"], "researcher")
    assert run(sqlite_hub, "sites", "list", account=as_ito).returncode == 0
    taken = run(sqlite_hub, "admin", "create-account", "--name", "Other", "--role", "researcher", "--institution", "kek",
                "--username", "ito")  # fmt: skip
    assert_one_clear_error(taken, "409 Conflict", "username 'ito' is taken")
    bad = run(sqlite_hub, "admin", "create-account", "--name", "X", "--role", "researcher", "--institution", "kek",
              "--username", "Bad Name")  # fmt: skip
    assert_one_clear_error(bad, "422 ValidationError", "username")


def test_site_edit_and_policy_from_the_cli(sqlite_hub: Hub) -> None:
    sqlite_hub.create_site("alpha", institution="kek")
    admin = sqlite_hub.account("site_admin", site="alpha")
    researcher = sqlite_hub.account("researcher", institution="kek")
    out = run(sqlite_hub, "sites", "edit", "alpha", "--location", "Tsukuba, Ibaraki", "--display-name", "KEK cryo-EM",
              account=admin)  # fmt: skip
    assert out.returncode == 0 and "display_name, location" in out.stdout, out.stdout + out.stderr
    with sqlite_hub.as_admin() as c:
        site = c.get("/api/v1/sites/alpha").json()
    assert (site["location"], site["display_name"]) == ("Tsukuba, Ibaraki", "KEK cryo-EM")
    assert_one_clear_error(run(sqlite_hub, "sites", "edit", "alpha", "--location", "x", account=researcher), "403 Forbidden")
    assert_one_clear_error(run(sqlite_hub, "sites", "edit", "alpha", account=admin), "nothing to change")

    out = run(sqlite_hub, "sites", "policy", "set", "alpha", "--cpu-share", "0.5", "--window", "mon-fri 19:00-07:00",
              "--timezone", "Asia/Tokyo", "--allow-institution", "kek", "--allow-institution", "osaka-u",
              "--auto-approve-institution", "osaka-u", account=admin)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(sqlite_hub, "sites", "policy", "set", "alpha", "--gpu-share", "0.25", "--json", account=admin)
    both = json.loads(out.stdout)
    p = both["policy"]
    assert (p["cpu_share"], p["gpu_share"], p["timezone"]) == (0.5, 0.25, "Asia/Tokyo"), "one option changes one setting"
    assert p["windows"] == [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "19:00", "end": "07:00"}]
    assert p["allowed_institutions"] == ["kek", "osaka-u"]
    assert both["share_policy"]["auto_approve_institutions"] == ["osaka-u"]
    shown = run(sqlite_hub, "sites", "policy", "show", "alpha", account=researcher)
    assert shown.returncode == 0 and "50%" in shown.stdout and "mon,tue,wed,thu,fri 19:00-07:00 (Asia/Tokyo)" in shown.stdout
    out = run(sqlite_hub, "sites", "policy", "set", "alpha", "--cpu-share", "0.1", account=researcher)
    assert_one_clear_error(out, "403 Forbidden")
    out = run(sqlite_hub, "sites", "policy", "set", "alpha", "--cpu-share", "2", account=admin)
    assert_one_clear_error(out, "422 ValidationError", "cpu_share")
    out = run(sqlite_hub, "sites", "policy", "set", "alpha", "--window", "weekends", account=admin)
    assert_one_clear_error(out, "mon-fri 19:00-07:00")


# ---------------------------------------------------------------- errors that showed internals


def test_hub_url_with_the_api_path_and_ttl_zero(sqlite_hub: Hub) -> None:
    sqlite_hub.create_site("alpha", institution="kek")
    out = run(sqlite_hub, "sites", "list", env={"CRYOMESH_HUB_URL": f"{sqlite_hub.url}/api/v1/"})
    assert out.returncode == 0 and "alpha" in out.stdout, out.stdout + out.stderr
    out = run(sqlite_hub, "sites", "list", env={"CRYOMESH_HUB_URL": f"{sqlite_hub.url}/somewhere"})
    assert_one_clear_error(out, "hub URL should be the base, e.g. https://hub.example.org")
    for ttl in ("0", "-5"):
        out = run(sqlite_hub, "admin", "enrollment-code", "alpha", "--ttl", ttl)
        assert_one_clear_error(out, f"--ttl {ttl}", "from 60")
        assert "XXXXX" not in out.stdout and "enrollment code for" not in out.stdout
    with sqlite_hub.as_admin() as c:
        r = c.post("/api/v1/sites/alpha/enrollment-codes", json={"ttl_s": 0})
    assert r.status_code == 422 and r.json()["error"] == "ValidationError" and "ttl_s" in r.json()["detail"]


# ---------------------------------------------------------------- tables at 80 columns


def test_tables_at_80_columns_keep_ids_and_site_names_whole(sqlite_hub: Hub, tmp_path: Path) -> None:
    owner, dest = "kyoto-university-gpu", "osaka-university-cpu"
    sqlite_hub.create_site(owner, institution="kyoto-university")
    sqlite_hub.create_site(dest, institution="osaka-university")
    with sqlite_hub.as_admin() as c:
        for s in (owner, dest):
            assert c.post(f"/api/v1/sites/{s}/activate").status_code == 200
    agent = sqlite_hub.enroll_agent(owner, tmp_path / "a")
    ds = register(sqlite_hub, agent, dataset_body(make_dataset_dir(tmp_path / "d"), visibility="network",
                                                   title="Apoferritin at 1.06 A on a Titan Krios G4")).json()  # fmt: skip
    me = sqlite_hub.account("researcher", institution="osaka-university")
    with sqlite_hub.as_(me) as c:
        job = c.post("/api/v1/jobs", json={"name": "a rather long job name", "kind": "generic.command",
                                           "command": ["true"], "resources": {"cpus": 1}}).json()  # fmt: skip
        req = c.post(f"/api/v1/datasets/{ds['id']}/share-requests", json={"dest_site": dest, "purpose": "refinement"})
    assert req.status_code == 201, req.text
    with sqlite_hub.as_(sqlite_hub.account("site_admin", site=owner)) as c:
        assert c.post(f"/api/v1/share-requests/{req.json()['id']}/approve", json={}).status_code == 200
    with sqlite_hub.as_admin() as c:
        transfers = c.get("/api/v1/transfers").json()
        jobs = c.get("/api/v1/jobs").json()["items"]
    assert transfers and jobs

    def at_80(*args: str) -> str:
        out = run(sqlite_hub, *args, env={"COLUMNS": "80"})
        assert out.returncode == 0, out.stdout + out.stderr
        assert all(len(line) <= 80 for line in out.stdout.splitlines()), out.stdout
        assert "…" not in out.stdout, out.stdout
        return out.stdout

    sites = at_80("sites", "list")
    assert owner in sites and dest in sites and "kyoto-university" in sites
    listed = at_80("jobs", "list")
    assert job["id"] in listed and len(job["id"]) == 32, "the whole id, ready to copy"
    datasets = at_80("datasets", "list")
    assert ds["id"] in datasets and owner in datasets
    shown = at_80("transfers", "list")
    assert transfers[0]["id"] in shown and ds["id"] in shown and owner in shown and dest in shown
    summary = at_80("network", "summary")
    assert owner in summary and dest in summary
    wide = run(sqlite_hub, "jobs", "list", env={"COLUMNS": "200"}).stdout
    assert "a rather long job name" in wide and "not shown at this width" not in wide
