"""Validate responses against the official GA4GH OpenAPI descriptions (tests/data/ga4gh).

The schema objects of OpenAPI 3.0 are JSON Schema (draft 4 with a few extra keywords that
validators ignore). ``$ref``s between the vendored files resolve to those files; the
service-info URL both specs point to resolves to its vendored copy, so nothing is fetched."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

DATA = Path(__file__).parent / "data" / "ga4gh"
TES = DATA / "tes" / "task_execution_service.openapi.yaml"
DRS = DATA / "drs" / "components" / "schemas"
SERVICE_INFO_URL = "https://raw.githubusercontent.com/ga4gh-discovery/ga4gh-service-info/v1.0.0/service-info.yaml"


def _retrieve(uri: str) -> Resource[Any]:
    path = DATA / "service-info" / "service-info.yaml" if uri == SERVICE_INFO_URL else Path(uri.removeprefix("file://"))
    return Resource.from_contents(yaml.safe_load(path.read_text()), default_specification=DRAFT4)


@cache
def _registry() -> Registry[Any]:
    return Registry(retrieve=_retrieve)  # type: ignore[call-arg]


def validate(document: Path, pointer: str, instance: Any) -> None:
    """Raise jsonschema.ValidationError unless ``instance`` matches ``document#pointer``."""
    Draft4Validator({"$ref": f"{document.as_uri()}#{pointer}"}, registry=_registry()).validate(instance)


def tes(name: str, instance: Any) -> None:
    """``name`` is a schema of the TES 1.1 components, e.g. 'tesTask'."""
    validate(TES, f"/components/schemas/{name}", instance)


def drs(name: str, instance: Any) -> None:
    """``name`` is a DRS 1.5 schema file without '.yaml', e.g. 'DrsObject'."""
    validate(DRS / f"{name}.yaml", "", instance)


def tes_task(instance: Any, view: str) -> None:
    """A task in ``view``. MINIMAL is exactly id and state (the spec's view), so the schema's
    ``required: [executors]``, which describes whole tasks, cannot apply to it."""
    if view == "MINIMAL":
        assert set(instance) == {"id", "state"}, instance
        tes("tesState", instance["state"])
    else:
        tes("tesTask", instance)


def tes_list(instance: Any, view: str) -> None:
    assert set(instance) <= {"tasks", "next_page_token"}, instance
    tes("tesListTasksResponse", {**instance, "tasks": []})
    for t in instance["tasks"]:
        tes_task(t, view)
