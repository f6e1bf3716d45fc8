"""The heartbeat's fast path (hub/capacity/fast_path.py) answers what FastAPI's route answers.

Two hubs on one database and one issuer: one as shipped (the fast path in front), one with
``heartbeat_fast_path=False`` (every heartbeat through the FastAPI route, as before the fast
path). Every request below goes to both, and both answers must have the same status, the
same body (the ack's timestamp aside) and the same headers a caller acts on. Each refusal's
own status and body are asserted too, so a change to both paths at once still shows.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.oauth2.rfc7523 import private_key_jwt_sign

from hub.capacity import fast_path
from tests.helpers import LOOPBACK, Agent, Hub, heartbeat_body, running_hub
from tests.services import wait_for

Answer = tuple[int, Any, dict[str, str | None]]


@pytest.fixture
def hubs(db_url: str, tmp_path: Path) -> Iterator[tuple[Hub, Hub]]:
    # One public URL for both, as hub processes behind a reverse proxy have: one issuer.
    with (
        running_hub(db_url, tmp_path / "fast") as fast,
        running_hub(db_url, tmp_path / "slow", fast.admin, public_url=fast.url, heartbeat_fast_path=False) as slow,
    ):
        assert slow.url != fast.url and slow.settings.issuer == fast.url
        yield fast, slow


def _answer(resp: httpx.Response) -> Answer:
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text
    if resp.status_code == 200:
        body = {**body, "received_at": "(when)"}
    headers = {h: resp.headers.get(h) for h in ("content-type", "www-authenticate", "retry-after")}
    return resp.status_code, body, headers


def _post(hub: Hub, site: str, content: bytes | Iterator[bytes], headers: dict[str, str]) -> Answer:
    with httpx.Client(base_url=hub.url, timeout=30) as c:
        return _answer(c.post(f"/api/v1/sites/{site}/heartbeat", content=content, headers=headers))


def _both(hubs: tuple[Hub, Hub], site: str, body: Any, token: str | None = None, **headers: str) -> Answer:
    """The same request to both hubs; their answers must agree. ``body`` is JSON unless bytes."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {}), **headers}
    sent = {k: v for k, v in sent.items() if v}
    fast, slow = (_post(h, site, content, sent) for h in hubs)
    assert fast == slow, f"fast path: {fast}\nFastAPI route: {slow}"
    return fast


def _agent_token(hub: Hub, agent: Agent, scope: str) -> str:
    assertion = private_key_jwt_sign(
        agent.key, client_id=agent.client_id, token_endpoint=hub.settings.token_endpoint, alg="ES256",
        claims={"exp": int(time.time()) + 60},
    )  # fmt: skip
    resp = LOOPBACK.post(
        f"{hub.url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion.decode() if isinstance(assertion, bytes) else assertion,
        },
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def _unauthorized(detail: str) -> Answer:
    return 401, {"error": "Unauthorized", "detail": detail}, _headers(www='Bearer error="invalid_token"')


def _headers(www: str | None = None, retry: str | None = None) -> dict[str, str | None]:
    return {"content-type": "application/json", "www-authenticate": www, "retry-after": retry}


def test_the_fast_path_answers_each_request_as_the_fastapi_route_does(hubs: tuple[Hub, Hub], tmp_path: Path) -> None:
    fast, _ = hubs
    for name in ("alpha", "beta"):
        fast.create_site(name)
    alpha = fast.enroll_agent("alpha", tmp_path / "alpha")
    token = fast.agent_token(alpha)
    good = heartbeat_body()
    raw = json.dumps(good).encode()

    # Accepted, also when FastAPI takes it (a JSON media type other than application/json).
    assert _both(hubs, "alpha", good, token) == (200, {"site": "alpha", "received_at": "(when)", "next_in_s": 15.0}, _headers())
    assert _both(hubs, "alpha", good, token, **{"Content-Type": "application/json; charset=utf-8"})[0] == 200
    assert _both(hubs, "alpha", good, token, **{"Content-Type": "application/vnd.cryomesh+json"})[0] == 200

    # The caller.
    need = "this endpoint needs a bearer token (Authorization: Bearer <token>)"
    assert _both(hubs, "alpha", good) == _unauthorized(need)
    assert _both(hubs, "alpha", good, Authorization=f"Basic {token}") == _unauthorized(need)
    assert _both(hubs, "alpha", good, Authorization="Bearer") == _unauthorized(need)
    assert _both(hubs, "alpha", good, "not-a-jwt") == _unauthorized("the bearer token is not a well-formed JWT")
    lacks = (403, {"error": "Forbidden", "detail": "the token lacks the scope(s): agent"}, _headers())
    assert _both(hubs, "alpha", good, fast.token_for(fast.admin)) == lacks
    assert _both(hubs, "alpha", good, fast.token_for(fast.account("site_admin", site="alpha"))) == lacks
    assert _both(hubs, "alpha", good, _agent_token(fast, alpha, "sites:read")) == lacks

    # The site: only the agent's own.
    other = (403, {"error": "Forbidden", "detail": "an agent of site alpha cannot act as site beta"}, _headers())
    assert _both(hubs, "beta", good, token) == other
    assert _both(hubs, "gamma", good, token) == (404, {"error": "NotFound", "detail": "no site named 'gamma'"}, _headers())

    # The body: a malformed one is 422 before the token is looked at, as FastAPI does it.
    for who in (token, None, "not-a-jwt"):
        status, body, _ = _both(hubs, "alpha", b'{"agent_version": ', who)
        assert status == 422 and body["error"] == "ValidationError" and "JSON" in body["detail"], body
    invalid = {**good, "partitions": []}
    status, body, _ = _both(hubs, "alpha", invalid, token)
    assert status == 422 and "partitions" in body["detail"], body
    assert _both(hubs, "alpha", invalid) == _unauthorized(need), "a well-formed body is checked after the caller"
    # A wire payload tolerates a newer agent's additions (docs/architecture.md, "Strict inputs, tolerant wire").
    assert _both(hubs, "alpha", {**good, "from_a_newer_agent": 1}, token)[0] == 200
    status, body, _ = _both(hubs, "alpha", {**good, "partitions": [{**good["partitions"][0], "cpus_total": "many"}]}, token)
    assert status == 422 and "cpus_total" in body["detail"], body
    status, body, _ = _both(hubs, "alpha", raw.replace(b'"interval_s": 15', b'"interval_s": NaN'), token)
    assert status == 422 and "interval_s" in body["detail"], body
    for content_type in ("text/plain", ""):
        status, body, _ = _both(hubs, "alpha", good, token, **{"Content-Type": content_type})
        assert status == 422 and body["error"] == "ValidationError", body
    assert _both(hubs, "alpha", b"", token)[0] == 422

    # Too large, announced or streamed (chunked: the limit is met while the body is read).
    limit = fast.settings.max_body_bytes
    too_large = (
        413,
        {"error": "PayloadTooLarge", "detail": f"the request body is larger than this endpoint accepts ({limit} bytes)"},
    )
    padded = json.dumps({**good, "attempts": ["x" * 1000] * (limit // 1000 + 1)}).encode()
    assert _both(hubs, "alpha", padded, token)[:2] == too_large
    for hub in hubs:
        with httpx.Client(base_url=hub.url, timeout=30) as c:
            chunks = iter([padded[:1000], padded[1000:]])
            resp = c.post("/api/v1/sites/alpha/heartbeat", content=chunks, headers={"Authorization": f"Bearer {token}"})
        assert _answer(resp)[:2] == too_large


def test_a_revoked_agent_and_a_suspended_site_are_refused_at_once_on_both_paths(hubs: tuple[Hub, Hub], tmp_path: Path) -> None:
    """Each change made through one hub: that hub refuses at once, the other once it has
    re-read the auth version (``auth_recheck_s``, 1 s; on PostgreSQL it is also told), as
    two hub processes do. The revocation goes through the hub without the fast path, so the
    fast path must notice a change made elsewhere."""
    fast, slow = hubs
    sites = [fast.create_site()["name"] for _ in range(2)]
    agents = [fast.enroll_agent(s, tmp_path / s) for s in sites]
    tokens = [fast.agent_token(a) for a in agents]
    beat = json.dumps(heartbeat_body()).encode()
    for site, token in zip(sites, tokens, strict=True):
        assert _both(hubs, site, heartbeat_body(), token)[0] == 200  # each hub has the token cached now

    with slow.as_admin() as c:
        assert c.post(f"/api/v1/agents/{agents[0].client_id}/revoke").status_code == 200
    revoked = _unauthorized("the client this token was issued to has been disabled or removed")
    assert _post(slow, sites[0], beat, _auth(tokens[0])) == revoked, "refused at once"
    wait_for(lambda: _post(fast, sites[0], beat, _auth(tokens[0]))[0] == 401, 30, "the fast path to refuse the agent")
    assert _both(hubs, sites[0], heartbeat_body(), tokens[0]) == revoked

    with fast.as_admin() as c:
        assert c.post(f"/api/v1/sites/{sites[1]}/suspend").status_code == 200
    suspended = (403, {"error": "Forbidden", "detail": f"site {sites[1]} is suspended"}, _headers())
    assert _post(fast, sites[1], beat, _auth(tokens[1])) == suspended, "refused at once"
    wait_for(lambda: _post(slow, sites[1], beat, _auth(tokens[1]))[0] == 403, 30, "the other hub to refuse the agent")
    assert _both(hubs, sites[1], heartbeat_body(), tokens[1]) == suspended


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def test_a_heartbeat_the_database_cannot_take_is_503_on_both_paths(tmp_path: Path) -> None:
    """SQLite's write lock held by another connection past the busy timeout: the writer's
    transaction fails, and the heartbeat is answered 503 with Retry-After, as before."""
    db = tmp_path / "hub.db"
    url = f"sqlite:///{db}"
    with (
        running_hub(url, tmp_path / "fast", database_busy_timeout_s=0.5) as fast,
        running_hub(
            url, tmp_path / "slow", fast.admin, public_url=fast.url, heartbeat_fast_path=False, database_busy_timeout_s=0.5
        ) as slow,
    ):
        hubs = (fast, slow)
        fast.create_site("alpha")
        token = fast.agent_token(fast.enroll_agent("alpha", tmp_path / "alpha"))
        assert _both(hubs, "alpha", heartbeat_body(), token)[0] == 200
        lock = sqlite3.connect(db, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            busy = (503, {"error": "ServiceUnavailable", "detail": "the database is busy; retry"}, _headers(retry="1"))
            assert _both(hubs, "alpha", heartbeat_body(), token) == busy
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert _both(hubs, "alpha", heartbeat_body(), token)[0] == 200


def test_only_well_formed_heartbeats_take_the_fast_path(sqlite_hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the fast path hands to FastAPI's route (replaying the body it read): requests it
    would not answer the same way itself. A well-formed heartbeat is not handed on."""
    handed_on: list[str] = []
    replay = fast_path._replay
    monkeypatch.setattr(fast_path, "_replay", lambda seen, receive: handed_on.append("x") or replay(seen, receive))
    sqlite_hub.create_site("alpha")
    token = sqlite_hub.agent_token(sqlite_hub.enroll_agent("alpha", tmp_path / "alpha"))
    with sqlite_hub.http(token) as c:
        assert c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body()).status_code == 200
        assert c.post("/api/v1/sites/beta/heartbeat", json=heartbeat_body()).status_code == 404
        assert handed_on == [], "a well-formed heartbeat with a token is answered by the fast path, refusals too"
        assert c.post("/api/v1/sites/alpha/heartbeat", json={"agent_version": "1"}).status_code == 422
        assert len(handed_on) == 1
    with sqlite_hub.http() as c:
        assert c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body()).status_code == 401
        assert len(handed_on) == 2
