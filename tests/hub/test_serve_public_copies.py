"""A site's consent to serve copies of others' public data it holds: the share policy's
``serve_public_copies``, apart from ``auto_approve_public`` (requests for its own public data).
Set and read through the API and the CLI, by whom; what ``relays`` makes of it is in
tests/hub/test_copy_source.py, the migration of older policies in tests/hub/test_migrations.py."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.cli.test_cli import run
from tests.cli.test_cli_ux import assert_one_clear_error
from tests.helpers import Hub

POLICY = "/api/v1/sites/holder/share-policy"


def _error(resp: httpx.Response, status: int, error: str, detail: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert (body["error"], body["detail"]) == (error, detail), body


def test_it_is_set_and_read_apart_from_auto_approve_public(hub: Hub) -> None:
    hub.create_site("holder", institution="osaka-u")
    with hub.as_admin() as c:
        assert c.get(POLICY).json()["serve_public_copies"] is False, "a site lends nothing unless its admin says so"
        put = c.put(POLICY, json={"auto_approve_public": True})
        assert put.status_code == 200 and (put.json()["auto_approve_public"], put.json()["serve_public_copies"]) == (True, False)
        put = c.put(POLICY, json={"serve_public_copies": True})
        assert (put.json()["auto_approve_public"], put.json()["serve_public_copies"]) == (False, True), "the PUT replaces"
        got: dict[str, Any] = c.get(POLICY).json()
        assert (got["auto_approve_public"], got["serve_public_copies"]) == (False, True)

        typo = c.put(POLICY, json={"serve_public_copy": False})
        assert typo.status_code == 422 and typo.json()["error"] == "ValidationError", typo.text
        assert "serve_public_copy: unknown field; did you mean 'serve_public_copies'?" in typo.json()["detail"]
        wrong = c.put(POLICY, json={"serve_public_copies": "sometimes"})
        assert wrong.status_code == 422 and "serve_public_copies" in wrong.json()["detail"], wrong.text
        assert c.get(POLICY).json()["serve_public_copies"] is True, "nothing of a refused policy applies"
        assert "serve_public_copies" in c.get("/openapi.json").json()["components"]["schemas"]["SharePolicy"]["properties"]


def test_only_the_sites_admin_and_network_admins_change_it(hub: Hub) -> None:
    hub.create_site("holder", institution="osaka-u")
    hub.create_site("other", institution="embl")
    holder_admin, other_admin = hub.account("site_admin", site="holder"), hub.account("site_admin", site="other")
    researcher = hub.account("researcher", institution="osaka-u")
    with hub.as_(holder_admin) as c:
        assert c.put(POLICY, json={"serve_public_copies": True}).json()["serve_public_copies"] is True
    with hub.as_(other_admin) as c:
        refused = c.put(POLICY, json={"serve_public_copies": False})
        _error(refused, 403, "Forbidden", "a site admin of other cannot edit site holder")
    with hub.as_(researcher) as c:
        _error(c.put(POLICY, json={"serve_public_copies": False}), 403, "Forbidden", "the token lacks the scope(s): sites:write")
        assert c.get(POLICY).json()["serve_public_copies"] is True, "people read it"
    with hub.http() as c:
        for resp in (c.put(POLICY, json={"serve_public_copies": False}), c.get(POLICY)):
            _error(resp, 401, "Unauthorized", "this endpoint needs a bearer token (Authorization: Bearer <token>)")
    with hub.as_admin() as c:
        assert c.get(POLICY).json()["serve_public_copies"] is True, "no refused call changed it"
        assert c.put(POLICY, json={"serve_public_copies": False}).json()["serve_public_copies"] is False, "network admin"


def test_the_cli_sets_it_and_keeps_the_rest(sqlite_hub: Hub) -> None:
    sqlite_hub.create_site("holder", institution="osaka-u")
    admin = sqlite_hub.account("site_admin", site="holder")
    out = run(sqlite_hub, "sites", "policy", "set", "holder", "--auto-approve-public", "--auto-approve-institution", "kek",
              account=admin)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(sqlite_hub, "sites", "policy", "set", "holder", "--serve-public-copies", "--json", account=admin)
    share = json.loads(out.stdout)["share_policy"]
    assert (share["serve_public_copies"], share["auto_approve_public"], share["auto_approve_institutions"]) == (
        True, True, ["kek"]), "one option changes one setting"  # fmt: skip
    shown = run(sqlite_hub, "sites", "policy", "show", "holder", account=admin)
    assert shown.returncode == 0 and "│ serves copies of others' public data │ yes │" in shown.stdout, shown.stdout
    out = run(sqlite_hub, "sites", "policy", "set", "holder", "--no-serve-public-copies", "--json", account=admin)
    assert json.loads(out.stdout)["share_policy"]["serve_public_copies"] is False
    other = sqlite_hub.account("site_admin", site=sqlite_hub.create_site("other")["name"])
    assert_one_clear_error(run(sqlite_hub, "sites", "policy", "set", "holder", "--serve-public-copies", account=other),
                           "403 Forbidden", "cannot edit site holder")  # fmt: skip
