"""The `cryomesh` command line against a real hub: readable output, scriptable JSON,
clear errors with a non-zero exit."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import Account, Hub, heartbeat_body, site_body


def run(
    hub: Hub, *args: str, account: Account | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    account = account or hub.admin
    full_env = {
        **os.environ,
        "CRYOMESH_HUB_URL": hub.url,
        "CRYOMESH_CLIENT_ID": account.client_id,
        "CRYOMESH_CLIENT_SECRET": account.client_secret,
        "COLUMNS": "200",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "cryomesh_cli.main", *args], env=full_env, capture_output=True, text=True, timeout=60
    )


def test_admin_workflow(sqlite_hub: Hub, tmp_path: Path) -> None:
    spec = tmp_path / "site.yaml"
    spec.write_text(yaml.safe_dump(site_body("kek-cryo", institution="kek")))
    out = run(sqlite_hub, "admin", "create-site", str(spec))
    assert out.returncode == 0, out.stderr
    assert "site kek-cryo registered (pending)" in out.stdout

    plain = run(sqlite_hub, "admin", "enrollment-code", "kek-cryo")
    assert plain.returncode == 0 and f"cryomesh agent enroll --hub {sqlite_hub.url} --code" in plain.stdout
    out = run(sqlite_hub, "admin", "enrollment-code", "kek-cryo", "--json")
    code = json.loads(out.stdout)["code"]
    state = tmp_path / "agent-state"
    out = run(sqlite_hub, "agent", "enroll", "--hub", sqlite_hub.url, "--code", code, "--state-dir", str(state))
    assert out.returncode == 0, out.stdout + out.stderr
    assert stat.S_IMODE((state / "agent_key.json").stat().st_mode) == 0o600

    out = run(sqlite_hub, "admin", "enrollments")
    assert "kek-cryo" in out.stdout and "pending" in out.stdout
    enrollment_id = json.loads(run(sqlite_hub, "admin", "enrollments", "--json").stdout)[0]["id"]
    out = run(sqlite_hub, "admin", "approve", str(enrollment_id))
    assert out.returncode == 0 and "approved" in out.stdout

    out = run(
        sqlite_hub, "admin", "create-account", "--name", "Dr Researcher", "--role", "researcher", "--institution", "kek", "--json"
    )
    researcher = json.loads(out.stdout)
    assert researcher["role"] == "researcher" and researcher["client_secret"]
    out = run(
        sqlite_hub, "admin", "create-account", "--name", "pipeline", "--role", "researcher", "--institution", "kek", "--service"
    )
    assert out.returncode == 0 and "client secret" in out.stdout

    as_researcher = Account(researcher["client_id"], researcher["client_secret"], "researcher")
    out = run(sqlite_hub, "sites", "list", account=as_researcher)
    assert out.returncode == 0 and "kek-cryo" in out.stdout and "a100x8" in out.stdout
    out = run(sqlite_hub, "sites", "show", "kek-cryo", account=as_researcher)
    assert "partitions" in out.stdout and "relion" in out.stdout

    out = run(sqlite_hub, "admin", "suspend-site", "kek-cryo", account=as_researcher)
    assert out.returncode == 1 and "403 Forbidden" in out.stdout


def test_network_summary_table_and_json(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site("alpha")
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "a")
    with sqlite_hub.http(sqlite_hub.agent_token(agent)) as c:
        assert c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(64, 40, ("a100", 8, 3))).status_code == 200
    out = run(sqlite_hub, "network", "summary")
    assert out.returncode == 0
    assert "alpha" in out.stdout and "40/64" in out.stdout and "a100 3/8" in out.stdout and "online" in out.stdout
    summary = json.loads(run(sqlite_hub, "network", "summary", "--json").stdout)
    assert summary["cpus_free"] == 40 and summary["gpus"]["a100"] == {"total": 8, "free": 3}
    shown = run(sqlite_hub, "sites", "show", "alpha")
    assert "capacity" in shown.stdout and "40/24/64" in shown.stdout
    sqlite_hub.create_site("bravo")
    page = run(sqlite_hub, "network", "summary", "--limit", "1", "--offset", "1")
    assert page.returncode == 0 and "bravo" in page.stdout and "sites 2-2 of 2 listed" in page.stdout, page.stdout
    totals = json.loads(run(sqlite_hub, "network", "summary", "--limit", "0", "--json").stdout)
    assert totals["sites"] == [] and totals["sites_total"] == 2 and totals["cpus_free"] == 40
    pending = json.loads(run(sqlite_hub, "network", "summary", "--status", "pending", "--json").stdout)
    assert [s["name"] for s in pending["sites"]] == ["bravo"]
    refused = run(sqlite_hub, "network", "summary", "--limit", "501")
    assert refused.returncode != 0 and "limit" in refused.stderr + refused.stdout


def test_bad_credentials_and_missing_credentials(sqlite_hub: Hub, tmp_path: Path) -> None:
    out = run(sqlite_hub, "sites", "list", account=Account(sqlite_hub.admin.client_id, "wrong", "x"))
    assert out.returncode == 1 and "sign-in refused" in out.stdout and "invalid_client" in out.stdout
    env = {
        "CRYOMESH_HUB_URL": "",
        "CRYOMESH_CLIENT_ID": "",
        "CRYOMESH_CLIENT_SECRET": "",
        "CRYOMESH_CREDENTIALS": str(tmp_path / "none.json"),
    }
    out = run(sqlite_hub, "sites", "list", env=env)
    assert out.returncode == 1 and "no credentials" in out.stdout


def test_unreachable_hub_is_a_clear_error(sqlite_hub: Hub) -> None:
    out = run(sqlite_hub, "sites", "list", env={"CRYOMESH_HUB_URL": "http://127.0.0.1:9"})
    assert out.returncode == 1 and "cannot reach the hub" in out.stdout


def test_bootstrap_writes_private_credentials(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CRYOMESH_DATA_DIR": str(tmp_path / "data"),
        "CRYOMESH_CREDENTIALS": str(tmp_path / "creds.json"),
        "CRYOMESH_DATABASE_URL": "",
    }
    env.pop("CRYOMESH_DATABASE_URL")
    first = subprocess.run(
        [sys.executable, "-m", "cryomesh_cli.main", "admin", "bootstrap", "--name", "Ada"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert stat.S_IMODE((tmp_path / "creds.json").stat().st_mode) == 0o600
    assert (tmp_path / "data" / "hub.db").exists(), "the embedded default is SQLite under CRYOMESH_DATA_DIR"
    again = subprocess.run(
        [sys.executable, "-m", "cryomesh_cli.main", "admin", "bootstrap", "--name", "Eve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "already exists" in again.stdout


def test_agent_discover_prints_a_snapshot(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(f'[agent]\nstate_dir = "{tmp_path}"\n[discovery]\nbackend = "local"\npartition = "here"\n')
    out = subprocess.run(
        [sys.executable, "-m", "cryomesh_cli.main", "agent", "discover", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert snap["partitions"][0]["name"] == "here" and snap["partitions"][0]["cpus_total"] == os.cpu_count()
    bad = tmp_path / "bad.toml"
    bad.write_text('[discovery]\nbackend = "pbs"\n')
    out = subprocess.run(
        [sys.executable, "-m", "cryomesh_cli.main", "agent", "discover", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "backend" in out.stdout
