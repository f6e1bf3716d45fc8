"""``cryomesh agent enroll``: make a key pair here, send only the public half with the code."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import httpx

from shared.version import __version__
from site_agent.client import raise_for
from site_agent.credentials import (
    CREDENTIALS_FILE,
    KEY_FILE,
    Credentials,
    generate_key,
    load_credentials,
    load_key,
    public_jwk,
    save_credentials,
    save_key,
)


class AlreadyEnrolled(Exception):
    """The state directory already holds an agent's key; enrolling again would replace it."""


def current_identity(state_dir: Path) -> str | None:
    """Describe the agent whose key is in ``state_dir``, or None when there is none."""
    if not (state_dir / KEY_FILE).exists() and not (state_dir / CREDENTIALS_FILE).exists():
        return None
    parts: list[str] = []
    try:
        creds = load_credentials(state_dir)
        parts.append(f"agent {creds.client_id} of site {creds.site} (enrollment {creds.enrollment_id}")
    except (OSError, ValueError, TypeError):
        parts.append("an agent (no readable credentials")
    with contextlib.suppress(OSError, ValueError):
        parts.append(f"key thumbprint {load_key(state_dir).thumbprint()}")
    return ", ".join(parts) + ")"


def refuse_if_enrolled(state_dir: Path) -> None:
    who = current_identity(state_dir)
    if who is None:
        return
    raise AlreadyEnrolled(
        f"{state_dir} already holds the key of {who}. Enrolling again makes a new key that needs a network "
        "admin's approval; the site is offline until then. Add --force to do it anyway."
    )


def enroll(hub_url: str, code: str, state_dir: Path, hostname: str | None = None, *, force: bool = False) -> Credentials:
    """Enroll a new key with the hub; refuse to replace an existing one unless ``force``."""
    if not force:
        refuse_if_enrolled(state_dir)
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
