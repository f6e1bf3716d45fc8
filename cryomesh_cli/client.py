"""The CLI's HTTP client for people and services: client-secret tokens, readable errors.

Credentials come from ``--hub/--client-id/--client-secret``, else the environment
(``CRYOMESH_HUB_URL``, ``CRYOMESH_CLIENT_ID``, ``CRYOMESH_CLIENT_SECRET``), else the file
``CRYOMESH_CREDENTIALS`` (default ``~/.config/cryomesh/credentials.json``, mode 0600).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import platformdirs


class CliError(Exception):
    """An error to print and exit 1 on."""


@dataclass
class Profile:
    hub_url: str
    client_id: str
    client_secret: str


def credentials_path() -> Path:
    env = os.environ.get("CRYOMESH_CREDENTIALS")
    return Path(env) if env else Path(platformdirs.user_config_dir("cryomesh", appauthor=False)) / "credentials.json"


def save_profile(profile: Profile, path: Path | None = None) -> Path:
    path = path or credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(profile), fh, indent=2)
    os.chmod(path, 0o600)
    return path


def load_profile(hub: str | None = None, client_id: str | None = None, client_secret: str | None = None) -> Profile:
    hub = hub or os.environ.get("CRYOMESH_HUB_URL")
    client_id = client_id or os.environ.get("CRYOMESH_CLIENT_ID")
    client_secret = client_secret or os.environ.get("CRYOMESH_CLIENT_SECRET")
    if not (hub and client_id and client_secret):
        path = credentials_path()
        if path.exists():
            saved = json.loads(path.read_text())
            hub = hub or saved.get("hub_url")
            client_id = client_id or saved.get("client_id")
            client_secret = client_secret or saved.get("client_secret")
    if not (hub and client_id and client_secret):
        raise CliError(
            "no credentials: pass --hub, --client-id and --client-secret, set CRYOMESH_HUB_URL, "
            f"CRYOMESH_CLIENT_ID and CRYOMESH_CLIENT_SECRET, or save them in {credentials_path()}"
        )
    return Profile(hub.rstrip("/"), client_id, client_secret)


def describe_error(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return f"{resp.status_code}: {resp.text[:300]}"
    error = body.get("error", "")
    detail = body.get("detail") or body.get("error_description") or ""
    return f"{resp.status_code} {error}: {detail}"


class HubSession:
    """A short-lived authenticated session for one CLI command."""

    def __init__(self, profile: Profile, timeout: float = 15) -> None:
        self.profile = profile
        self.http = httpx.Client(base_url=profile.hub_url, timeout=timeout)
        self._token: str | None = None

    def __enter__(self) -> HubSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def token(self) -> str:
        if self._token is None:
            try:
                resp = self.http.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self.profile.client_id, self.profile.client_secret),
                )
            except httpx.TransportError as exc:
                raise CliError(f"cannot reach the hub at {self.profile.hub_url}: {exc}") from exc
            if resp.status_code != 200:
                raise CliError(f"sign-in refused: {describe_error(resp)}")
            self._token = str(resp.json()["access_token"])
        return self._token

    def call(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            resp = self.http.request(
                method,
                path,
                json=json_body,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers={"Authorization": f"Bearer {self.token()}"},
            )
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the hub at {self.profile.hub_url}: {exc}") from exc
        if resp.status_code >= 400:
            raise CliError(describe_error(resp))
        return resp.json() if resp.content else None
