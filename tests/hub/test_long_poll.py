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
        # Every query of the attempts table, timed, from before the first poll: a poll counts as
        # waiting from before its first read (it registers first, so a commit between the read
        # and the wait is not missed), so on a busy machine some first reads come after the
        # hub reports every poll waiting.
        queries: list[tuple[float, str]] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "attempts" in statement:
                queries.append((time.monotonic(), statement))

        def poll(i: int) -> None:
            with hub.http(tokens[i]) as c:
                r = c.get(f"/api/v1/sites/site-{i}/assignments", params={"wait": 20}, timeout=60)  # no poll ends while observed
                answers.append(r.status_code)

        threads = [threading.Thread(target=poll, args=(i,)) for i in range(POLLERS)]
        event.listen(Engine, "before_cursor_execute", record)
        try:
            for t in threads:
                t.start()
            wait_for(lambda: waiting_polls(hub.url) == POLLERS, 60, "every poll waiting")
            started = time.monotonic()
            time.sleep(4)  # observing a span of time, not waiting for an event
            ended = time.monotonic()
        finally:
            event.remove(Engine, "before_cursor_execute", record)
            for t in threads:
                t.join(60)
    assert answers == [200] * POLLERS
    own = [q for _, q in queries if "attempts.site_id = " in q]  # one poll reading its own site's work
    shared = [q for t, q in queries if started <= t <= ended and "attempts.site_id IN" in q]  # the recheck for all
    # Before: every waiting poll re-read its site's work each second (12 pollers, 4 s: ~48 reads).
    assert len(own) == POLLERS, f"each poll reads its own site's work once, when it starts: {len(own)} reads"
    assert len(shared) <= (ended - started) / 1.0 + 1, f"{len(shared)} rechecks in {ended - started:.1f} s: {shared}"
    assert len(queries) == len(own) + len([q for _, q in queries if "attempts.site_id IN" in q]), "no other reads"
