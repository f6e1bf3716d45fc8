"""``cryomesh agent enroll``: make a key pair here, send only the public half with the code."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from shared.version import __version__
from site_agent.client import raise_for
from site_agent.credentials import Credentials, generate_key, public_jwk, save_credentials, save_key


def enroll(hub_url: str, code: str, state_dir: Path, hostname: str | None = None) -> Credentials:
    hub_url = hub_url.rstrip("/")
    with httpx.Client(base_url=hub_url, timeout=15) as http:
        meta = http.get("/.well-known/oauth-authorization-server")
        raise_for(meta)
        token_endpoint = meta.json()["token_endpoint"]
        key = generate_key()
        resp = http.post(
            "/api/v1/enrollments",
            json={
                "code": code,
                "public_jwk": public_jwk(key),
                "hostname": hostname or socket.gethostname(),
                "agent_version": __version__,
            },
        )
        raise_for(resp)
        body = resp.json()
    # The key is saved only once the hub has accepted the enrollment.
    save_key(state_dir, key)
    creds = Credentials(
        hub_url=hub_url,
        client_id=body["client_id"],
        site=body["site"],
        token_endpoint=token_endpoint,
        enrollment_id=body["id"],
    )
    save_credentials(state_dir, creds)
    return creds
