"""Request ids: taken from ``X-Request-ID`` (agents send one) or made, echoed back, and
put on every log line written while the request is served."""

from __future__ import annotations

import itertools
import os
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logging import configure_logging, request_id

__all__ = ["RequestIdMiddleware", "configure_logging", "new_request_id"]

# A made id is this process's random prefix and a counter (32 hex digits, as a UUID's hex):
# unique across processes and restarts without a uuid4 per request (about 3 % of a
# heartbeat's hub CPU: docs/benchmarks.md, "branch hb-cpu"). Request ids only correlate log
# lines; nothing relies on them being unguessable.
_prefix = ""
_counter = itertools.count()


def _new_process() -> None:
    global _prefix, _counter
    _prefix, _counter = secrets.token_hex(8), itertools.count()


_new_process()
os.register_at_fork(after_in_child=_new_process)


def new_request_id() -> str:
    return f"{_prefix}{next(_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        rid = given if 0 < len(given) <= 128 and given.isprintable() else new_request_id()
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
