"""The agent's identity on disk: a private key that never leaves the site, and the
client id the hub gave it. The state directory is 0700 and the key file 0600."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey

KEY_FILE = "agent_key.json"
CREDENTIALS_FILE = "credentials.json"


@dataclass
class Credentials:
    hub_url: str
    client_id: str
    site: str
    token_endpoint: str
    enrollment_id: int


def ensure_state_dir(state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    return state_dir


def _write_private(path: Path, data: str) -> None:
    """Write atomically with mode 0600 from the first byte."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def generate_key() -> ECKey:
    key = ECKey.generate_key("P-256", private=True)
    return ECKey.import_key({**key.as_dict(private=True), "kid": key.thumbprint(), "alg": "ES256"})


def save_key(state_dir: Path, key: ECKey, name: str = KEY_FILE) -> Path:
    path = ensure_state_dir(state_dir) / name
    _write_private(path, json.dumps(key.as_dict(private=True)))
    return path


def load_key(state_dir: Path, name: str = KEY_FILE) -> ECKey:
    path = state_dir / name
    if not path.exists():
        raise FileNotFoundError(f"no agent key at {path}; run `cryomesh agent enroll` first")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    return ECKey.import_key(json.loads(path.read_text()))


def public_jwk(key: ECKey) -> dict[str, Any]:
    return key.as_dict(private=False)


def save_credentials(state_dir: Path, creds: Credentials) -> None:
    _write_private(ensure_state_dir(state_dir) / CREDENTIALS_FILE, json.dumps(asdict(creds), indent=2))


def load_credentials(state_dir: Path) -> Credentials:
    path = state_dir / CREDENTIALS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no credentials at {path}; run `cryomesh agent enroll` first")
    return Credentials(**json.loads(path.read_text()))
