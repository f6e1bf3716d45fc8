"""One error hierarchy and the handlers that render it as ``{"error", "detail"}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.schemas.common import ErrorBody
from shared.validation import error_lines

log = logging.getLogger("cryomesh.hub")


class CryomeshError(Exception):
    status_code = 500

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequest(CryomeshError):
    status_code = 400


class Unauthorized(CryomeshError):
    status_code = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class Forbidden(CryomeshError):
    status_code = 403


class NotFound(CryomeshError):
    status_code = 404


class Conflict(CryomeshError):
    status_code = 409


class Gone(CryomeshError):
    status_code = 410


def responses(*errors: type[CryomeshError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the refusals a route can make."""
    return {e.status_code: {"model": ErrorBody, "description": e.__name__} for e in errors}


AUTH_ERRORS = (Unauthorized, Forbidden)


def _body(name: str, detail: str) -> dict[str, str]:
    return {"error": name, "detail": detail}


def _body_type(request: Request) -> Any:
    """The type the route validates its JSON body as (None when unknown), so an unknown
    field can be matched against the fields of the model where it was found."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    field_info = getattr(body_field, "field_info", None)
    return getattr(field_info, "annotation", None)


def validation_detail(request: Request, exc: RequestValidationError) -> str:
    """``where: what`` for each problem, joined by '; '; unknown fields name the one probably meant."""
    root = _body_type(request)
    problems = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        in_body = bool(loc) and loc[0] == "body"
        problems += error_lines([{**err, "loc": loc[1:] if in_body else loc}], root if in_body else None, top="body")
    return "; ".join(problems)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CryomeshError)
    async def _cryomesh_error(request: Request, exc: CryomeshError) -> JSONResponse:
        return JSONResponse(_body(type(exc).__name__, exc.detail), exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_body("ValidationError", validation_detail(request, exc)), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return JSONResponse(_body(name, str(exc.detail)), exc.status_code)

    @app.exception_handler(OperationalError)
    async def _database_busy(request: Request, exc: OperationalError) -> JSONResponse:
        # A lock not granted within database_busy_timeout_s ("database is locked", PostgreSQL's
        # lock_timeout), or the database away: the caller retries.
        log.warning("database unavailable: %s", exc)
        return JSONResponse(_body("ServiceUnavailable", "the database is busy; retry"), 503, headers={"Retry-After": "1"})

    @app.exception_handler(PoolTimeout)
    async def _no_connection(request: Request, exc: PoolTimeout) -> JSONResponse:
        # A backstop: the pool has a connection for every handler thread (hub/db.py).
        log.warning("no database connection free: %s", exc)
        return JSONResponse(_body("ServiceUnavailable", "the hub is busy; retry"), 503, headers={"Retry-After": "1"})

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> JSONResponse:
        # A backstop: inputs are validated (bounded integers, no NUL) before they reach the
        # database, so this names a gap in that validation; logged so it gets closed.
        log.warning("the database refused a value on %s %s: %s", request.method, request.url.path, exc.orig)
        return JSONResponse(_body("ValidationError", f"a value cannot be stored: {exc.orig}"[:500]), 422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(_body("InternalError", "an unexpected error occurred; it has been logged"), 500)
