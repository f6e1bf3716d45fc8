"""One long-lived HTTP client to the hub, with tokens fetched by ``private_key_jwt``
(RFC 7523) and refreshed before they expire."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import httpx
from authlib.oauth2.rfc7523 import private_key_jwt_sign
from joserfc.jwk import ECKey

from shared.logging import request_id
from shared.version import __version__
from site_agent.errors import AuthRefused, HubRefused, HubUnavailable

log = logging.getLogger("cryomesh.agent.client")

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
#: Refresh the token when less than this share of its life remains.
REFRESH_AT = 0.25


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    rid = resp.request.headers.get("X-Request-ID") if resp.request else None
    if resp.status_code in RETRYABLE_STATUS:
        raise HubUnavailable(f"hub answered {resp.status_code}" + (f" (request {rid})" if rid else ""), _retry_after(resp))
    try:
        body = resp.json()
    except ValueError:
        body = {}
    error = str(body.get("error", "HTTPError"))
    detail = str(body.get("detail") or body.get("error_description") or resp.text[:200])
    raise HubRefused(resp.status_code, error, detail + (f" (request {rid})" if rid else ""))


class HubClient:
    def __init__(self, hub_url: str, client_id: str, key: ECKey, token_endpoint: str, timeout_s: float = 10) -> None:
        self.hub_url = hub_url.rstrip("/")
        self.client_id = client_id
        self.key = key
        self.token_endpoint = token_endpoint
        self._http = httpx.AsyncClient(
            base_url=self.hub_url,
            timeout=timeout_s,
            headers={"User-Agent": f"cryomesh-agent/{__version__}"},
        )
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lifetime = 0.0
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _assertion(self) -> str:
        token: str | bytes = private_key_jwt_sign(
            self.key,
            client_id=self.client_id,
            token_endpoint=self.token_endpoint,
            alg="ES256",
            claims={"exp": int(time.time()) + 60},
        )
        return token.decode() if isinstance(token, bytes) else token

    async def fetch_token(self) -> str:
        try:
            resp = await self._http.post(
                self.token_endpoint,
                data={
                    "grant_type": "client_credentials",
                    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": self._assertion(),
                },
            )
        except httpx.TransportError as exc:
            raise HubUnavailable(f"cannot reach the hub: {exc!r}") from exc
        if resp.status_code in RETRYABLE_STATUS:
            raise HubUnavailable(f"token endpoint answered {resp.status_code}", _retry_after(resp))
        if resp.status_code != 200:
            try:
                body = resp.json()
            except ValueError:
                body = {}
            raise AuthRefused(resp.status_code, str(body.get("error", "")), str(body.get("error_description", resp.text[:200])))
        body = resp.json()
        self._token = str(body["access_token"])
        self._token_lifetime = float(body.get("expires_in", 300))
        self._token_expires = time.monotonic() + self._token_lifetime
        log.info("got an access token valid for %.0f s", self._token_lifetime)
        return self._token

    async def token(self) -> str:
        async with self._lock:
            remaining = self._token_expires - time.monotonic()
            if self._token is None or remaining < self._token_lifetime * REFRESH_AT:
                await self.fetch_token()
            assert self._token is not None
            return self._token

    def drop_token(self) -> None:
        self._token = None

    async def request(self, method: str, path: str, *, json: Any = None, timeout: float | None = None) -> Any:
        """Call the hub; on a 401 fetch a fresh token once and try again.

        Each call has a request id, sent as ``X-Request-ID`` and set in the agent's log
        context meanwhile, so the agent's and the hub's log lines about it carry the same id;
        a failure names it too."""
        rid = uuid.uuid4().hex
        token = request_id.set(rid)
        try:
            for attempt in (1, 2):
                headers = {"Authorization": f"Bearer {await self.token()}", "X-Request-ID": rid}
                try:
                    resp = await self._http.request(
                        method, path, json=json, headers=headers,
                        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                    )  # fmt: skip
                except httpx.TransportError as exc:
                    raise HubUnavailable(f"cannot reach the hub: {exc!r} (request {rid})") from exc
                if resp.status_code == 401 and attempt == 1:
                    self.drop_token()
                    continue
                raise_for(resp)
                return resp.json() if resp.content else None
            raise AssertionError("unreachable")
        finally:
            request_id.reset(token)
