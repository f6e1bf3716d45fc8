"""Files a person writes for the CLI (job specs, site descriptions, dataset metadata) are
checked before anything is sent: a typo is one line naming the file, the field and the
field probably meant. The hub here is unreachable on purpose: a refusal that names the
field proves the file never left this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYOMESH_")}
    env |= {"CRYOMESH_HUB_URL": NOWHERE, "CRYOMESH_CLIENT_ID": "someone", "CRYOMESH_CLIENT_SECRET": "secret"}
    return subprocess.run([sys.executable, "-m", "cryomesh_cli.main", *args], env=env, capture_output=True, text=True, timeout=60)


def one_error_line(out: subprocess.CompletedProcess[str], expected: str) -> None:
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert out.stdout.strip().splitlines() == [f"error: {expected}"], out.stdout


def test_a_job_spec_typo_names_the_file_and_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "refine.yaml"
    spec.write_text("name: refine\nkind: generic.command\ncommand: [echo, hi]\nresources: {cpu: 4, memory_gb: 8}\n")
    one_error_line(cli("jobs", "submit", str(spec)), f"{spec}: resources.cpu: unknown field; did you mean 'cpus'?")

    spec = tmp_path / "refine.json"
    spec.write_text(json.dumps({"name": "refine", "kind": "generic.command", "command": ["true"], "placment": {}}))
    one_error_line(cli("jobs", "submit", str(spec)), f"{spec}: placment: unknown field; did you mean 'placement'?")


def test_a_site_description_typo_names_the_file_and_the_field(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text((REPO / "deploy" / "examples" / "site-kek.yaml").read_text().replace("gpus_per_node: 4", "gpus_per_nodes: 4"))
    one_error_line(
        cli("admin", "create-site", str(site)),
        f"{site}: partitions.0.gpus_per_nodes: unknown field; did you mean 'gpus_per_node'?",
    )
    shipped = cli("admin", "create-site", str(REPO / "deploy" / "examples" / "site-kek.yaml"))
    assert "cannot reach the hub" in shipped.stdout, "the shipped example passes the check and is sent"


def test_a_dataset_metadata_typo_names_the_file_and_the_field(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(f'[agent]\nstate_dir = "{tmp_path / "state"}"\n')
    data = tmp_path / "apo"
    data.mkdir()
    (data / "movie.tiff").write_bytes(b"frames")
    meta = tmp_path / "meta.yaml"
    meta.write_text("title: Apoferritin\ndetector: {model: K3, mod: counting}\n")
    one_error_line(
        cli("datasets", "register", "--config", str(config), "--path", str(data), "--metadata", str(meta)),
        f"{meta}: detector.mod: unknown field; did you mean 'mode'?",
    )
