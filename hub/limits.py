"""Limits on what a request may carry, enforced before anything parses it (plain ASGI).

- ``BodyLimit``: a body over the route's limit is refused with 413 ``PayloadTooLarge``, from
  its Content-Length before a byte is read, or while it streams in (chunked bodies, or a
  Content-Length that lies). Agents' reports that list files (a dataset's manifest,
  transfer progress with one URL per file, audits) have their own, larger limit.
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


async def _send_error(send: Send, status: int, name: str, detail: str) -> None:
    body = json.dumps({"error": name, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        }
    )  # fmt: skip
    await send({"type": "http.response.body", "body": body})


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
