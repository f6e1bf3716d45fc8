"""The agent's transfer loop: ask the hub for this site's part in each transfer and do it.

As the source: publish the files to the exchange store, keep the published copy readable
(fresh presigned URLs before the old ones expire), send again any file the destination
found corrupt, and remove the published copy once the transfer has ended.

As the destination: fetch into a staging directory, check every file against the manifest,
report corrupt files (they are sent again), and only when every file checks out move the
copy into place and report it; the hub then marks the replica AVAILABLE.

Each side runs as one task per transfer and attempt; a newer attempt on the hub (after a
stall or a failure) replaces the task, which resumes from its journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from shared.schemas.transfers import FileError, TransferState, TransferWork
from site_agent.backoff import Backoff, pause
from site_agent.client import HubClient
from site_agent.config import AgentSettings
from site_agent.errors import HubRefused, HubUnavailable
from site_agent.transfers.engine import Cancelled, Outcome, Progress, RateLimit, fetch, publish
from site_agent.transfers.exchange import MIB, TransferError, publisher_for, reader_for, safe_join
from site_agent.transfers.journal import Journal

log = logging.getLogger("cryomesh.agent.transfers")

T = TypeVar("T")
Key = tuple[str, str]  # (transfer id, role)
#: Consecutive failing fetch passes before the destination gives up on an attempt.
MAX_FAILED_PASSES = 3


class Superseded(Exception):
    """The hub no longer wants this side of the transfer (a newer attempt, or it ended)."""


@dataclass
class _Task:
    attempt: int
    cancel: threading.Event
    task: asyncio.Task[None]


class TransferWorker:
    def __init__(self, settings: AgentSettings, client: HubClient, site: str, stopping: asyncio.Event) -> None:
        self.cfg = settings.transfers
        self.state_dir = settings.agent.state_dir
        self.journals = self.state_dir / "transfers"
        self.incoming = self.cfg.incoming or self.state_dir / "datasets"
        self.client = client
        self.site = site
        self.stopping = stopping
        self.tasks: dict[Key, _Task] = {}
        self.latest: dict[Key, TransferWork] = {}
        self.updated = asyncio.Event()
        self.limit = RateLimit(self.cfg.bandwidth_mb_s * 1e6 if self.cfg.bandwidth_mb_s else None)
        self.moving: dict[Key, Progress] = {}  # sides moving data now, for metrics
        self.moved_total = 0  # bytes moved by finished passes

    def rate(self) -> float:
        return sum(p.rate() for p in list(self.moving.values()))

    def active(self) -> int:
        return sum(1 for t in self.tasks.values() if not t.task.done())

    # -- the loop --------------------------------------------------------------------

    async def loop(self) -> None:
        backoff = Backoff(base=1.0, cap=max(self.cfg.poll_interval_s * 4, 5))
        try:
            while not self.stopping.is_set():
                try:
                    data = await self.client.request("GET", f"/api/v1/sites/{self.site}/transfers")
                    backoff.reset()
                except (HubUnavailable, HubRefused) as exc:
                    delay = backoff.next_delay(getattr(exc, "retry_after", None))
                    log.warning("asking for transfer work failed (%s); again in %.1f s", exc, delay)
                    await pause(self.stopping, delay)
                    continue
                self.sync([TransferWork.model_validate(w) for w in data])
                await self.remove_retired()
                await pause(self.stopping, self.cfg.poll_interval_s)
        finally:
            await self.stop_all()

    def sync(self, work: list[TransferWork]) -> None:
        seen: set[Key] = set()
        for w in work:
            key: Key = (w.transfer.id, str(w.role))
            seen.add(key)
            self.latest[key] = w
            running = self.tasks.get(key)
            if running and running.attempt != w.transfer.attempt:
                log.info("transfer %s (%s): attempt %d replaces %d", key[0], key[1], w.transfer.attempt, running.attempt)
                running.cancel.set()
                running = None
            if running is None or running.task.done():
                cancel = threading.Event()
                side = self._source(key, cancel) if w.role == "source" else self._dest(key, cancel)
                self.tasks[key] = _Task(w.transfer.attempt, cancel, asyncio.create_task(self._guarded(key, side)))
        for key, t in list(self.tasks.items()):
            if key not in seen:
                t.cancel.set()
                if t.task.done():
                    del self.tasks[key]
        self.updated.set()
        self.updated = asyncio.Event()

    async def remove_retired(self) -> None:
        """Delete copies the hub retired (request revoked or expired): only under ``incoming``,
        never a site's own data elsewhere."""
        try:
            retired = await self.client.request("GET", f"/api/v1/sites/{self.site}/replicas?state=DELETING")
        except (HubUnavailable, HubRefused) as exc:
            log.warning("could not list retired copies: %s", exc)
            return
        for rep in retired:
            where = Path(rep["location"])
            incoming = self.incoming.resolve()
            if not where.resolve().is_relative_to(incoming) or where.resolve() == incoming:
                log.warning("not deleting %s for %s: it is outside %s", where, rep["dataset"], incoming)
                continue
            await asyncio.to_thread(shutil.rmtree, where, True)
            try:
                await self.client.request("DELETE", f"/api/v1/sites/{self.site}/replicas/{rep['dataset']}")
                log.info("retired copy of %s removed from %s", rep["dataset"], where)
            except (HubUnavailable, HubRefused) as exc:
                log.warning("removed %s but could not tell the hub: %s", where, exc)

    async def stop_all(self) -> None:
        for t in self.tasks.values():
            t.cancel.set()
        tasks = [t.task for t in self.tasks.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _guarded(self, key: Key, side: Awaitable[None]) -> None:
        try:
            await side
        except (Cancelled, Superseded):
            log.info("transfer %s (%s): stopped", *key)
        except Exception:
            log.exception("transfer %s (%s) failed in the agent", *key)

    async def _next_update(self, cancel: threading.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.updated.wait(), timeout=self.cfg.poll_interval_s * 2)
        if cancel.is_set() or self.stopping.is_set():
            raise Cancelled

    # -- talking to the hub -----------------------------------------------------------

    async def _post(self, transfer_id: str, what: str, body: dict[str, Any] | None, cancel: threading.Event) -> None:
        """Deliver a report, retrying while the hub is away; Superseded when it refuses."""
        backoff = Backoff(base=0.5, cap=10)
        while True:
            try:
                await self.client.request("POST", f"/api/v1/transfers/{transfer_id}/{what}", json=body)
                return
            except HubRefused as exc:
                if exc.status in (404, 409):
                    cancel.set()
                    raise Superseded(exc.detail) from None
                raise
            except HubUnavailable as exc:
                if cancel.is_set() or self.stopping.is_set():
                    raise Cancelled from None
                await pause(self.stopping, backoff.next_delay(exc.retry_after))

    async def _report(self, w: TransferWork, prog: Progress, journal: Journal, cancel: threading.Event, **extra: Any) -> None:
        body = {
            "attempt": w.transfer.attempt,
            "bytes_done": max(prog.bytes_done, 0),
            "files_done": prog.files_done,
            "rate_bps": round(prog.rate(), 1),
            "resent_bytes": journal.resent_bytes,
            **extra,
        }
        await self._post(w.transfer.id, "progress", body, cancel)

    async def _moving(self, w: TransferWork, prog: Progress, journal: Journal, cancel: threading.Event, work: Awaitable[T]) -> T:
        """Run ``work`` while reporting progress every ``progress_interval_s``."""
        task = asyncio.ensure_future(work)
        key: Key = (w.transfer.id, str(w.role))
        self.moving[key] = prog
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.cfg.progress_interval_s)
                if done:
                    return task.result()
                try:
                    await self._report(w, prog, journal, cancel)
                except Superseded:
                    cancel.set()  # the thread stops at its next part
        finally:
            self.moving.pop(key, None)
            self.moved_total += prog.moved
            if not task.done():
                cancel.set()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task

    @staticmethod
    def _errors(outcome: Outcome) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        return [FileError(path=p, error=e[:2000], at=now).model_dump(mode="json") for p, e in outcome.errors.items()]

    async def _fail(self, w: TransferWork, reason: str, outcome: Outcome, cancel: threading.Event) -> None:
        log.warning("transfer %s (%s) attempt %d failed: %s", w.transfer.id, w.role, w.transfer.attempt, reason)
        body = {"attempt": w.transfer.attempt, "reason": reason[:2000], "file_errors": self._errors(outcome)[:1000]}
        with contextlib.suppress(Superseded):
            await self._post(w.transfer.id, "fail", body, cancel)

    # -- source ------------------------------------------------------------------------

    async def _source(self, key: Key, cancel: threading.Event) -> None:
        w = self.latest[key]
        tid = w.transfer.id
        publisher = await asyncio.to_thread(publisher_for, self.cfg, self.state_dir, tid)
        journal_path = self.journals / f"{tid}.source.jsonl"
        if w.cleanup:
            await self._cleanup(w, publisher, journal_path, cancel)
            return
        journal = Journal(journal_path)
        paths = [f.path for f in w.manifest.files]
        root = Path(w.source_location or "")
        if w.transfer.state in (TransferState.QUEUED, TransferState.PUBLISHING):
            prog = Progress()
            log.info("transfer %s: publishing %d files (%d bytes)", tid, len(paths), w.transfer.bytes_total)
            outcome = await self._moving(
                w, prog, journal, cancel,
                asyncio.to_thread(publish, root, w.manifest.files, publisher, journal, prog, self.cfg.concurrency,
                                  cancel, self.limit),
            )  # fmt: skip
            if not outcome.ok:
                await self._fail(w, f"{len(outcome.errors)} file(s) could not be published", outcome, cancel)
                return
            access = await asyncio.to_thread(publisher.access, paths)
            await self._report(w, prog, journal, cancel, done=True, access=access.model_dump(mode="json"))
            log.info("transfer %s: published (%d bytes re-sent after restarts)", tid, journal.resent_bytes)
        else:
            access = await asyncio.to_thread(publisher.access, paths)
            await self._report(w, self._full(w), journal, cancel, access=access.model_dump(mode="json"))
        await self._serve(key, publisher, journal, access.expires_at, cancel)

    @staticmethod
    def _full(w: TransferWork) -> Progress:
        return Progress(bytes_done=w.transfer.bytes_total, files_done=w.transfer.files_total)

    async def _serve(self, key: Key, publisher: Any, journal: Journal, expires: datetime | None, cancel: threading.Event) -> None:
        """While the destination fetches: re-send corrupt files, renew URLs before they expire."""
        ttl = self.cfg.presign_ttl_s
        while True:
            await self._next_update(cancel)
            w = self.latest[key]
            if w.cleanup:
                await self._cleanup(w, publisher, journal.path, cancel)
                return
            paths = [f.path for f in w.manifest.files]
            if w.transfer.republish:
                again = set(w.transfer.republish)
                log.info("transfer %s: sending %d file(s) again", w.transfer.id, len(again))
                for p in again:
                    journal.reset(p)
                prog = Progress()
                files = [f for f in w.manifest.files if f.path in again]
                outcome = await asyncio.to_thread(
                    publish, Path(w.source_location or ""), files, publisher, journal, prog, self.cfg.concurrency, cancel,
                    self.limit,
                )  # fmt: skip
                if not outcome.ok:
                    await self._fail(w, "a file could not be sent again", outcome, cancel)
                    return
                access = await asyncio.to_thread(publisher.access, paths)
                expires = access.expires_at
                await self._report(
                    w, self._full(w), journal, cancel, access=access.model_dump(mode="json"), republished=sorted(again)
                )
            elif expires is not None and (expires - datetime.now(UTC)).total_seconds() < ttl / 2:
                access = await asyncio.to_thread(publisher.access, paths)
                expires = access.expires_at
                await self._report(w, self._full(w), journal, cancel, access=access.model_dump(mode="json"))

    async def _cleanup(self, w: TransferWork, publisher: Any, journal_path: Path, cancel: threading.Event) -> None:
        await asyncio.to_thread(publisher.remove)
        journal_path.unlink(missing_ok=True)
        with contextlib.suppress(Superseded):
            await self._post(w.transfer.id, "cleaned", None, cancel)
        log.info("transfer %s %s: published copy removed", w.transfer.id, w.transfer.state.value.lower())

    # -- destination -------------------------------------------------------------------

    async def _dest(self, key: Key, cancel: threading.Event) -> None:
        w = self.latest[key]
        tid, dataset = w.transfer.id, w.transfer.dataset
        journal = Journal(self.journals / f"{tid}.dest.jsonl")
        self.incoming.mkdir(parents=True, exist_ok=True)
        staging = safe_join(self.incoming, f".{dataset}.{tid}.partial")
        final = safe_join(self.incoming, dataset)
        failed_passes = 0
        # Files reported corrupt are skipped until the source has sent them again:
        # path -> how many times it had been sent again when we reported it.
        awaiting: dict[str, int] = {}
        try:
            while True:
                w = self.latest[key]
                resent = w.transfer.resent_files
                awaiting = {p: n for p, n in awaiting.items() if resent.get(p, 0) <= n}
                if w.access is None:
                    await self._next_update(cancel)
                    continue
                waiting = set(w.transfer.republish) | set(awaiting)
                files = [f for f in w.manifest.files if f.path not in waiting]
                reader = reader_for(w.access, self.cfg.concurrency)
                prog = Progress()
                try:
                    outcome = await self._moving(
                        w, prog, journal, cancel,
                        asyncio.to_thread(fetch, reader, files, staging, w.manifest.algorithm, journal, prog,
                                          int(self.cfg.part_size_mb * MIB), self.cfg.concurrency, cancel, self.limit),
                    )  # fmt: skip
                finally:
                    reader.close()
                if outcome.corrupt:
                    log.warning("transfer %s: %d file(s) failed their checks: %s", tid, len(outcome.corrupt), outcome.corrupt[:5])
                if outcome.corrupt or outcome.errors:
                    now = datetime.now(UTC)
                    errors = self._errors(outcome) + [
                        FileError(path=p, error="size or checksum differs from the manifest; fetching again", at=now).model_dump(
                            mode="json"
                        )
                        for p in outcome.corrupt
                    ]
                    await self._report(w, prog, journal, cancel, corrupt=outcome.corrupt, file_errors=errors[:1000])
                    awaiting.update({p: w.transfer.resent_files.get(p, 0) for p in outcome.corrupt})
                if all(journal.file(f.path).done for f in w.manifest.files):
                    await asyncio.to_thread(self._place, staging, final)
                    await self._report(w, prog, journal, cancel, done=True, location=str(final))
                    log.info(
                        "transfer %s: %d files verified, replica at %s; fetched %d bytes in this run, %d re-sent after restarts",
                        tid, prog.files_done, final, prog.moved, journal.resent_bytes,
                    )  # fmt: skip
                    journal.path.unlink(missing_ok=True)
                    return
                if outcome.errors:
                    failed_passes += 1
                    if failed_passes >= MAX_FAILED_PASSES:
                        first = next(iter(outcome.errors.items()))
                        await self._fail(w, f"{len(outcome.errors)} file(s) could not be fetched, e.g. {first[0]}: {first[1]}",
                                         outcome, cancel)  # fmt: skip
                        return
                else:
                    failed_passes = 0
                await self._next_update(cancel)
        except TransferError as exc:
            await self._fail(w, str(exc), Outcome(), cancel)

    @staticmethod
    def _place(staging: Path, final: Path) -> None:
        """Move the verified copy into place (a restart after this finds it there)."""
        if not staging.exists():
            if final.is_dir():
                return
            raise TransferError(f"the verified copy at {staging} is gone")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
