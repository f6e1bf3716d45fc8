"""Agent key rotation: the new public key is registered with a token got with the old key;
only then does the new key replace the old on disk."""

from __future__ import annotations

import asyncio

from site_agent.client import HubClient
from site_agent.config import AgentSettings
from site_agent.credentials import KEY_FILE, generate_key, load_credentials, load_key, public_jwk, save_key


async def _rotate(settings: AgentSettings) -> str:
    state = settings.agent.state_dir
    creds = load_credentials(state)
    client = HubClient(settings.agent.hub_url or creds.hub_url, creds.client_id, load_key(state), creds.token_endpoint)
    new = generate_key()
    # Keep the new key on disk before the hub switches, so a crash in between loses nothing.
    save_key(state, new, name=KEY_FILE + ".next")
    try:
        await client.request("PUT", "/api/v1/agents/me/key", json={"public_jwk": public_jwk(new)})
    finally:
        await client.aclose()
    (state / (KEY_FILE + ".next")).replace(state / KEY_FILE)
    return str(new.thumbprint())


def rotate_key(settings: AgentSettings) -> str:
    return asyncio.run(_rotate(settings))
