"""Edge cases of the agent's hub client that a live hub can't be made to produce on
demand (a 503 with Retry-After, a token that expires mid-run). The hub here is an
``httpx.MockTransport``; everything else in the agent is real."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from site_agent.backoff import Backoff
from site_agent.client import HubClient
from site_agent.credentials import generate_key
from site_agent.errors import AuthRefused, HubRefused, HubUnavailable


def client_with(handler: Any) -> HubClient:
    c = HubClient("http://hub.test", "agent-x", generate_key(), "http://hub.test/oauth/token")
    c._http = httpx.AsyncClient(base_url="http://hub.test", transport=httpx.MockTransport(handler))
    return c


def token_reply(expires_in: int = 600, n: list[int] | None = None) -> httpx.Response:
    if n is not None:
        n.append(1)
    return httpx.Response(200, json={"access_token": f"tok-{len(n or [])}", "token_type": "Bearer", "expires_in": expires_in})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_retryable_statuses_carry_retry_after() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/oauth/token":
            return token_reply()
        return httpx.Response(503, headers={"Retry-After": "7"})

    c = client_with(handler)
    with pytest.raises(HubUnavailable) as err:
        run(c.request("POST", "/api/v1/sites/s/heartbeat", json={}))
    assert err.value.retry_after == 7.0


def test_refusal_is_final_and_readable() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/oauth/token":
            return token_reply()
        return httpx.Response(422, json={"error": "ValidationError", "detail": "partitions: too short"})

    with pytest.raises(HubRefused) as err:
        run(client_with(handler).request("POST", "/x", json={}))
    assert (err.value.status, err.value.error) == (422, "ValidationError")
    assert err.value.detail.startswith("partitions: too short (request ")
    assert not isinstance(err.value, HubUnavailable)


def test_one_request_id_in_the_header_the_agents_log_and_the_error(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from shared.logging import request_id

    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/oauth/token":
            return token_reply()
        seen.append(req.headers["X-Request-ID"])
        logging.getLogger("cryomesh.agent.test").warning("inside the call: %s", request_id.get())
        return httpx.Response(409, json={"error": "Conflict", "detail": "superseded"})

    with caplog.at_level(logging.WARNING), pytest.raises(HubRefused) as err:
        run(client_with(handler).request("POST", "/x", json={}))
    (rid,) = seen
    assert err.value.detail == f"superseded (request {rid})"
    assert f"inside the call: {rid}" in caplog.text, "the agent's log context carries the id meanwhile"
    assert request_id.get() is None, "and drops it afterwards"


def test_a_401_fetches_a_new_token_once() -> None:
    tokens: list[int] = []
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/oauth/token":
            form = dict(x.split("=", 1) for x in req.content.decode().split("&"))
            assert form["client_assertion_type"].endswith("jwt-bearer") and form["client_assertion"].count(".") == 2
            return token_reply(n=tokens)
        seen.append(req.headers["authorization"])
        return httpx.Response(401 if len(seen) == 1 else 200, json={"ok": True})

    assert run(client_with(handler).request("GET", "/api/v1/whoami")) == {"ok": True}
    assert seen == ["Bearer tok-1", "Bearer tok-2"] and len(tokens) == 2


def test_token_is_refreshed_before_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens: list[int] = []
    clock = [1000.0]
    monkeypatch.setattr("site_agent.client.time.monotonic", lambda: clock[0])
    c = client_with(lambda req: token_reply(expires_in=100, n=tokens))
    assert run(c.token()) == "tok-1"
    clock[0] += 70  # 30 s of 100 left: still more than a quarter
    assert run(c.token()) == "tok-1"
    clock[0] += 6  # 24 s left: refresh now, before it expires
    assert run(c.token()) == "tok-2"


def test_pending_enrollment_is_recognised() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={
                "error": "invalid_client",
                "error_description": "this agent's enrollment is waiting for a network admin's approval",
            },
        )

    with pytest.raises(AuthRefused) as err:
        run(client_with(handler).token())
    assert err.value.pending


def test_transport_failure_is_retryable() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    with pytest.raises(HubUnavailable, match="cannot reach the hub"):
        run(client_with(handler).token())


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    b = Backoff(base=1, cap=8)
    delays = [b.next_delay() for _ in range(50)]
    assert all(0 <= d <= 8 for d in delays)
    assert len({round(d, 6) for d in delays}) > 40, "full jitter: delays are spread, not in lockstep"
    assert b.next_delay(hint=30) == 30, "Retry-After is honoured even past the cap"
    b.reset()
    assert all(b.next_delay() <= 1 for _ in range(1))
