"""Waiting long-polls: the database is read when a poll starts and when it is woken, plus
one query per second for all the polls a hub process holds, not one per poll per second."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.helpers import heartbeat_body, running_hub, waiting_polls
from tests.services import wait_for

# Slow: the polls wait out their 20 s (so none ends while observed). Marked so, it starts among
# the first tests of a run, its wait beside other tests' work instead of alone at the end.
pytestmark = pytest.mark.slow

POLLERS = 12


def test_waiting_polls_share_one_recheck_per_second(db_url: str, tmp_path: Path) -> None:
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600, long_poll_recheck_s=1.0) as hub:
        tokens = []
        for i in range(POLLERS):
            site = hub.create_site(f"site-{i}")
            tokens.append(hub.agent_token(hub.enroll_agent(site["name"], tmp_path / f"agent-{i}")))
            with hub.http(tokens[-1]) as c:
                assert c.post(f"/api/v1/sites/site-{i}/heartbeat", json=heartbeat_body()).status_code == 200
        answers: list[int] = []

        def poll(i: int) -> None:
            with hub.http(tokens[i]) as c:
                r = c.get(f"/api/v1/sites/site-{i}/assignments", params={"wait": 20}, timeout=60)  # no poll ends while observed
                answers.append(r.status_code)

        threads = [threading.Thread(target=poll, args=(i,)) for i in range(POLLERS)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: waiting_polls(hub.url) == POLLERS, 60, "every poll waiting")
            queries: list[str] = []

            def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if "attempts" in statement:
                    queries.append(statement)

            event.listen(Engine, "before_cursor_execute", record)
            started = time.monotonic()
            try:
                time.sleep(3)  # observing a span of time, not waiting for an event
            finally:
                event.remove(Engine, "before_cursor_execute", record)
            seconds = time.monotonic() - started
        finally:
            for t in threads:
                t.join(60)
    assert answers == [200] * POLLERS
    # Before: every waiting poll re-read its site's work each second (12 pollers: ~36 queries).
    assert len(queries) <= seconds / 1.0 + 1, f"{len(queries)} queries in {seconds:.1f} s for {POLLERS} waiting polls: {queries}"
