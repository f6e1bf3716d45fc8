"""`cryomesh hub serve`: how it asks uvicorn to serve (the server itself is exercised by every
test that starts a hub process; `--workers 2` in tests/test_two_hubs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import hub.db
import hub.logging
from cryomesh_cli import main as cli_main
from tests.helpers import hub_settings


def test_workers_are_given_a_minute_to_answer_the_supervisors_first_ping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's supervisor kills a worker that has not answered its health ping within
    ``timeout_worker_healthcheck`` (5 s by default), counted from the spawn, before the worker
    can answer. A worker that took longer to import on a busy host was killed, and so was
    each replacement: `hub serve --workers 2` never became ready (reproduced with 1 s)."""
    served: dict[str, Any] = {}
    settings = hub_settings("postgresql+psycopg://cryomesh@127.0.0.1:5432/cryomesh", tmp_path, 8000)
    monkeypatch.setattr(cli_main, "_hub_settings", lambda: settings)
    monkeypatch.setattr(hub.db, "check_database", lambda url: None)
    monkeypatch.setattr(hub.logging, "configure_logging", lambda *args: None)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))

    cli_main.hub_serve(host=None, port=None, migrate=False, workers=2)

    assert served["app"] == "hub.app:worker_app" and served["workers"] == 2
    assert served["timeout_worker_healthcheck"] >= 60
    assert (served["loop"], served["http"]) == ("uvloop", "httptools")
    # The hub keeps an idle connection open longer than httpx's clients do (5 s), so a client
    # never sends on a connection the hub is closing (httpx.ReadError under load).
    assert served["timeout_keep_alive"] > httpx.Limits().keepalive_expiry
