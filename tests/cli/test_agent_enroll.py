"""`cryomesh agent enroll` against a real hub: the thumbprint shown whole on both sides, and
an existing key never replaced by accident."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from site_agent.credentials import load_credentials, load_key
from tests.helpers import Hub


def cli(hub: Hub, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CRYOMESH_HUB_URL": hub.url,
        "CRYOMESH_CLIENT_ID": hub.admin.client_id,
        "CRYOMESH_CLIENT_SECRET": hub.admin.client_secret,
        "COLUMNS": str(columns),
    }
    return subprocess.run([sys.executable, "-m", "cryomesh_cli.main", *args], env=env, capture_output=True, text=True, timeout=60)


def enroll(hub: Hub, state: Path, *extra: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    code = hub.enrollment_code("kek")
    return cli(hub, "agent", "enroll", "--hub", hub.url, "--code", code, "--state-dir", str(state), *extra, columns=columns)


def test_both_sides_show_the_whole_thumbprint(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("kek")
    state = tmp_path / "state"
    out = enroll(sqlite_hub, state)
    assert out.returncode == 0, out.stdout + out.stderr
    thumbprint = load_key(state).thumbprint()
    assert f"key thumbprint: {thumbprint}" in out.stdout, out.stdout

    listing = cli(sqlite_hub, "admin", "enrollments")  # an 80-column terminal
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert thumbprint in listing.stdout, listing.stdout
    rows = json.loads(cli(sqlite_hub, "admin", "enrollments", "--json").stdout)
    assert [r["key_thumbprint"] for r in rows] == [thumbprint]


def test_enroll_again_refuses_to_replace_a_key_unless_forced(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("kek")
    state = tmp_path / "state"
    assert enroll(sqlite_hub, state).returncode == 0
    creds = load_credentials(state)
    old = load_key(state).thumbprint()
    with sqlite_hub.as_admin() as c:
        assert c.post(f"/api/v1/enrollments/{creds.enrollment_id}/approve").status_code == 200

    again = enroll(sqlite_hub, state, columns=1000)
    assert again.returncode == 1
    message = again.stdout.strip()
    assert message.startswith("error:") and "\n" not in message and "Traceback" not in again.stderr, again
    for what in (creds.client_id, "site kek", f"enrollment {creds.enrollment_id}", old, "approval", "offline", "--force"):
        assert what in message, (what, message)
    assert load_key(state).thumbprint() == old, "the approved key is untouched"
    assert load_credentials(state) == creds
    with sqlite_hub.as_admin() as c:
        assert c.get("/api/v1/enrollments", params={"status": "pending"}).json() == [], "nothing was sent to the hub"

    forced = enroll(sqlite_hub, state, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    new = load_key(state).thumbprint()
    assert new != old and new in forced.stdout
    assert f"replaced agent {creds.client_id}" in forced.stdout
    with sqlite_hub.as_admin() as c:
        [pending] = c.get("/api/v1/enrollments", params={"status": "pending"}).json()
    assert pending["key_thumbprint"] == new and load_credentials(state).enrollment_id == pending["id"]
