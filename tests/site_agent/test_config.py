"""site.toml: a typo in any section is refused in one line naming the file, the key and the
key probably meant, never loaded as a default (``allowed_institution`` is not "everyone")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from site_agent.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        (
            '[policy]\nallowed_institution = ["kek"]\n',
            "policy.allowed_institution: unknown field; did you mean 'allowed_institutions'?",
        ),
        ('[agent]\nhub_ulr = "https://hub.example.org"\n', "agent.hub_ulr: unknown field; did you mean 'hub_url'?"),
        ('[discovery]\nbackend = "slurm"\npartiton = ["gpu"]\n', "discovery.partiton: unknown field; did you mean 'partition'?"),
        (
            '[discovery]\nbackend = "declared"\n[[discovery.declared]]\nname = "g5"\nmax_node = 2\ncpus_per_node = 8\n'
            "memory_gb_per_node = 32\nmax_nodes = 2\n",
            "discovery.declared.0.max_node: unknown field; did you mean 'max_nodes'?",
        ),
        ("[executor]\nmax_concurent = 8\n", "executor.max_concurent: unknown field; did you mean 'max_concurrent'?"),
        ('[transfers]\nexchange = "s3"\nbuckett = "x"\n', "transfers.buckett: unknown field; did you mean 'bucket'?"),
        ("[audit]\nsample_fracton = 0.5\n", "audit.sample_fracton: unknown field; did you mean 'sample_fraction'?"),
        ('[[storage]]\nname = "scratch"\npth = "/data"\n', "storage.0.pth: unknown field; did you mean 'path'?"),
        ("[polcy]\nmax_cpus = 4\n", "polcy: unknown field; did you mean 'policy'?"),
        ("[agent]\nmax_cpus = 4\n", "agent.max_cpus: unknown field"),
        # The policy on generic commands in RELION queue jobs: explicit, off by default.
        ('[policy]\ngeneric_commands = "yes"\n', "policy.generic_commands: Input should be 'none', 'listed' or 'any'"),
        ('[policy]\ngeneric_program = ["ctffind4"]\n', "policy.generic_program: unknown field; did you mean 'generic_programs'?"),
        ('[policy]\ngeneric_programs = ["ctffind4"]\n', "generic_programs is read only with generic_commands = 'listed'"),
        ('[policy]\ngeneric_commands = "listed"\n', "generic_commands = 'listed' needs the programs in generic_programs"),
        ('[policy]\ngeneric_commands = "listed"\ngeneric_programs = ["/bin/sh"]\n', "'/bin/sh': a program name without"),
    ],
)
def test_a_typo_in_any_section_is_refused(tmp_path: Path, toml: str, problem: str) -> None:
    config = tmp_path / "site.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    message = str(err.value)
    assert message.startswith(f"{config}: "), message
    assert problem in message and "\n" not in message, message


def test_the_agent_says_it_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[agent]\nstate_dir = "/tmp/x"\n[policy]\nallowed_institution = ["kek"]\n')
    out = subprocess.run(
        [sys.executable, "-m", "cryomesh_cli.main", "agent", "discover", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert f"{config}: policy.allowed_institution: unknown field; did you mean 'allowed_institutions'?" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr and len(out.stdout.strip().splitlines()) == 1, out.stdout


def test_the_shipped_example_loads(tmp_path: Path) -> None:
    settings = load_settings(REPO / "deploy" / "site.toml")
    assert settings.discovery.backend == "slurm" and settings.storage[0].name == "scratch"
