"""The hub's settings file refuses keys that are not settings, naming the file and the
setting probably meant; CRYOMESH_* environment variables that are not settings (the CLI's,
the agent's) are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("portt = 8781\n", "portt: unknown field; did you mean 'port'?"),
        ('public_ulr = "https://hub.example.org"\n', "public_ulr: unknown field; did you mean 'public_url'?"),
        (
            '[[external_issuers]]\nissuer = "https://idp.example"\njwks_uri = "https://idp.example/jwks"\naudience = "cm"\n'
            'institution_clam = "org"\n',
            "external_issuers.0.institution_clam: unknown field; did you mean 'institution_claim'?",
        ),
    ],
)
def test_an_unknown_key_in_the_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, problem: str) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(toml)
    monkeypatch.setenv("CRYOMESH_CONFIG", str(config))
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value) == f"{config}: {problem}"


def test_other_cryomesh_variables_are_not_settings_and_not_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "hub.toml"
    config.write_text("port = 8781\n")
    monkeypatch.setenv("CRYOMESH_CONFIG", str(config))
    for name in ("CRYOMESH_HUB_URL", "CRYOMESH_CLIENT_ID", "CRYOMESH_AGENT_STATE_DIR", "CRYOMESH_SOMETHING_ELSE"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("CRYOMESH_MISSED_HEARTBEATS", "4")
    s = load_settings()
    assert s.port == 8781 and s.missed_heartbeats == 4


def test_the_shipped_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYOMESH_CONFIG", str(REPO / "deploy" / "hub.toml"))
    assert load_settings().public_url == "https://hub.example.org"


def test_hub_commands_say_it_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'data_dir = "{tmp_path}"\nmissed_heartbeat = 5\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYOMESH_")}
    out = subprocess.run(
        [sys.executable, "-m", "cryomesh_cli.main", "hub", "migrate"],
        env={**env, "CRYOMESH_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert f"{config}: missed_heartbeat: unknown field; did you mean 'missed_heartbeats'?" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr and len(out.stdout.strip().splitlines()) == 1, out.stdout
    assert not (tmp_path / "hub.db").exists(), "nothing was done with the refused settings"


def test_uplink_sharing_is_off_by_default_and_reaches_every_session_of_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``transfer_rate_shared_per_uplink`` rides on the hub's engine: the sessions that write
    and those that only read (``hub.db.reader``) see the same value (hub/transfers/links.py)."""
    from sqlmodel import Session

    from hub.app import create_app
    from hub.db import reader
    from hub.transfers.links import uplinks_shared
    from tests.helpers import hub_settings

    config = tmp_path / "hub.toml"
    config.write_text("port = 8781\n")
    monkeypatch.setenv("CRYOMESH_CONFIG", str(config))
    assert load_settings().transfer_rate_shared_per_uplink is False
    monkeypatch.setenv("CRYOMESH_TRANSFER_RATE_SHARED_PER_UPLINK", "true")
    assert load_settings().transfer_rate_shared_per_uplink is True

    for on in (True, False):
        app = create_app(hub_settings(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path, 8781, transfer_rate_shared_per_uplink=on))
        engine = app.state.engine
        try:
            with Session(engine) as writes, Session(reader(engine)) as reads:
                assert (uplinks_shared(writes), uplinks_shared(reads)) == (on, on)
        finally:
            engine.dispose()
