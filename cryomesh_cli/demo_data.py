"""The demo's data story: a dataset made at one site, shared with another, classified there.

kyoto-gpu holds a RELION data set of synthetic particles: a STAR file with an optics table
and CTF parameters, and images that RELION's ``relion_project`` made of a known density in
three views, with CTF and noise far stronger than the signal. A researcher of osaka-u asks
for it at osaka-cpu; kyoto-gpu's site admin approves; the two agents copy it through the
exchange and osaka-cpu verifies every file; a RELION 2D classification (``relion.class2d``:
``relion_refine`` with the RELION osaka-cpu's agent measured) waits for the copy, runs on
it, and registers its output as a derived dataset; the agent sends thumbnails of the class
averages for the dashboard. The demo knows the clean views, so the report says how well
the best class average matches the view it shows, against a single noisy particle.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from cryomesh_cli.client import HubSession, Profile
from cryomesh_cli.synthetic import RELION_PIXEL_A, best_correlation, clean_views, write_relion_particles

OWNER, DEST = "kyoto-gpu", "osaka-cpu"
PARTICLES = 240
CLASSES = 3
#: relion_refine's options for the classification, as RELION's GUI writes them for Class2D
#: (``--j``: two threads; the box is 40 px of 2 Å, the density about 60 Å across).
CLASS2D: dict[str, str | int | float | bool] = {
    "i": "particles.star", "o": "output/run", "dont_combine_weights_via_disc": True, "ctf": True, "iter": 10,
    "tau2_fudge": 2, "particle_diameter": 70, "K": CLASSES, "flatten_solvent": True, "zero_mask": True,
    "oversampling": 1, "psi_step": 15, "offset_range": 4, "offset_step": 2, "norm": True, "scale": True, "j": 2,
    "pool": 30, "pad": 2,
}  # fmt: skip
METADATA = {
    "title": "Synthetic particles: noisy projections of a known density",
    "description": "Made by cryomesh demo with relion_project: three views of a six-blob density, CTF applied "
    "(300 kV, defocus 1-2 µm), white noise of std 8 per image (the signal's is about 5).",
    "experiment_type": "spa",
    "visibility": "network",
    "sample": {"name": "synthetic six-blob complex", "organism": "in silico", "molecular_weight_kda": 450},
    "instrument": {"microscope": "simulated Titan Krios", "voltage_kv": 300, "cs_mm": 2.7},
    "detector": {"model": "simulated Falcon 4i", "mode": "counting"},
    "acquisition": {"pixel_size_a": RELION_PIXEL_A, "total_dose_e_per_a2": 50},
}
FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def transfers_section(workdir: Path, site_dir: Path) -> str:
    """The sites share one machine, so a filesystem exchange both can read."""
    return (
        "\n[transfers]\n"
        f'exchange = "fs"\npath = {json.dumps(str(workdir / "exchange"))}\n'
        f"incoming = {json.dumps(str(site_dir / 'datasets'))}\n"
        "poll_interval_s = 0.5\nprogress_interval_s = 0.5\npart_size_mb = 4\nconcurrency = 4\n"
    )


class DataStory:
    def __init__(self, workdir: Path, env: dict[str, str], admin: HubSession, researcher: HubSession) -> None:
        self.workdir, self.env, self.admin, self.researcher = workdir, env, admin, researcher
        self.dataset: dict[str, Any] = {}
        self.request: dict[str, Any] = {}
        self.job: dict[str, Any] = {}
        self.images = 0
        self.owner_admin: HubSession | None = None

    def start(self, say: Any) -> None:
        data = self.workdir / OWNER / "data" / "synthetic-particles"
        self.images = write_relion_particles(data, self.workdir / "truth", count=PARTICLES)
        meta = self.workdir / "dataset.yaml"
        meta.write_text(yaml.safe_dump(METADATA))
        config = self.workdir / OWNER / "site.toml"
        out = subprocess.run(
            [sys.executable, "-m", "cryomesh_cli.main", "datasets", "register", "--config", str(config), "--path", str(data),
             "--metadata", str(meta), "--json"],
            env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"registering the demo dataset failed: {out.stdout}{out.stderr}")
        self.dataset = json.loads(out.stdout)
        say(
            f"{OWNER} registered dataset {self.dataset['id']}: {self.dataset['file_count']} files, "
            f"{self.dataset['total_bytes'] / 1e6:.1f} MB, {self.images} particle images (manifest digest "
            f"{self.dataset['manifest_digest'][:12]}…)"
        )
        acct = self.admin.call(
            "POST", "/api/v1/accounts", json_body={"name": f"{OWNER} admin", "role": "site_admin", "site": OWNER}
        )
        self.owner_admin = HubSession(Profile(self.admin.profile.hub_url, acct["client_id"], acct["client_secret"]))
        self.request = self.researcher.call(
            "POST",
            f"/api/v1/datasets/{self.dataset['id']}/share-requests",
            json_body={"dest_site": DEST, "purpose": "2D classification at Osaka", "lifetime_days": 30},
        )
        self.request = self.owner_admin.call(
            "POST", f"/api/v1/share-requests/{self.request['id']}/approve", json_body={"reason": "collaboration agreed"}
        )
        say(f"osaka-u asked for it at {DEST}; {OWNER}'s admin {self.request['decided_by']}: {self.request['state']}")
        self.job = self.researcher.call(
            "POST",
            "/api/v1/jobs",
            json_body={
                "name": "class2d",
                "kind": "relion.class2d",
                "parameters": CLASS2D,
                "software": [{"name": "relion", "version": ">=3.1"}],
                "resources": {"cpus": 2, "threads_per_rank": 2, "memory_gb": 2, "walltime_s": 900},
                "inputs": [{"dataset": self.dataset["id"]}],
                "placement": {"allowed_sites": [DEST]},
                "outputs": {"title": "2D classes of the synthetic particles", "visibility": "network",
                            "experiment_type": "spa"},
            },
        )  # fmt: skip
        why = self.job["state_reason"] or self.researcher.call("GET", f"/api/v1/jobs/{self.job['id']}/placement")["explanation"]
        say(f"RELION Class2D job {self.job['id'][:8]} for {DEST}: {self.job['state']} — {why}")

    def refresh(self) -> None:
        if self.job:
            self.job = self.researcher.call("GET", f"/api/v1/jobs/{self.job['id']}")

    @property
    def finished(self) -> bool:
        return not self.job or self.job["state"] in FINAL

    def outcome(self) -> dict[str, Any]:
        """Where the story stands, for ``demo_outcome.unfinished``."""
        out: dict[str, Any] = {"dataset": self.dataset, "request": self.request, "job": self.job, "transfers": []}
        if self.dataset:
            out["transfers"] = self.transfers()
            if self.request:
                out["request"] = self.admin.call("GET", f"/api/v1/share-requests/{self.request['id']}")
        if self.job:
            self.refresh()
            out["job"] = self.job
            out["job_explanation"] = self.researcher.call("GET", f"/api/v1/jobs/{self.job['id']}/placement")["explanation"]
        return out

    def transfers(self) -> list[dict[str, Any]]:
        return list(self.admin.call("GET", "/api/v1/transfers")) if self.dataset else []

    def table(self) -> Table | None:
        from cryomesh_cli.transfers_cmds import transfers_table

        return transfers_table(self.transfers()) if self.dataset else None

    def analysis(self, output: dict[str, Any] | None) -> dict[str, Any]:
        """Each class average against the clean view it resembles most, and one noisy particle
        against its own view, as correlations over in-plane rotations."""
        import mrcfile
        import numpy as np

        from site_agent.pictures import class_shares, last_classes

        views = clean_views(self.workdir / "truth")
        particles = self.workdir / OWNER / "data" / "synthetic-particles" / "Particles" / "particles.mrcs"
        with mrcfile.open(particles) as m:  # particle 1 shows the first view
            single = best_correlation(np.asarray(m.data[0]), next(iter(views.values())))
        result: dict[str, Any] = {"particles": self.images, "single_image_correlation": round(single, 3)}
        found = last_classes(Path(output["replicas"][0]["location"])) if output else None
        if found:
            stack, model = found
            shares = class_shares(model)
            with mrcfile.open(stack) as m:
                averages = np.asarray(m.data, dtype=np.float32)
            classes: list[dict[str, Any]] = []
            for k, avg in enumerate(averages):
                scores = {name: best_correlation(avg, clean) for name, clean in views.items()}
                view = max(scores, key=lambda n: scores[n])
                classes.append(
                    {"class": k + 1, "share": round(shares[k], 3), "view": view, "correlation": round(scores[view], 3)}
                )
            result["iteration_file"] = stack.name
            result["classes"] = classes
            result["best_class_correlation"] = max(c["correlation"] for c in classes)
            result["views_found"] = sorted({c["view"] for c in classes if c["correlation"] > 0.9})
        return result

    def report(self) -> dict[str, Any]:
        if not self.dataset:
            return {"datasets": [], "shares": [], "transfers": []}
        datasets = self.admin.call("GET", "/api/v1/datasets", params={"limit": 100})["items"]
        output = next((d for d in datasets if self.job and d["source_job"] == self.job["id"]), None)
        shares = self.admin.call("GET", "/api/v1/share-requests")
        return {
            "datasets": [
                {
                    "id": d["id"], "title": d["title"], "owner_site": d["owner_site"], "file_count": d["file_count"],
                    "total_bytes": d["total_bytes"], "source_datasets": d["source_datasets"], "source_job": d["source_job"],
                    "replicas": [{"site": r["site"], "state": r["state"], "verified_at": r["verified_at"]}
                                 for r in d["replicas"]],
                }
                for d in datasets
            ],
            "shares": [
                {"id": s["id"], "dataset": s["dataset"], "dest_site": s["dest_site"], "state": s["state"],
                 "decided_by": s["decided_by"], "auto_approved": s["auto_approved"], "requested_by": s["requested_by"]}
                for s in shares
            ],
            "transfers": [
                {"id": t["id"], "dataset": t["dataset"], "source_site": t["source_site"], "dest_site": t["dest_site"],
                 "state": t["state"], "bytes_total": t["bytes_total"], "fetched_bytes": t["fetched_bytes"],
                 "files_total": t["files_total"], "rate_bps": t["rate_bps"], "resent_bytes": t["resent_bytes"]}
                for t in self.transfers()
            ],
            "data_job": {
                "id": self.job.get("id"), "state": self.job.get("state"), "site": self.job.get("site"),
                "state_reason": self.job.get("state_reason"), "output_dataset": output["id"] if output else None,
                "analysis": self.analysis(output),
                "pictures": self.researcher.call("GET", f"/api/v1/jobs/{self.job['id']}/pictures") if self.job else [],
            },
            "measured_software": {
                DEST: [s for s in self.admin.call("GET", f"/api/v1/sites/{DEST}")["software"] if s["source"] == "measured"]
            },
        }  # fmt: skip
