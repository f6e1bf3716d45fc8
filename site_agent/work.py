"""The agent's job loops: take work from the hub, run it, report on it.

- ``work_loop`` long-polls for assignments; checks each against the site's own policy
  (``[policy]`` in site.toml) and refuses with a reason, or claims and starts it.
- ``monitor_loop`` polls the executor and queues a report for every change of state.
- ``outbox_loop`` sends queued reports in order, keeps them on disk until the hub
  acknowledges them, and stops a local job whose attempt the hub says is superseded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.schemas.jobs import KIND_SOFTWARE, Assignment, AssignmentBatch, JobSpec, JobState
from shared.schemas.pictures import PictureSet
from shared.schemas.software import MeasuredSoftware
from site_agent import presign, tes_work
from site_agent.backoff import Backoff, pause
from site_agent.client import HubClient
from site_agent.config import AgentSettings
from site_agent.dataset_upload import register as register_dataset
from site_agent.errors import AuthRefused, HubRefused, HubUnavailable
from site_agent.executors import Executor
from site_agent.executors.base import Status, tail
from site_agent.jobstore import JobHandle, JobStore
from site_agent.relion_site import refusal as relion_refusal
from site_agent.relion_site import write_plan
from site_agent.software import choose_build
from site_agent.staging import link_inputs
from site_agent.tes_datasets import OutputNotRegistered, register_outputs

log = logging.getLogger("cryomesh.agent.work")

#: How often the tail of a running job's output is sent to the hub (when it grew).
LOG_EVERY_S = 5.0
#: Longest a RELION job offered just after the agent started waits for the first measurement.
SOFTWARE_WAIT_S = 60.0


def policy_refusal(settings: AgentSettings, a: Assignment) -> str | None:
    p, r = settings.policy, a.spec.resources
    if p.allowed_kinds is not None and a.spec.kind.value not in p.allowed_kinds:
        return f"this site's agent does not run {a.spec.kind.value} jobs"
    if p.allowed_institutions is not None and a.institution not in p.allowed_institutions:
        return f"this site's agent does not run jobs for {a.institution}"
    if p.max_walltime_s is not None and r.walltime_s > p.max_walltime_s:
        return f"walltime {r.walltime_s}s exceeds this site's limit of {p.max_walltime_s}s"
    if p.max_cpus is not None and r.cpus > p.max_cpus:
        return f"{r.cpus} CPUs exceed this site's per-job limit of {p.max_cpus}"
    if p.max_gpus is not None and r.gpus > p.max_gpus:
        return f"{r.gpus} GPUs exceed this site's per-job limit of {p.max_gpus}"
    return tes_work.refusal(settings, a.spec)


class Worker:
    def __init__(
        self, settings: AgentSettings, client: HubClient, site: str, executor: Executor, stopping: asyncio.Event
    ) -> None:
        self.settings = settings
        self.client = client
        self.site = site
        self.executor = executor
        self.stopping = stopping
        self.store = JobStore(settings.agent.state_dir)
        self.workdir = settings.executor.workdir or settings.agent.state_dir / "work"
        self.active: dict[str, JobHandle] = {}
        self.signer = presign.Signer(settings)
        self.outbox_wakeup = asyncio.Event()
        self.outbox_idle_s = 2.0  # the outbox looks again this often even when not woken
        self.software: list[MeasuredSoftware] = []  # measured by the heartbeat loop
        # Set once the heartbeat loop has measured (or tried to): a RELION job waits for it.
        self.software_ready = threading.Event()
        if not settings.software.probe:
            self.software_ready.set()

    # -- restart ----------------------------------------------------------------

    def adopt_existing(self) -> None:
        """After a restart: follow the jobs this agent held, or report them lost."""
        for h in self.store.active():
            if self.executor.adopt(h):
                log.info("re-adopted attempt %s (%s %s)", h.attempt_id, self.executor.name, h.local_id)
                self.active[h.attempt_id] = h
            else:
                log.warning("attempt %s (%s) cannot be found after restart", h.attempt_id, h.local_id)
                self._report(h, JobState.SYSTEM_ERROR, reason="the job was lost while the agent was down")
                self._close(h)

    def held(self) -> list[str]:
        """Attempts whose leases the heartbeat renews: those running here, and those that
        ended here but whose last report the hub has not yet taken (the attempt is still
        claimed there; were its lease left to run out while the report waits in the outbox,
        the hub would declare it lost and run the job again elsewhere)."""
        waiting = {item["attempt_id"] for _, item in self.store.pending()}
        return [*self.active, *sorted(waiting - self.active.keys())]

    # -- reports ----------------------------------------------------------------

    def _report(self, h: JobHandle, state: JobState, with_tails: bool = False, **fields: Any) -> None:
        body: dict[str, Any] = {
            "state": state.value,
            "local_id": h.local_id,
            **{k: v for k, v in fields.items() if v is not None},
        }
        ending = state.final or state in (JobState.SYSTEM_ERROR, JobState.PREEMPTED)
        if with_tails or ending:
            body["stdout_tail"] = tail(Path(h.workdir) / "stdout.txt")
            body["stderr_tail"] = tail(Path(h.workdir) / "stderr.txt")
        if ending:
            body["ended_at"] = datetime.now(UTC).isoformat()
        if h.started_at:
            body["started_at"] = h.started_at
        if "node_started" in h.extra:  # the executor found out whether a node was started for it
            body["node_started"] = h.extra["node_started"]
        h.state = state.value
        self.store.next_report(h, body)
        self.outbox_wakeup.set()

    def _close(self, h: JobHandle) -> None:
        h.done = True
        self.store.save(h)
        self.active.pop(h.attempt_id, None)

    # -- taking work -------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        await pause(self.stopping, seconds)

    async def work_loop(self) -> None:
        backoff = Backoff(base=1.0, cap=self.settings.agent.max_backoff_s)
        while not self.stopping.is_set():
            try:
                data = await self.client.request("GET", f"/api/v1/sites/{self.site}/assignments?wait=20", timeout=40)
                backoff.reset()
            except HubUnavailable as exc:
                delay = backoff.next_delay(exc.retry_after)
                log.warning("polling for work failed (%s); retrying in %.1fs", exc, delay)
                await self._sleep(delay)
                continue
            except HubRefused as exc:
                if isinstance(exc, AuthRefused) and exc.pending:
                    # Only when the hub was away as the agent started; the heartbeat loop says so.
                    await self._sleep(5)
                    continue
                log.error("polling for work refused: %s", exc)
                await self._sleep(self.settings.agent.max_backoff_s)
                continue
            busy = False
            batch = AssignmentBatch.model_validate(data, extra="ignore")
            if batch.presign:
                await presign.answer(self.client, self.signer, batch.presign)
            for a in batch.assignments:
                if a.action == "cancel":
                    self.request_cancel(a.attempt_id)
                elif a.attempt_id in self.active:
                    continue
                elif self.full():
                    busy = True  # leave the offer: busy is not a refusal; it is claimed when a slot frees
                else:
                    await self.take(a)
            if busy:
                await self._sleep(self.settings.executor.poll_interval_s)

    def full(self) -> bool:
        """A local executor runs at most ``max_concurrent`` jobs; Slurm queues the rest itself."""
        return self.executor.name == "local" and len(self.active) >= self.settings.executor.max_concurrent

    async def take(self, a: Assignment) -> None:
        build = None
        if KIND_SOFTWARE[a.spec.kind] == "relion":
            if not self.software_ready.is_set():  # just started: the builds are being measured
                await asyncio.to_thread(self.software_ready.wait, SOFTWARE_WAIT_S)
            build = choose_build(self.software, a.spec)
        refusal = policy_refusal(self.settings, a) or relion_refusal(self.settings, a.spec, build, self.software)
        try:
            if refusal:
                log.info("refusing attempt %s: %s", a.attempt_id, refusal)
                await self.client.request("POST", f"/api/v1/attempts/{a.attempt_id}/refuse", json={"reason": refusal})
                return
            await self.client.request("POST", f"/api/v1/attempts/{a.attempt_id}/claim")
        except HubRefused as exc:
            log.info("could not take attempt %s: %s", a.attempt_id, exc.detail)
            return
        except HubUnavailable as exc:
            log.warning("hub unavailable while taking attempt %s: %s", a.attempt_id, exc)
            return
        h = JobHandle(
            attempt_id=a.attempt_id, job_id=a.job_id, attempt=a.attempt, executor=self.executor.name,
            workdir=str(self.workdir / f"{a.job_id}-{a.attempt}"), spec=a.spec.model_dump(mode="json"), institution=a.institution,
        )  # fmt: skip
        h.extra["inputs"] = a.inputs
        if a.partition:
            h.extra["partition"] = a.partition  # the broker's choice, one this agent reported (sbatch -p)
        if build is not None:
            h.extra["software_path"] = build.path
        self.store.save(h)  # held on disk before anything starts, so a restart finds it
        try:
            tes_work.prepare(self.settings, h, a.spec)
            if a.spec.relion is not None:
                write_plan(self.settings, Path(h.workdir), a.spec, build)
            if KIND_SOFTWARE[a.spec.kind] == "relion":
                await asyncio.to_thread(
                    link_inputs, Path(h.workdir), [a.inputs[d.dataset] for d in a.spec.inputs if d.dataset in a.inputs]
                )
            h.local_id = await asyncio.to_thread(self.executor.submit, h, JobSpec.model_validate(h.spec))
        except Exception as exc:  # the site could not start it: a system error, retried elsewhere
            log.exception("could not start attempt %s", a.attempt_id)
            self._report(h, JobState.SYSTEM_ERROR, reason=f"{self.executor.name} could not start the job: {exc}")
            self._close(h)
            return
        # Followed by the monitor only once it has really started: before that there is
        # no process to look at, and "no process" would read as a lost job.
        self.active[h.attempt_id] = h
        log.info("started attempt %s of job %s as %s %s", a.attempt_id, a.job_id, self.executor.name, h.local_id)
        self._report(h, JobState.INITIALIZING)

    def request_cancel(self, attempt_id: str) -> None:
        h = self.active.get(attempt_id)
        if h is None or h.cancel_requested:
            return
        log.info("canceling attempt %s (%s)", attempt_id, h.local_id)
        h.cancel_requested = True
        self.store.save(h)
        self.executor.cancel(h)

    # -- following work ----------------------------------------------------------

    async def monitor_loop(self) -> None:
        while not self.stopping.is_set():
            for h in list(self.active.values()):
                if h.local_id is None:
                    continue
                try:
                    status = await asyncio.to_thread(self.executor.poll, h)
                except Exception:
                    log.exception("could not check attempt %s", h.attempt_id)
                    continue
                if status.state.value == h.state and not status.state.final:
                    self._stream_tail(h)
                    continue
                if status.state is JobState.RUNNING and not h.started_at:
                    h.started_at = datetime.now(UTC).isoformat()
                status, tes = tes_work.finish(h, status)
                if status.state is JobState.COMPLETE and tes is not None:
                    try:
                        await register_outputs(self.client, self.store, h, tes)
                    except OutputNotRegistered as exc:
                        log.warning("task %s: %s", h.job_id, exc)
                        status = Status(JobState.SYSTEM_ERROR, status.exit_code, str(exc)[:2000])
                        tes.setdefault("system_logs", []).append(f"system error: {exc}")
                reason = status.reason
                if status.state is JobState.COMPLETE:
                    reason = await self._register_output(h) or reason
                    await self._send_pictures(h)
                self._report(h, status.state, exit_code=status.exit_code, reason=reason, tes=tes)
                if status.state.final or status.state in (JobState.SYSTEM_ERROR, JobState.PREEMPTED):
                    log.info("attempt %s ended: %s", h.attempt_id, status.state.value)
                    self._close(h)
            await self._sleep(self.settings.executor.poll_interval_s)

    async def _register_output(self, h: JobHandle) -> str | None:
        """Register the finished job's output directory as a dataset, with its provenance."""
        spec = JobSpec.model_validate(h.spec)
        if spec.outputs is None or h.extra.get("output_dataset"):
            return None
        out = spec.outputs
        meta = {
            "title": out.title,
            "description": out.description,
            "experiment_type": out.experiment_type.value,
            "visibility": out.visibility.value,
            "source_datasets": [d.dataset for d in spec.inputs],
            "source_job": h.job_id,
        }
        try:
            ds = await register_dataset(self.client, Path(h.workdir) / out.path, meta)
        except (OSError, ValueError, HubRefused, HubUnavailable) as exc:
            log.warning("output of job %s not registered: %s", h.job_id, exc)
            return f"completed; its output was not registered as a dataset: {exc}"[:2000]
        h.extra["output_dataset"] = ds["id"]
        self.store.save(h)
        log.info("output of job %s registered as dataset %s", h.job_id, ds["id"])
        return f"completed; output registered as dataset {ds['id']}"

    async def _send_pictures(self, h: JobHandle) -> None:
        """Thumbnails of a finished job's class averages, and of its output dataset, to the hub.

        Made here from the output (``site_agent.pictures``); only small PNGs leave the site.
        Pictures are a courtesy: a failure is logged and the job's result stands."""
        if h.extra.get("pictures_sent"):
            return
        # Imported here: numpy, mrcfile, gemmi and Pillow are a fifth of the agent's start-up,
        # and only a finished job's output needs them.
        from site_agent.pictures import class_pictures, dataset_pictures

        spec = JobSpec.model_validate(h.spec)
        out = Path(h.workdir) / (spec.outputs.path if spec.outputs else "output")
        sends: list[tuple[str, Any]] = [(f"/api/v1/jobs/{h.job_id}/pictures", class_pictures)]
        if ds := h.extra.get("output_dataset"):
            sends.append((f"/api/v1/datasets/{ds}/pictures", dataset_pictures))
        for route, make in sends:
            try:
                pictures = await asyncio.to_thread(make, out)
                if pictures:
                    body = PictureSet(pictures=pictures).model_dump(mode="json")
                    await self.client.request("PUT", route, json=body)
                    log.info("sent %d picture(s) to %s", len(pictures), route)
            except (OSError, ValueError, RuntimeError, HubRefused, HubUnavailable) as exc:
                log.warning("pictures for %s not sent: %s", route, exc)
        h.extra["pictures_sent"] = True
        self.store.save(h)

    def _stream_tail(self, h: JobHandle) -> None:
        """While a job runs, send the tail of its output every ``LOG_EVERY_S`` if it grew."""
        if h.state != JobState.RUNNING.value or time.monotonic() - h.extra.get("tail_sent_at", 0.0) < LOG_EVERY_S:
            return
        size = sum(f.stat().st_size for f in (Path(h.workdir) / "stdout.txt", Path(h.workdir) / "stderr.txt") if f.exists())
        if size == h.extra.get("tail_size", 0):
            return
        h.extra["tail_sent_at"] = time.monotonic()
        h.extra["tail_size"] = size
        self._report(h, JobState.RUNNING, with_tails=True)

    async def outbox_loop(self) -> None:
        backoff = Backoff(base=0.5, cap=self.settings.agent.max_backoff_s)
        while True:
            sent_all = True
            retry_after: float | None = None
            # Cleared before the outbox is read, not after: a report queued while this pass
            # sends the others wakes the next pass at once (cleared after, its wake-up was
            # lost and it waited out ``outbox_idle_s``; long enough, near the end of a short
            # lease, for the hub to declare the attempt lost).
            self.outbox_wakeup.clear()
            for path, item in self.store.pending():
                try:
                    ack = await self.client.request("POST", f"/api/v1/attempts/{item['attempt_id']}/reports", json=item["body"])
                except HubUnavailable as exc:
                    log.warning("report not delivered (%s); kept in the outbox", exc)
                    sent_all, retry_after = False, exc.retry_after
                    break
                except HubRefused as exc:
                    log.warning("report for attempt %s refused (%s); dropping it", item["attempt_id"], exc.detail)
                    if exc.status == 409:  # superseded: this site must stop working on it
                        self.request_cancel(item["attempt_id"])
                    path.unlink(missing_ok=True)
                    continue
                path.unlink(missing_ok=True)
                if ack and ack.get("cancel"):
                    self.request_cancel(item["attempt_id"])
            if self.stopping.is_set() and (sent_all or not self.store.pending()):
                return
            if sent_all:
                backoff.reset()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.outbox_wakeup.wait(), timeout=self.outbox_idle_s)
            else:
                await self._sleep(backoff.next_delay(retry_after))
                if self.stopping.is_set():
                    return
