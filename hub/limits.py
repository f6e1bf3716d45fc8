"""Limits on what a request may carry, enforced before anything parses it (plain ASGI).

- ``BodyLimit``: a body over the route's limit is refused with 413 ``PayloadTooLarge``, from
  its Content-Length before a byte is read, or while it streams in (chunked bodies, or a
  Content-Length that lies). Agents' reports that list files (a dataset's manifest,
  transfer progress with one URL per file, audits) have their own, larger limit.
- ``InFlightLimit``: past ``max_requests_in_flight`` requests at once, a request is answered
  503 ``ServiceUnavailable`` with ``Retry-After`` at once, before its body is read or its
  token checked, so a burst costs the hub almost nothing and it recovers by itself; agents
  back off with jitter. Not counted: ``/healthz`` (it must answer while the hub is busy) and
  long-polls for work (``LONG_POLL_ROUTES``), which wait for most of their life holding
  nothing; their short reads queue for handler threads like any request.
- ``UrlGuard``: a NUL in the path or query string is refused with 422 (PostgreSQL cannot
  hold NUL in text, and no name or filter contains one).
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Agents' reports that list files, whose bodies may be larger than ``max_body_bytes``:
#: dataset registration (the manifest), transfer progress (one presigned URL per file,
#: files sent again or found corrupt), transfer failures and audits (per-file findings).
FILE_LIST_ROUTES = re.compile(r"^/api/v1/(datasets|transfers/[^/]+/(progress|fail)|sites/[^/]+/replicas/[^/]+/audit)/?$")


async def _send_error(send: Send, status: int, name: str, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps({"error": name, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"), *headers],
        }
    )  # fmt: skip
    await send({"type": "http.response.body", "body": body})


#: An oversized body is read and thrown away (never kept) up to this much before the 413 is
#: sent: a server that answers and closes while the client is still sending makes the
#: client's TCP stack see a reset instead of the answer. Past it, the connection is closed.
DRAIN_BYTES = 8 * 2**20


async def _discard(receive: Receive, most: int) -> None:
    seen = 0
    while seen <= most:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_manifest_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_manifest_body_bytes = max_manifest_body_bytes

    def limit_for(self, scope: Scope) -> int:
        if scope["method"] == "POST" and FILE_LIST_ROUTES.match(scope["path"]):
            return self.max_manifest_body_bytes
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        detail = f"the request body is larger than this endpoint accepts ({limit} bytes)"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _discard(receive, DRAIN_BYTES)
                await _send_error(send, 413, "PayloadTooLarge", detail)
                return

        received = 0
        exceeded = False
        answered = False  # the 413 was sent
        started = False  # the application's own answer began before the limit was passed

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Stop reading: the application sees a disconnect and whatever it answers
                    # is replaced by the 413 below.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered, started
            if exceeded and not started:
                if not answered:
                    answered = True
                    await _send_error(send, 413, "PayloadTooLarge", detail)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not answered and not started:
            await _send_error(send, 413, "PayloadTooLarge", detail)


def _has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


class UrlGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _has_nul(scope):
            await _send_error(send, 422, "ValidationError", "the URL contains a NUL character")
            return
        await self.app(scope, receive, send)


#: Agents' long-polls, which spend most of their life waiting, holding no thread or connection.
LONG_POLL_ROUTES = re.compile(r"^/api/v1/sites/[^/]+/assignments/?$")
#: Always answered, however busy: liveness probes must not fail because the hub is loaded.
UNLIMITED_PATHS = frozenset({"/healthz"})
#: Seconds a refused caller is asked to wait (agents add jitter).
RETRY_AFTER_S = 1


class InFlightLimit:
    def __init__(self, app: ASGIApp, *, max_in_flight: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # one event loop: no lock needed

    def counted(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path in UNLIMITED_PATHS:
            return False
        return not (scope["method"] == "GET" and LONG_POLL_ROUTES.match(path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.counted(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            detail = f"the hub is busy ({self.in_flight} requests in flight); retry in {RETRY_AFTER_S} s"
            await _send_error(send, 503, "ServiceUnavailable", detail, ((b"retry-after", str(RETRY_AFTER_S).encode()),))
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
