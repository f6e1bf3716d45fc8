"""The OpenAPI document says what the hub sends: every refusal is an ``ErrorBody``.

FastAPI declares its own 422 body (``HTTPValidationError``) for every operation with
parameters; the hub renders validation errors as ``{"error": "ValidationError", "detail"}``
like any other refusal (hub/errors.py). This replaces those declarations, and adds the
refusals every operation of a kind can make: 422 for a malformed URL, 400/413 for a body
that cannot be read or is too large (hub/limits.py), 401 where a token is needed.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from shared.schemas.common import ErrorBody

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _describe(op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses["422"] = _error("ValidationError: a parameter or the body is malformed")
    if "requestBody" in op:
        responses.setdefault("400", _error("BadRequest: the body cannot be read (not UTF-8 JSON)"))
        responses.setdefault("413", _error("PayloadTooLarge: the body is larger than this endpoint accepts"))
    if op.get("security"):
        responses.setdefault("401", _error("Unauthorized: no valid bearer token"))


_RAW_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _standard_bounds(node: Any) -> None:
    """Pydantic writes a field's own bounds as raw ``ge``/``le`` keys beside a validated
    type's (``Int64 | None = Field(ge=1)``); the field's are the ones that hold."""
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number"):
            for raw, name in _RAW_BOUNDS.items():
                if raw in node:
                    node[name] = node.pop(raw)
                    if name == "minimum":
                        node.pop("exclusiveMinimum", None)
                    elif name == "maximum":
                        node.pop("exclusiveMaximum", None)
        for value in node.values():
            _standard_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _standard_bounds(value)


def document(app: FastAPI) -> dict[str, Any]:
    """The hub's OpenAPI document, built once."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes, servers=app.servers
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
    for item in schema.get("paths", {}).values():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch"):
                _describe(op)
    _standard_bounds(schema)
    app.openapi_schema = schema
    return schema


def install(app: FastAPI) -> None:
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
