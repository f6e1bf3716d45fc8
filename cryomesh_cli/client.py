"""The CLI's HTTP client for people and services: client-secret tokens, readable errors.

Credentials come from ``--hub/--client-id/--client-secret``, else the environment
(``CRYOMESH_HUB_URL``, ``CRYOMESH_CLIENT_ID``, ``CRYOMESH_CLIENT_SECRET``), else the file
``CRYOMESH_CREDENTIALS`` (default ``~/.config/cryomesh/credentials.json``, mode 0600),
else the token ``cryomesh login`` saved (``~/.config/cryomesh/token.json``, mode 0600).
"""

from __future__ import annotations

import json
import os
import time
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
    access_token: str | None = None  # from `cryomesh login` (a person's sign-in session)


_API_SUFFIXES = ("/api/v1", "/api", "/docs", "/dashboard")


def normalise_hub_url(url: str) -> str:
    """The hub's base URL: people paste ``https://hub.example.org/api/v1`` (or ``/docs``); the
    CLI adds the paths itself."""
    url = url.strip().rstrip("/")
    for suffix in _API_SUFFIXES:
        if url.lower().endswith(suffix):
            return url[: -len(suffix)].rstrip("/")
    return url


def token_path() -> Path:
    env = os.environ.get("CRYOMESH_TOKEN_FILE")
    return Path(env) if env else Path(platformdirs.user_config_dir("cryomesh", appauthor=False)) / "token.json"


def save_token(hub_url: str, token: dict[str, Any]) -> Path:
    path = token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    expires_at = time.time() + float(token.get("expires_in", 0))
    with os.fdopen(fd, "w") as fh:
        json.dump({"hub_url": hub_url, "access_token": token["access_token"], "expires_at": expires_at}, fh)
    os.chmod(path, 0o600)
    return path


def saved_token(hub: str | None) -> tuple[str, str] | None:
    """(hub URL, token) saved by `cryomesh login`, if still valid and for this hub."""
    path = token_path()
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    if saved.get("expires_at", 0) <= time.time() + 30 or (hub and saved["hub_url"] != normalise_hub_url(hub)):
        return None
    return str(saved["hub_url"]), str(saved["access_token"])


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
    if not (client_id and client_secret):
        login = saved_token(hub)
        if login is not None:
            return Profile(login[0], "", "", access_token=login[1])
    if not (hub and client_id and client_secret):
        raise CliError(
            "no credentials: run `cryomesh login --hub URL`, pass --hub, --client-id and --client-secret, set "
            f"CRYOMESH_HUB_URL, CRYOMESH_CLIENT_ID and CRYOMESH_CLIENT_SECRET, or save them in {credentials_path()}"
        )
    return Profile(normalise_hub_url(hub), client_id, client_secret)


def describe_error(resp: httpx.Response) -> str:
    """The hub's refusal as text a person can act on: one line per problem, no internals."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = " ".join(resp.text.split())[:300]
        return f"{resp.status_code} from {resp.request.url}: {text or resp.reason_phrase}"
    error = str(body.get("error", ""))
    detail = body.get("detail") or body.get("error_description") or ""
    if not isinstance(detail, str):  # a framework's list of problems, not the hub's own body
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    if resp.status_code == 404 and detail in ("Not Found", "") and error in ("NotFound", ""):
        base = str(resp.request.url).split("/api/")[0].split("/oauth/")[0]
        return (
            f"404: {base} has no {resp.request.url.path}; is that the hub? "
            "The hub URL should be the base, e.g. https://hub.example.org"
        )
    if error == "ValidationError" and "; " in detail:
        problems = "\n".join(f"  {p}" for p in detail.split("; "))
        return f"{resp.status_code} {error}: the hub refused the request:\n{problems}"
    return f"{resp.status_code} {error}: {detail}" if error else f"{resp.status_code}: {detail}"


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
        if self._token is None and self.profile.access_token:
            self._token = self.profile.access_token
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


def device_login(hub_url: str, show: Any, timeout_s: float = 600) -> dict[str, Any]:
    """RFC 8628: ask for a device code, show the person where to approve it, poll for the token."""
    hub_url = normalise_hub_url(hub_url)
    with httpx.Client(base_url=hub_url, timeout=15) as http:
        try:
            d = http.post("/oauth/device_authorization", data={"client_id": "cryomesh-cli"})
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the hub at {hub_url}: {exc}") from exc
        if d.status_code != 200:
            raise CliError(f"the hub refused the sign-in: {describe_error(d)}")
        grant = d.json()
        show(grant)
        interval = float(grant.get("interval", 5))
        deadline = time.monotonic() + min(timeout_s, float(grant.get("expires_in", timeout_s)))
        poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": grant["device_code"],
                "client_id": "cryomesh-cli"}  # fmt: skip
        while time.monotonic() < deadline:
            time.sleep(interval)
            r = http.post("/oauth/token", data=poll)
            if r.status_code == 200:
                return dict(r.json())
            error = r.json().get("error") if r.headers.get("content-type", "").startswith("application/json") else None
            if error == "slow_down":
                interval += 5
            elif error != "authorization_pending":
                raise CliError(f"sign-in not completed: {describe_error(r)}")
    raise CliError("the sign-in was not approved in time")
