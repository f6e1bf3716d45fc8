"""Runs one GA4GH TES task inside its job's work dir: stage inputs, run the executors in
order, collect outputs, and leave ``tes_result.json`` for the agent to report.

Started by the job wrapper as ``python -m site_agent.tes_run tes_task.json`` (see
``site_agent.commands.argv_for``), so the local and Slurm executors run it like any job and
its exit code is the task's: the first failing executor's code (unless it has
``ignore_error``), 0 when all went well.

An executor whose image the site allows in its container runtime (``[tes]
container_images``) runs in a container of its own (``site_agent.containers``): the task's
directories are bind-mounted at the absolute paths the task names (under ``<work
dir>/root`` here), its workdir, environment and stdin/stdout/stderr are the executor's, and
on SIGTERM (cancel) the runner removes the container before it ends.

The other executors run on the host, for the images its admin maps to the host (``[tes]
host_images``). The task's absolute paths (inputs, outputs, volumes, workdirs,
stdin/stdout/stderr) are placed under ``<work dir>/root`` and every mention of them in the
executors' commands and environment is rewritten to that place, so nothing the task names
lands outside its own directory. ``file://`` inputs and outputs must lie inside the
directories the site exports (``[tes] exported_dirs``); ``s3://`` ones go through the
site's S3 settings (``site_agent.tes_s3``). Outputs to ``drs://<hub host>/new/<name>`` are
gathered into ``<work dir>/datasets/<name>`` for the agent to register as a dataset.

With ``[tes] isolation = "unshare"`` each executor runs in its own user and mount namespace
(``unshare -rm``: util-linux, no privileges needed) where ``<work dir>/root/tmp`` is mounted
at ``/tmp``, as a container would give the task its own ``/tmp``: paths under ``/tmp`` are
then the task's own and not rewritten. Clients that write their scripts for a container
need it: Snakemake's TES plugin sends a job script that runs ``mkdir /tmp/conda && cd /tmp``.
The rest of the file system is the host's, as without isolation. An image's executors get
the environment variables the site's admin set for it (``[tes] image_env``), e.g. a PATH
that starts with the environment that plays the image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from shared.schemas.tes import (
    TesExecutor,
    TesExecutorLog,
    TesFileType,
    TesOutput,
    TesOutputFileLog,
    TesResult,
    TesWork,
    new_dataset_name,
)
from site_agent.containers import ContainerError, Mount, Runtime, container_name, ensure_image, run_argv, stop_argv
from site_agent.executors.base import tail

if TYPE_CHECKING:
    from site_agent.tes_s3 import S3Staging

TASK_FILE = "tes_task.json"
#: Where outputs bound for new datasets gather, one directory per dataset name.
DATASETS_DIR = "datasets"
RESULT_FILE = "tes_result.json"
#: Exit code when the task failed for a reason of the system (staging, outputs), not of an executor.
SYSTEM_EXIT = 97
#: The task's own /tmp under isolation (its files live in ``<work dir>/root/tmp``).
TASK_TMP = "/tmp"  # noqa: S108 - a path inside the task, not a temporary file of ours
#: Run in the new namespaces: the task's tmp ($1) becomes /tmp. A job work dir that is itself
#: under /tmp ($2) is mounted again at its own path inside it, so the task's other (rewritten)
#: paths stay reachable; then into the executor's working directory ($3) and its command.
UNSHARE_SCRIPT = (
    'set -e; if [ -n "$2" ]; then mkdir -p "$1${2#/tmp}"; mount --bind "$2" "$1${2#/tmp}"; fi; '
    'mount --rbind "$1" /tmp; cd "$3"; shift 3; exec "$@"'
)


class StagingError(Exception):
    """An input or output could not be moved; the task ends as a system error."""


def inside(path: Path, dirs: list[Path]) -> bool:
    real = path.resolve()
    return any(real == d.resolve() or real.is_relative_to(d.resolve()) for d in dirs)


def file_url_path(url: str) -> Path:
    return Path(urlsplit(url).path)


class Runner:
    def __init__(self, workdir: Path, task: dict[str, Any]) -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        self.work = TesWork.model_validate(task["work"])
        self.exported = [Path(d) for d in task.get("exported_dirs", [])]
        self.inputs: dict[str, str] = task.get("inputs", {})
        self.isolated = task.get("isolation") == "unshare"
        self.image_env: dict[str, dict[str, str]] = task.get("image_env", {})
        self.containers: dict[str, dict[str, Any] | None] = task.get("containers", {})
        self._running: tuple[Runtime, str] | None = None  # the container an executor runs in now
        self.s3_settings: dict[str, Any] = task.get("s3", {})
        self._s3: S3Staging | None = None
        self.result = TesResult()
        paths = {i.path for i in self.work.inputs} | {o.path for o in self.work.outputs} | set(self.work.volumes)
        paths |= {o.path_prefix for o in self.work.outputs if o.path_prefix}
        paths |= {p for e in self.work.executors for p in (e.workdir, e.stdin, e.stdout, e.stderr) if p}
        paths = {_static_part(p) for p in paths} - {""}
        if self.isolated:  # the task's own /tmp is mounted at /tmp: those paths are real there
            paths = {p for p in paths if not _in_tmp(p)}
        # Longest first, at path boundaries: '/data/in' must not rewrite '/data/input'.
        self._pattern = (
            re.compile("|".join(rf"(?<![\w.-]){re.escape(p)}(?=$|[^\w.-])" for p in sorted(paths, key=len, reverse=True)))
            if paths
            else None
        )

    @property
    def s3(self) -> S3Staging:
        """The S3 client, made at the first s3:// URL (boto3 is not loaded for tasks without one)."""
        if self._s3 is None:
            from site_agent.tes_s3 import S3Staging

            self._s3 = S3Staging(self.s3_settings)
        return self._s3

    def local(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def rewrite(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: str(self.local(m.group(0))), text)

    # -- inputs -------------------------------------------------------------------

    def stage_inputs(self) -> None:
        for i in self.work.inputs:
            dest = self.local(i.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if i.content is not None:
                dest.write_text(i.content)
            elif i.dataset is not None:
                base = Path(self.inputs.get(i.dataset, ""))
                if not self.inputs.get(i.dataset) or not base.is_dir():
                    raise StagingError(f"input {i.path}: dataset {i.dataset} is not at this site")
                src = base / (i.dataset_path or "")
                if not inside(src, [base]):
                    raise StagingError(f"input {i.path}: {i.dataset_path} leaves dataset {i.dataset}")
                self._copy(src, dest, i.type)
            elif i.url and i.url.startswith("file://"):
                src = file_url_path(i.url)
                if not inside(src, self.exported):
                    raise StagingError(f"input {i.path}: {src} is not inside a directory this site exports")
                self._copy(src, dest, i.type)
            elif i.url and i.url.startswith("s3://"):
                self.s3.fetch(i.url, dest, i.type)
            elif i.url:
                self._download(i.url, dest)
        for v in self.work.volumes:
            self.local(v).mkdir(parents=True, exist_ok=True)
        for o in self.work.outputs:
            self.local(_static_part(o.path)).parent.mkdir(parents=True, exist_ok=True)

    def _copy(self, src: Path, dest: Path, kind: TesFileType) -> None:
        if kind is TesFileType.DIRECTORY or src.is_dir():
            if not src.is_dir():
                raise StagingError(f"{src} is not a directory")
            shutil.copytree(src, dest, symlinks=False, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copyfile(src, dest)
        else:
            raise StagingError(f"{src} does not exist")

    def _download(self, url: str, dest: Path) -> None:
        try:
            with httpx.stream("GET", url, follow_redirects=True, timeout=60) as resp:
                resp.raise_for_status()
                with dest.open("wb") as fh:
                    for chunk in resp.iter_bytes():
                        fh.write(chunk)
        except httpx.HTTPError as exc:
            raise StagingError(f"could not download {url}: {exc}") from exc

    # -- executors ----------------------------------------------------------------

    def run_executors(self) -> int:
        logs_dir = self.workdir / "tes_logs"
        logs_dir.mkdir(exist_ok=True)
        for n, e in enumerate(self.work.executors):
            cwd = self.local(e.workdir) if e.workdir else self.root
            cwd.mkdir(parents=True, exist_ok=True)
            out = self.local(e.stdout) if e.stdout else logs_dir / f"{n}.stdout"
            err = self.local(e.stderr) if e.stderr else logs_dir / f"{n}.stderr"
            for f in (out, err):
                f.parent.mkdir(parents=True, exist_ok=True)
            how = self.containers.get(e.image)
            if how is not None:  # the task's own paths, mounted where it names them: nothing is rewritten
                env, cwd = dict(os.environ), self.workdir
                argv = self.in_container(n, e, how)
            else:
                env = {**os.environ, **self.image_env.get(e.image, {}), **{k: self.rewrite(v) for k, v in (e.env or {}).items()}}
                argv = [self.rewrite(a) for a in e.command]
            if how is None and self.isolated:
                argv, cwd = self.isolate(argv, e.workdir if e.workdir and _in_tmp(e.workdir) else str(cwd)), self.workdir
            started = datetime.now(UTC).isoformat()
            with out.open("wb") as o, err.open("wb") as r:
                stdin = self.local(e.stdin).open("rb") if e.stdin else subprocess.DEVNULL
                try:
                    code = subprocess.call(argv, cwd=cwd, env=env, stdin=stdin, stdout=o, stderr=r)
                except OSError as exc:  # no such program: the executor's failure, as a shell would say it
                    r.write(f"{e.command[0]}: {exc.strerror}\n".encode())
                    code = 127
                finally:
                    self._running = None
                    if stdin is not subprocess.DEVNULL:
                        stdin.close()  # type: ignore[union-attr]
            self.result.executors.append(
                TesExecutorLog(
                    start_time=started, end_time=datetime.now(UTC).isoformat(), stdout=tail(out), stderr=tail(err), exit_code=code
                )
            )
            if code != 0 and not e.ignore_error:
                return code
        return 0

    def in_container(self, n: int, e: TesExecutor, how: dict[str, Any]) -> list[str]:
        """The command that runs executor ``n`` in a container of the site's runtime
        (``site_agent.containers``), its image loaded first from the site's file if it has one."""
        rt = Runtime(**how["runtime"])
        if how.get("image_file"):
            try:
                ensure_image(rt, e.image, how["image_file"])
            except (ContainerError, OSError, subprocess.SubprocessError) as exc:
                raise StagingError(f"image {e.image}: {exc}") from exc
        name = container_name(self.workdir, n)
        self._running = (rt, name)
        return run_argv(
            rt, name=name, image=e.image, command=e.command, workdir=e.workdir, env=e.env or {}, mounts=self.mounts(),
            stdin=e.stdin is not None, network=bool(how.get("network")), image_file=how.get("image_file"),
        )  # fmt: skip

    def mounts(self) -> list[Mount]:
        """The task's directories, bind-mounted at the paths it names: volumes, executors'
        workdirs, outputs' directories and directory inputs (the outermost of nested ones),
        and input files outside them (read-only)."""
        dirs = set(self.work.volumes) | {e.workdir for e in self.work.executors if e.workdir}
        dirs |= {i.path for i in self.work.inputs if i.type is TesFileType.DIRECTORY}
        for o in self.work.outputs:
            static = _static_part(o.path)
            dirs.add(static if o.type is TesFileType.DIRECTORY or static != o.path else os.path.dirname(static))
        top = sorted(d for d in dirs if not any(_under(d, other) for other in dirs if other != d))
        files = sorted(i.path for i in self.work.inputs if i.type is TesFileType.FILE and not any(_under(i.path, d) for d in top))
        for p in [*top, *files]:
            if p == "/" or any(c in p for c in ":,"):
                raise StagingError(f"{p!r} cannot be mounted into a container (the root, or a path with ':' or ',')")
        for d in top:
            self.local(d).mkdir(parents=True, exist_ok=True)
        return [Mount(str(self.local(d)), d) for d in top] + [Mount(str(self.local(f)), f, read_only=True) for f in files]

    def stop_container(self, signum: int, _frame: object) -> None:
        """SIGTERM (cancel): remove the running container, which the signal does not reach, then end."""
        if self._running is not None and (argv := stop_argv(*self._running)) is not None:
            subprocess.run(argv, capture_output=True, timeout=60, check=False)
        raise SystemExit(128 + signum)

    def isolate(self, argv: list[str], cwd: str) -> list[str]:
        """The command run in a new user and mount namespace with the task's own /tmp."""
        tmp = self.local(TASK_TMP)
        tmp.mkdir(parents=True, exist_ok=True)
        workdir = self.workdir.resolve()
        keep = str(workdir) if _in_tmp(str(workdir)) else ""
        namespaces = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private", "--"]
        return [*namespaces, "/bin/sh", "-c", UNSHARE_SCRIPT, "sh", str(tmp.resolve()), keep, cwd, *argv]

    # -- outputs ------------------------------------------------------------------

    def collect_outputs(self) -> None:
        for o in self.work.outputs:
            if o.url.startswith("drs://"):
                self._to_dataset(o)
                continue
            dest = None if o.url.startswith("s3://") else file_url_path(o.url)
            if dest is not None and not inside(dest.parent if not dest.exists() else dest, self.exported):
                raise StagingError(f"output {o.path}: {dest} is not inside a directory this site exports")
            for src, rel in self._output_files(o):
                url = o.url if rel is None else o.url.rstrip("/") + "/" + rel
                self._put(src, url, None if dest is None else dest if rel is None else dest / rel)

    def _to_dataset(self, o: TesOutput) -> None:
        """Gather an output into ``<work dir>/datasets/<name>``, which the agent registers as a
        dataset once the task is done (``site_agent.tes_datasets``). A FILE output keeps its
        file name there; several outputs may fill one dataset, but not write the same file."""
        try:
            name = dataset_name(o.url)
        except ValueError as exc:
            raise StagingError(f"output {o.path}: {exc}") from None
        root = self.workdir / DATASETS_DIR / name
        for src, rel in self._output_files(o):
            rel = rel or src.name
            dest = root / rel
            if dest.exists():
                raise StagingError(f"output {o.path}: {rel} of dataset {name} is written by another output too")
            self._put(src, f"{o.url}/{rel}", dest)

    def _output_files(self, o: TesOutput) -> list[tuple[Path, str | None]]:
        """The files of an output and each one's path below the output's URL (None: the URL itself)."""
        if any(c in o.path for c in "*?["):
            prefix = self.local(o.path_prefix or _static_part(o.path))
            return [(m, str(m.relative_to(prefix))) for m in sorted(self.root.glob(o.path.lstrip("/"))) if m.is_file()]
        src = self.local(o.path)
        if o.type is TesFileType.DIRECTORY:
            if not src.is_dir():
                raise StagingError(f"output {o.path} is not a directory")
            return [(f, str(f.relative_to(src))) for f in sorted(p for p in src.rglob("*") if p.is_file())]
        if not src.is_file():
            raise StagingError(f"output {o.path} was not written")
        return [(src, None)]

    def _put(self, src: Path, url: str, dest: Path | None) -> None:
        """Copy ``src`` to ``dest`` (file://) or upload it to ``url`` (s3://, ``dest`` None)."""
        if not src.resolve().is_relative_to(self.root.resolve()):
            raise StagingError(f"{src} leaves the task's directory")
        if dest is None:
            self.s3.put(src, url)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        task_path = "/" + str(src.relative_to(self.root))
        self.result.outputs.append(TesOutputFileLog(url=url, path=task_path, size_bytes=str(src.stat().st_size)))

    def run(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, self.stop_container)
        try:
            self.stage_inputs()
            code = self.run_executors()
            if code == 0:
                self.collect_outputs()
        except (StagingError, OSError) as exc:
            self.result.system_logs.append(f"system error: {exc}")
            code = SYSTEM_EXIT
        if self._s3 is not None:
            self.result.system_logs[:0] = self._s3.log
        (self.workdir / RESULT_FILE).write_text(self.result.model_dump_json())
        return code


def dataset_name(url: str) -> str:
    """The name in a new dataset's URL ``drs://<hub host>/new/<name>`` (checked here again: the
    agent does not trust a name just because the hub passed it on)."""
    parts = urlsplit(url)
    return new_dataset_name(url, parts.netloc)


def _in_tmp(path: str) -> bool:
    return path == TASK_TMP or path.startswith(TASK_TMP + "/")


def _under(path: str, directory: str) -> bool:
    return directory == "/" or path.startswith(directory.rstrip("/") + "/")


def _static_part(path: str) -> str:
    """A path up to its first glob character's directory ('/out/*.txt' -> '/out')."""
    if not any(c in path for c in "*?["):
        return path
    head = re.split(r"[*?\[]", path, maxsplit=1)[0]
    return head.rsplit("/", 1)[0]


def main() -> int:
    workdir = Path.cwd()
    task = json.loads((workdir / sys.argv[1]).read_text())
    return Runner(workdir, task).run()


if __name__ == "__main__":
    # Run as ``python -m site_agent.tes_run``, this file is ``__main__``, a second copy of the module:
    # run the imported one, whose StagingError is the one site_agent.tes_s3 raises.
    from site_agent import tes_run

    sys.exit(tes_run.main())
