"""Moving a dataset's files in parts, many at once, resumable from the journal.

``publish`` reads the site's copy and stores it in the exchange; ``fetch`` reads the
exchange into a staging directory and checks each finished file's size and checksum
against the manifest. Both run in threads (the agent's event loop calls them through
``asyncio.to_thread``) and stop at the next part boundary when ``cancel`` is set.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from shared.schemas.datasets import ChecksumAlgorithm, ManifestFile
from site_agent.datasets import file_checksum
from site_agent.transfers.exchange import Publisher, Reader, TransferError, pread_exact, safe_join
from site_agent.transfers.journal import FileRecord, Journal


class Cancelled(Exception):
    pass


class RateLimit:
    """A token bucket shared by the threads of one agent: at most ``bytes_per_s``."""

    def __init__(self, bytes_per_s: float | None) -> None:
        self.rate = bytes_per_s
        self.allowance = 0.0
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            self.allowance = min(self.rate, self.allowance + (now - self.last) * self.rate) - n
            self.last = now
            debt = -self.allowance / self.rate if self.allowance < 0 else 0.0
        if debt > 0:
            time.sleep(debt)


@dataclass
class Progress:
    """Counters the agent reports while a side runs (read from another thread)."""

    bytes_done: int = 0  # of the dataset, including parts done before a restart
    files_done: int = 0
    moved: int = 0  # bytes actually moved in this run
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, nbytes: int, moved: bool = True) -> None:
        with self.lock:
            self.bytes_done += nbytes
            if moved:
                self.moved += nbytes

    def file(self) -> None:
        with self.lock:
            self.files_done += 1

    def rate(self) -> float:
        return self.moved / max(time.monotonic() - self.started, 1e-6)


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.errors


def _parts(size: int, part_size: int) -> list[tuple[int, int, int]]:
    """(part number, offset, length); a file of 0 bytes is one empty part."""
    if size == 0:
        return [(0, 0, 0)]
    return [(k, off, min(part_size, size - off)) for k, off in enumerate(range(0, size, part_size))]


class _Run:
    """One pass over a set of files: a pool of part tasks; when a file's last part is in,
    its ``finish`` runs (publish: complete the upload; fetch: check the file)."""

    def __init__(self, concurrency: int, cancel: threading.Event, journal: Journal, progress: Progress,
                 limit: RateLimit | None) -> None:  # fmt: skip
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="transfer")
        self.cancel = cancel
        self.journal, self.progress, self.limit = journal, progress, limit
        self.outcome = Outcome()
        self.lock = threading.Lock()
        self.futures: list[Future[None]] = []

    def error(self, path: str, exc: BaseException) -> None:
        with self.lock:
            self.outcome.errors.setdefault(path, str(exc) or type(exc).__name__)

    def _submit(self, path: str, fn: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                fn()
            except Cancelled:
                raise
            except Exception as exc:  # one file's failure is recorded; the others go on
                self.error(path, exc)

        self.futures.append(self.pool.submit(guarded))

    def file(self, mf: ManifestFile, part_size: int, rec: FileRecord, move: Callable[[int, int, int], str],
             finish: Callable[[dict[int, str]], None]) -> None:  # fmt: skip
        """Schedule the parts of ``mf`` not yet recorded; ``move(part, offset, length)`` moves one
        and returns its ETag. Each part is journaled as started before its bytes move."""
        parts = _parts(mf.size, part_size)
        remaining = [p for p in parts if p[0] not in rec.parts]
        self.progress.add(sum(n for k, _, n in parts if k in rec.parts), moved=False)
        etags = dict(rec.parts)
        left = [len(remaining)]
        if not remaining:
            self._submit(mf.path, lambda: finish(etags))
            return
        for k, off, n in remaining:

            def part(k: int = k, off: int = off, n: int = n) -> None:
                if self.cancel.is_set():
                    raise Cancelled
                if mf.path in self.outcome.errors:
                    return
                self.journal.start(mf.path, k, n)
                if self.limit:  # the part is on its way: throttled like a slow link
                    self.limit.take(n)
                etag = move(k, off, n)
                self.journal.part_done(mf.path, k, etag)
                self.progress.add(n)
                with self.lock:
                    etags[k] = etag
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    finish(etags)

            self._submit(mf.path, part)

    def pending(self, files: Iterable[ManifestFile]) -> Iterator[tuple[ManifestFile, FileRecord]]:
        """The files not finished yet, with what the journal holds of them; finished ones count as done."""
        for mf in files:
            rec = self.journal.file(mf.path)
            if rec.done:
                self.progress.add(mf.size, moved=False)
                self.progress.file()
                continue
            yield mf, rec

    def wait(self) -> Outcome:
        try:
            done, _ = wait(self.futures, return_when=FIRST_EXCEPTION)
            if any(isinstance(f.exception(), Cancelled) for f in done):
                raise Cancelled
            wait(self.futures)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.cancel.is_set():
            raise Cancelled
        return self.outcome


def publish(
    source_root: Path,
    files: Iterable[ManifestFile],
    publisher: Publisher,
    journal: Journal,
    progress: Progress,
    concurrency: int,
    cancel: threading.Event,
    limit: RateLimit | None = None,
) -> Outcome:
    """Store every file of ``files`` in the exchange; parts already journaled are skipped."""
    run = _Run(concurrency, cancel, journal, progress, limit)
    for mf, rec in run.pending(files):
        try:
            src = safe_join(source_root, mf.path)
            size = src.stat().st_size
            if size != mf.size:
                raise TransferError(
                    f"{mf.path}: {size} bytes at the site, {mf.size} in the manifest (changed since registration?)"
                )
            upload_id = publisher.begin(mf.path, size, rec.upload_id)
        except (OSError, TransferError) as exc:
            run.error(mf.path, exc)
            continue
        if upload_id and upload_id != rec.upload_id:
            journal.upload(mf.path, upload_id)
        run.file(mf, publisher.part_size, rec, *_publishing(mf, src, upload_id, publisher, journal, progress))
    return run.wait()


def _publishing(
    mf: ManifestFile, src: Path, upload_id: str | None, publisher: Publisher, journal: Journal, progress: Progress
) -> tuple[Callable[[int, int, int], str], Callable[[dict[int, str]], None]]:
    def move(k: int, off: int, n: int) -> str:
        return publisher.put_part(mf.path, upload_id, k, off, pread_exact(src, off, n))

    def finish(etags: dict[int, str]) -> None:
        publisher.finish(mf.path, mf.size, upload_id, etags)
        journal.file_done(mf.path)
        progress.file()

    return move, finish


def fetch(
    reader: Reader,
    files: Iterable[ManifestFile],
    staging: Path,
    algorithm: ChecksumAlgorithm,
    journal: Journal,
    progress: Progress,
    part_size: int,
    concurrency: int,
    cancel: threading.Event,
    limit: RateLimit | None = None,
) -> Outcome:
    """Fetch ``files`` into ``staging`` and check each against the manifest.

    A file whose size or checksum is wrong is reported ``corrupt`` and forgotten (its
    parts are not trusted again); it is fetched afresh once the source has sent it again.
    """
    staging.mkdir(parents=True, exist_ok=True)
    run = _Run(concurrency, cancel, journal, progress, limit)
    for mf, rec in run.pending(files):
        try:
            target = safe_join(staging, mf.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target = safe_join(staging, mf.path)  # again, now that the parents exist
            if not rec.parts or not target.exists():
                if rec.parts:
                    journal.reset(mf.path)
                with target.open("wb") as fh:
                    fh.truncate(mf.size)
                rec = journal.file(mf.path)
        except (OSError, TransferError) as exc:
            run.error(mf.path, exc)
            continue
        run.file(mf, part_size, rec, *_fetching(mf, target, reader, algorithm, run))
    return run.wait()


def _fetching(
    mf: ManifestFile, target: Path, reader: Reader, algorithm: ChecksumAlgorithm, run: _Run
) -> tuple[Callable[[int, int, int], str], Callable[[dict[int, str]], None]]:
    def move(k: int, off: int, n: int) -> str:
        data = reader.read(mf.path, off, n)
        fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.pwrite(fd, data, off)
        finally:
            os.close(fd)
        return ""

    def finish(etags: dict[int, str]) -> None:
        if target.stat().st_size != mf.size or file_checksum(target, algorithm) != mf.checksum:
            run.journal.reset(mf.path)
            target.unlink(missing_ok=True)
            run.progress.add(-mf.size, moved=False)
            with run.lock:
                run.outcome.corrupt.append(mf.path)
            return
        run.journal.file_done(mf.path)
        run.progress.file()
        with run.lock:
            run.outcome.done.append(mf.path)

    return move, finish
