"""People signing in: first password by one-time code, the authorization code flow with
PKCE (what the dashboard does), the device grant (what `cryomesh login` does), sessions
that expire and sign-out that ends every token of the session."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from tests.helpers import Hub

PASSWORD = "correct horse battery staple"


def person(hub: Hub, username: str = "rin", **kw: Any) -> dict[str, Any]:
    body = {"name": "Rin Tanaka", "role": "researcher", "institution": "osaka-u", "username": username, **kw}
    with hub.as_admin() as c:
        acct = c.post("/api/v1/accounts", json=body).json()
    assert acct["setup_code"], acct
    with httpx.Client(base_url=hub.url) as c:
        r = c.post("/api/v1/accounts/setup", json={"username": username, "code": acct["setup_code"], "password": PASSWORD})
    assert r.status_code == 204, r.text
    return dict(acct)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(hub: Hub, challenge: str, **kw: str) -> dict[str, str]:
    return {"response_type": "code", "client_id": "cryomesh-dashboard", "redirect_uri": f"{hub.url}/dashboard/",
            "state": "s-123", "code_challenge": challenge, "code_challenge_method": "S256", **kw}  # fmt: skip


def sign_in(hub: Hub, username: str = "rin", password: str = PASSWORD) -> str:
    verifier, challenge = pkce()
    params = authorize_params(hub, challenge)
    with httpx.Client(base_url=hub.url) as c:
        r = c.post("/oauth/authorize", data={**params, "username": username, "password": password})
        assert r.status_code == 303, r.text
        q = parse_qs(urlparse(r.headers["location"]).query)
        t = c.post("/oauth/token", data={"grant_type": "authorization_code", "code": q["code"][0], "code_verifier": verifier,
                                         "client_id": "cryomesh-dashboard", "redirect_uri": params["redirect_uri"]})  # fmt: skip
    assert t.status_code == 200, t.text
    return str(t.json()["access_token"])


def test_first_password_needs_the_setup_code_and_a_real_password(sqlite_hub: Hub) -> None:
    with sqlite_hub.as_admin() as c:
        acct = c.post(
            "/api/v1/accounts", json={"name": "Ken", "role": "researcher", "institution": "kek", "username": "ken"}
        ).json()
        taken = c.post("/api/v1/accounts", json={"name": "K2", "role": "researcher", "institution": "kek", "username": "ken"})
    assert taken.status_code == 409 and "taken" in taken.json()["detail"]
    with httpx.Client(base_url=sqlite_hub.url) as c:
        wrong = c.post("/api/v1/accounts/setup", json={"username": "ken", "code": "nope", "password": PASSWORD})
        assert wrong.status_code == 401 and "setup code" in wrong.json()["detail"]
        short = c.post("/api/v1/accounts/setup", json={"username": "ken", "code": acct["setup_code"], "password": "short"})
        assert short.status_code == 400 and "at least 12" in short.json()["detail"]
        ok = c.post("/api/v1/accounts/setup", json={"username": "ken", "code": acct["setup_code"], "password": PASSWORD})
        assert ok.status_code == 204
        again = c.post("/api/v1/accounts/setup", json={"username": "ken", "code": acct["setup_code"], "password": PASSWORD})
        assert again.status_code == 401, "the code is one-time"


def test_authorization_code_with_pkce(sqlite_hub: Hub) -> None:
    acct = person(sqlite_hub)
    verifier, challenge = pkce()
    params = authorize_params(sqlite_hub, challenge)
    with httpx.Client(base_url=sqlite_hub.url) as c:
        page = c.get("/oauth/authorize", params=params)
        assert page.status_code == 200 and 'name="password"' in page.text
        assert page.headers["x-frame-options"] == "DENY"
        no_pkce = c.get("/oauth/authorize", params={k: v for k, v in params.items() if not k.startswith("code_")})
        assert no_pkce.status_code == 400 and "code_challenge" in no_pkce.text
        plain = c.get("/oauth/authorize", params={**params, "code_challenge_method": "plain"})
        assert plain.status_code == 400
        elsewhere = c.get("/oauth/authorize", params={**params, "redirect_uri": "https://evil.example/cb"})
        assert elsewhere.status_code == 400 and "evil" not in elsewhere.headers.get("location", "")
        bad = c.post("/oauth/authorize", data={**params, "username": "rin", "password": "wrong password!"})
        assert bad.status_code == 401 and "Wrong username or password" in bad.text
        r = c.post("/oauth/authorize", data={**params, "username": "rin", "password": PASSWORD})
        assert r.status_code == 303
        loc = urlparse(r.headers["location"])
        assert f"{loc.scheme}://{loc.netloc}{loc.path}" == params["redirect_uri"]
        q = parse_qs(loc.query)
        assert q["state"] == ["s-123"]
        token_req = {"grant_type": "authorization_code", "code": q["code"][0], "client_id": "cryomesh-dashboard",
                     "redirect_uri": params["redirect_uri"]}  # fmt: skip
        wrong = c.post("/oauth/token", data={**token_req, "code_verifier": secrets.token_urlsafe(48)})
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
        r = c.post("/oauth/token", data={**token_req, "code_verifier": verifier})
        assert r.status_code == 200 and r.json()["token_type"].lower() == "bearer"
        reuse = c.post("/oauth/token", data={**token_req, "code_verifier": verifier})
        assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant", "a code is good once"
    token = sign_in(sqlite_hub)
    with sqlite_hub.http(token) as c:
        me = c.get("/api/v1/session").json()
        assert (me["client_id"], me["role"], me["institution"]) == (acct["client_id"], "researcher", "osaka-u")
        assert me["session"] and me["expires_at"]
        assert (me["name"], me["username"]) == ("Rin Tanaka", "rin"), "the dashboard's header shows who this is"
        assert c.get("/api/v1/jobs").status_code == 200


def test_sign_out_ends_the_session_at_once(sqlite_hub: Hub) -> None:
    person(sqlite_hub)
    token, other = sign_in(sqlite_hub), sign_in(sqlite_hub)
    with sqlite_hub.http(token) as c:
        assert c.post("/api/v1/session/end").status_code == 204
        r = c.get("/api/v1/jobs")
        assert r.status_code == 401 and "sign in again" in r.json()["detail"]
    with sqlite_hub.http(other) as c:
        assert c.get("/api/v1/jobs").status_code == 200, "another sign-in of the same person goes on"
    with sqlite_hub.as_admin() as c:
        r = c.post("/api/v1/session/end")
    assert r.status_code == 409 and "client credentials" in r.json()["detail"]


def test_device_grant_for_the_cli(sqlite_hub: Hub) -> None:
    person(sqlite_hub)
    with httpx.Client(base_url=sqlite_hub.url) as c:
        d = c.post("/oauth/device_authorization", data={"client_id": "cryomesh-cli"}).json()
        assert d["verification_uri"] == f"{sqlite_hub.url}/device" and re.fullmatch(r"[A-Z]{4}-[A-Z]{4}", d["user_code"])
        poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": d["device_code"],
                "client_id": "cryomesh-cli"}  # fmt: skip
        r = c.post("/oauth/token", data=poll)
        assert r.status_code == 400 and r.json()["error"] == "authorization_pending"
        r = c.post("/oauth/token", data=poll)
        assert r.json()["error"] == "slow_down", "polling faster than the interval"
        page = c.get("/device", params={"user_code": d["user_code"]})
        assert page.status_code == 200 and d["user_code"] in page.text
        bad = c.post("/device", data={"user_code": d["user_code"], "username": "rin", "password": "nope nope nope"})
        assert bad.status_code == 401
        ok = c.post("/device", data={"user_code": d["user_code"].lower(), "username": "rin", "password": PASSWORD})
        assert ok.status_code == 200 and "approved" in ok.text
        r = c.post("/oauth/token", data=poll)
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        again = c.post("/oauth/token", data=poll)
        assert again.status_code == 400, "one token per approval"
    with sqlite_hub.http(token) as c:
        assert c.get("/api/v1/session").json()["role"] == "researcher"
    # Denied: the CLI is told so.
    with httpx.Client(base_url=sqlite_hub.url) as c:
        d = c.post("/oauth/device_authorization", data={"client_id": "cryomesh-cli"}).json()
        c.post("/device", data={"user_code": d["user_code"], "username": "rin", "password": PASSWORD, "decision": "deny"})
        r = c.post("/oauth/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                         "device_code": d["device_code"], "client_id": "cryomesh-cli"})  # fmt: skip
        assert r.status_code == 400 and r.json()["error"] == "access_denied"


def test_cryomesh_login_and_logout(sqlite_hub: Hub, tmp_path: Any) -> None:
    import os
    import stat
    import subprocess
    import sys
    import time

    person(sqlite_hub)
    env = {**os.environ, "CRYOMESH_TOKEN_FILE": str(tmp_path / "cfg" / "token.json"),
           "CRYOMESH_CREDENTIALS": str(tmp_path / "none.json"), "COLUMNS": "200"}  # fmt: skip
    for k in ("CRYOMESH_CLIENT_ID", "CRYOMESH_CLIENT_SECRET", "CRYOMESH_HUB_URL"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "cryomesh_cli.main", "login", "--hub", sqlite_hub.url], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    code = re.search(r"approve the code ([A-Z]{4}-[A-Z]{4})", line)
    assert code, line
    time.sleep(0.5)
    with httpx.Client(base_url=sqlite_hub.url) as c:
        assert c.post("/device", data={"user_code": code.group(1), "username": "rin", "password": PASSWORD}).status_code == 200
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "signed in as" in out and "(researcher)" in out, out
    token_file = tmp_path / "cfg" / "token.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    jobs = subprocess.run([sys.executable, "-m", "cryomesh_cli.main", "jobs", "list", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert jobs.returncode == 0, jobs.stdout + jobs.stderr
    token = __import__("json").loads(token_file.read_text())["access_token"]
    out = subprocess.run(
        [sys.executable, "-m", "cryomesh_cli.main", "logout"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and not token_file.exists()
    with sqlite_hub.http(token) as c:
        assert c.get("/api/v1/jobs").status_code == 401, "logout ended the session on the hub"


def test_a_sign_in_expires(sqlite_hub: Hub) -> None:
    from datetime import timedelta

    from hub.auth.models import SignInSession
    from hub.db import make_engine, transaction
    from hub.types import utcnow

    person(sqlite_hub)
    token = sign_in(sqlite_hub)
    with sqlite_hub.http(token) as c:
        sid = c.get("/api/v1/session").json()["session"]
    engine = make_engine(sqlite_hub.settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            row = s.get(SignInSession, sid)
            assert row is not None
            row.expires_at = utcnow() - timedelta(seconds=1)
            s.add(row)
    finally:
        engine.dispose()
    with sqlite_hub.http(token) as c:
        r = c.get("/api/v1/jobs")
    assert r.status_code == 401 and "expired" in r.json()["detail"]
