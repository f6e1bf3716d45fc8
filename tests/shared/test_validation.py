"""The one helper that says which field a person probably meant."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError

from shared.schemas.common import StrictModel
from shared.schemas.jobs import JobSpec
from shared.validation import describe_errors


class Inner(StrictModel):
    memory_gb: float = 1


class Outer(StrictModel):
    name: str = "x"
    limits: Inner | None = None
    per_queue: dict[str, Inner] = Field(default_factory=dict)
    queues: list[Inner] = Field(default_factory=list)
    gpu_model: str | None = Field(default=None, alias="gpuModel")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"limits": {"memory_gbs": 2}}, "limits.memory_gbs: unknown field; did you mean 'memory_gb'?"),
        ({"per_queue": {"gpu": {"Memory_GB": 2}}}, "per_queue.gpu.Memory_GB: unknown field; did you mean 'memory_gb'?"),
        ({"queues": [{}, {"memory": 2}]}, "queues.1.memory: unknown field; did you mean 'memory_gb'?"),
        ({"gpu_modle": "a100"}, "gpu_modle: unknown field; did you mean 'gpuModel'?"),
        ({"gpuModle": "a100"}, "gpuModle: unknown field; did you mean 'gpuModel'?"),
        ({"memory_gb": 2}, "memory_gb: unknown field; did you mean 'limits.memory_gb'?"),
        ({"colour": "blue"}, "colour: unknown field"),
    ],
)
def test_unknown_fields_name_the_field_meant(body: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError) as err:
        Outer.model_validate(body)
    assert describe_errors(err.value, Outer) == problem


def test_other_problems_are_kept_and_joined_in_one_line() -> None:
    with pytest.raises(ValidationError) as err:
        JobSpec.model_validate({"name": "x", "kind": "no.such.kind", "outputs": {"titel": "t"}})
    message = describe_errors(err.value, JobSpec)
    assert "kind: Input should be" in message and "outputs.titel: unknown field; did you mean 'title'?" in message
    assert "\n" not in message and "errors.pydantic.dev" not in message
