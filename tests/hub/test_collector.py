"""The hub process's garbage collector is settled at start-up (hub/app.py ``settle_garbage_collector``).

Each check runs in a fresh Python process: freezing the collector's objects in the test
process would keep pytest's own objects out of its reach for the rest of the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub.app import GC_YOUNG_THRESHOLD

PROBE = """
import gc, json, sys
from fastapi.testclient import TestClient
from hub.app import create_app
from hub.db import migrate
from hub.settings import HubSettings

url = sys.argv[1]
migrate(url)
settings = HubSettings(database_url=url, sweep_interval_s=3600)
before = {"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}
app = create_app(settings, settle_collector=sys.argv[2] == "settle")
with TestClient(app) as client:
    assert client.get("/healthz").status_code == 200
    during = {"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}
print(json.dumps({"before": before, "during": during}))
"""


def _probe(tmp_path: Path, mode: str) -> dict[str, dict[str, int]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, f"sqlite:///{tmp_path / 'hub.db'}", mode],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_serving_hub_freezes_what_it_built_and_collects_young_objects_less_often(tmp_path: Path) -> None:
    seen = _probe(tmp_path, "settle")
    assert seen["before"] == {"threshold": 700, "frozen": 0}
    assert seen["during"]["threshold"] == GC_YOUNG_THRESHOLD
    assert seen["during"]["frozen"] > 10_000, "the objects built at start-up are out of the collector's reach"


def test_an_app_built_without_it_leaves_the_collector_alone(tmp_path: Path) -> None:
    seen = _probe(tmp_path, "plain")
    assert seen["during"] == {"threshold": 700, "frozen": 0}


def test_hub_serve_builds_a_settled_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``cryomesh hub serve`` (one process) hands uvicorn an app that settles the collector;
    the server itself is not started here (``uvicorn.Server.run`` is replaced)."""
    import uvicorn
    from typer.testing import CliRunner

    from cryomesh_cli.main import app as cli

    served: list[object] = []

    def run(self: uvicorn.Server) -> None:
        served.append(self.config.app)

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setenv("CRYOMESH_DATABASE_URL", f"sqlite:///{tmp_path / 'hub.db'}")
    result = CliRunner().invoke(cli, ["hub", "serve"])
    assert result.exit_code == 0, result.output
    [hub] = served
    assert hub.state.settle_collector is True  # type: ignore[attr-defined]
