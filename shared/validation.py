"""Validation errors a person can act on: one line per problem, and for an unknown field
the field they probably meant.

``describe_errors(exc, JobSpec)`` turns pydantic's ``extra_forbidden`` errors into
``resources.cpu: unknown field; did you mean 'cpus'?`` by looking up the field names (and
aliases) of the model at that location of ``JobSpec``. The hub's 422 handler, the CLI's
spec-file checks and the agent's and hub's config loaders all use it.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

Loc = Sequence[str | int]

_SEQUENCES = (list, tuple, set, frozenset, Sequence)
_MAPPINGS = (dict, Mapping)


def _arms(tp: Any) -> list[Any]:
    """``tp`` without Annotated/Optional wrappers, a union as its members."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _arms(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [arm for a in get_args(tp) if a is not type(None) for arm in _arms(a)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field_type(model: type[BaseModel], key: str) -> Any | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias, info.validation_alias):
            return info.annotation
    return None


def _step(tp: Any, key: str | int) -> list[Any]:
    out: list[Any] = []
    for arm in _arms(tp):
        if _is_model(arm):
            if isinstance(key, str):
                if key == arm.__name__:  # pydantic names the union member it tried
                    out.append(arm)
                elif (sub := _field_type(arm, key)) is not None:
                    out.append(sub)
            continue
        origin, args = get_origin(arm), get_args(arm)
        if origin in _SEQUENCES and isinstance(key, int) and args:
            out.append(args[0])
        elif origin in _MAPPINGS and len(args) == 2:
            out.append(args[1])
    return out


def models_at(root: Any, loc: Loc) -> list[type[BaseModel]]:
    """The model classes an object at ``loc`` inside a ``root`` value is validated as."""
    found: list[Any] = [root]
    for key in loc:
        found = [t for tp in found for t in _step(tp, key)]
    return [arm for tp in found for arm in _arms(tp) if _is_model(arm)]


def field_names(model: type[BaseModel]) -> list[str]:
    """The keys a model accepts: its string aliases, and the field names where no alias
    stands in for them (or the model accepts names too)."""
    by_name = bool(model.model_config.get("validate_by_name") or model.model_config.get("populate_by_name"))
    names: list[str] = []
    for name, info in model.model_fields.items():
        aliases = [a for a in (info.validation_alias, info.alias) if isinstance(a, str)]
        for key in aliases + ([name] if by_name or not aliases else []):
            if key not in names:
                names.append(key)
    return names


def unknown_field(root: Any, loc: Loc) -> str:
    """Why ``loc`` (the unknown key last) was refused: 'unknown field', with the field
    probably meant: one of a section below (``cpus`` at the top of a job spec belongs in
    ``resources``), else the closest name at this level, if any is close."""
    key = str(loc[-1]) if loc else ""
    models = models_at(root, loc[:-1]) if root is not None else []
    for model in models:
        for name in model.model_fields:
            if any(key in field_names(m) for m in models_at(model, [name])):
                return f"unknown field; did you mean '{name}.{key}'?"
    by_lower = {n.lower(): n for m in models for n in field_names(m)}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"unknown field; did you mean '{by_lower[close[0]]}'?"
    return "unknown field"


def where(loc: Loc) -> str:
    return ".".join(str(p) for p in loc)


def error_lines(errors: Iterable[Mapping[str, Any]], root: Any = None, top: str | None = None) -> list[str]:
    """One ``location: problem`` line per pydantic error dict; ``root`` is the type the
    errors' locations start from (it lets an unknown field name the one probably meant);
    ``top`` names the location of an error about the whole input (default: none)."""
    lines = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        unknown = err.get("type") == "extra_forbidden"
        problem = unknown_field(root, loc) if unknown else str(err.get("msg", "invalid"))
        at = where(loc) or top
        lines.append(f"{at}: {problem}" if at else problem)
    return lines


def describe_errors(exc: ValidationError, root: Any = None) -> str:
    """A ValidationError as one line, its problems joined with '; '; ``root`` is the model
    (or type) that was validated."""
    return "; ".join(error_lines(exc.errors(include_url=False), root))
