"""An attempt's lease while its last report waits in the agent's outbox.

CI once saw a job run twice (tests/test_two_hubs.py): the attempt ended at the agent, which
stopped listing it in its heartbeats at once, and its last report reached the hub 2 s later
(the outbox had missed its wake-up); by then the attempt's 3 s lease had run out, the hub
had declared it lost and offered the job again. These tests drive the agent's own worker
(its outbox on disk, its send loop); the hub's side of a report is a stand-in client here,
which answers when the test lets it: what is tested is the agent's timing, not HTTP.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from shared.schemas.jobs import JobState
from site_agent.config import AgentSettings
from site_agent.executors.local import LocalExecutor
from site_agent.jobstore import JobHandle
from site_agent.work import Worker


class SlowHub:
    """Answers each report once the test releases it, recording when each arrived."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.received: list[tuple[str, float]] = []

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.received.append((path.split("/")[-2], time.monotonic()))
        if len(self.received) == 1:
            await self.release.wait()
        return {}


def _worker(tmp_path: Path, client: Any) -> Worker:
    settings = AgentSettings(agent={"state_dir": tmp_path / "state"})
    return Worker(settings, client, "alpha", LocalExecutor(settings.executor), asyncio.Event())


def _handle(worker: Worker, attempt_id: str) -> JobHandle:
    h = JobHandle(attempt_id, f"job-{attempt_id}", 1, "local", str(worker.workdir / attempt_id), {}, "kek", local_id="1")
    Path(h.workdir).mkdir(parents=True)
    worker.active[attempt_id] = h
    return h


def test_an_attempt_ended_here_is_held_until_the_hub_has_its_last_report(tmp_path: Path) -> None:
    worker = _worker(tmp_path, SlowHub())
    running, ended = _handle(worker, "a-running"), _handle(worker, "b-ended")
    worker._report(running, JobState.RUNNING)
    worker._report(ended, JobState.COMPLETE, exit_code=0)
    worker._close(ended)
    assert worker.held() == ["a-running", "b-ended"], "its lease is renewed while the report waits"
    for path, item in worker.store.pending():  # the hub took every report
        path.unlink()
        assert item["attempt_id"] in {"a-running", "b-ended"}
    assert worker.held() == ["a-running"], "once delivered, the attempt is no longer this site's to renew"


def test_a_report_queued_while_others_are_being_sent_goes_at_once(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[str, float]]:  # the reports sent before the agent stops
        hub = SlowHub()
        worker = _worker(tmp_path, hub)
        worker.outbox_idle_s = 600  # only a wake-up can send the second report within the deadline
        first, second = _handle(worker, "first"), _handle(worker, "second")
        worker._report(first, JobState.COMPLETE, exit_code=0)
        sending = asyncio.create_task(worker.outbox_loop())
        while not hub.received:  # the outbox is sending the first report, waiting for its answer
            await asyncio.sleep(0.01)
        worker._report(second, JobState.COMPLETE, exit_code=0)  # queued meanwhile: sets the wake-up
        hub.release.set()
        deadline = time.monotonic() + 30
        while len(hub.received) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        sent_while_running = list(hub.received)
        worker.stopping.set()
        worker.outbox_wakeup.set()
        await asyncio.wait_for(sending, 30)
        return sent_while_running

    received = asyncio.run(scenario())
    # Before the fix the wake-up set while the first was being sent was cleared after the
    # pass, and the second report waited for the outbox's idle timeout.
    assert [attempt for attempt, _ in received] == ["first", "second"], "the second report was sent when queued"
