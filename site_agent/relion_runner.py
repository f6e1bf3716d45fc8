"""The process a RELION job from another site's project runs as (``python -m
site_agent.relion_runner relion.json``, in the job's work dir, under the site's executor).

1. Stage: every project file the commands read is taken from this site's cache by its
   SHA-256, or fetched from the home site's exchange (``cas/<sha256>``) and checked, then
   linked into ``project/<its path>``: a copy of the project's relative layout.
2. Run each command in ``project/`` (argv, no shell), stdout and stderr appended to the
   job's ``run.out`` and ``run.err`` as a local RELION queue would; stop at the first failure.
3. Publish the job's output directory to the exchange (``results/<job id>/``), with a
   manifest of checksums the submitting side verifies; the exit code is the first failing
   command's (0 when all succeeded).
The plan was written by the agent (``site_agent/relion_site.py``) after its checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from shared.relion_files import copy_checked, inside, publish_results


def stage(plan: dict[str, object], project: Path) -> tuple[int, int]:
    """Put every project file in place; returns (bytes fetched, bytes already at this site)."""
    exchange = Path(str(plan["exchange"])) / "relion" / "cas"
    cache = Path(str(plan["cache_dir"]))
    cache.mkdir(parents=True, exist_ok=True)
    fetched = reused = 0
    for f in plan["files"]:  # type: ignore[attr-defined]
        cached = cache / f["sha256"]
        if cached.exists():
            reused += f["size"]
        else:
            copy_checked(exchange / f["sha256"], cached, f["size"], f["sha256"])
            cached.chmod(0o444)  # shared by every job that links it: nobody writes to it
            fetched += f["size"]
        dest = inside(project, f["path"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        try:
            os.link(cached, dest)
        except OSError:  # the cache on another filesystem
            shutil.copyfile(cached, dest)
    return fetched, reused


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[0]).read_text())
    job_id = os.environ["CRYOMESH_JOB_ID"]
    project = Path("project").resolve()
    project.mkdir(exist_ok=True)
    try:
        fetched, reused = stage(plan, project)
    except (OSError, ValueError) as exc:
        print(f"cryomesh: could not stage the project files: {exc}", file=sys.stderr, flush=True)
        return 2
    print(
        f"cryomesh: staged {len(plan['files'])} project files: {fetched} bytes fetched, {reused} bytes already here", flush=True
    )
    out = inside(project, plan["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    code = 0
    for cmd in plan["commands"]:
        print(f"cryomesh: running {' '.join(cmd)}", flush=True)
        with (out / "run.out").open("ab") as stdout, (out / "run.err").open("ab") as stderr:
            code = subprocess.run(
                cmd, cwd=project, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, check=False
            ).returncode
        if code != 0:
            print(f"cryomesh: {Path(cmd[0]).name} failed with exit code {code}", file=sys.stderr, flush=True)
            sys.stderr.write((out / "run.err").read_text(errors="replace")[-4000:])
            break
    manifest = publish_results(out, Path(plan["exchange"]) / "relion" / "results" / job_id, code)
    size = sum(f["size"] for f in manifest["files"])
    print(f"cryomesh: published {len(manifest['files'])} output files ({size} bytes) for the project", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
