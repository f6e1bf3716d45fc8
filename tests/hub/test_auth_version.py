"""The auth version: raised by every change that can refuse an issued token, and only by
those; the principal cache drops what was read under an older version."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import Engine

from hub.accounts.service import bootstrap_admin, create_account, disable_account
from hub.auth.principal import Principal
from hub.auth.revocation import PrincipalCache
from hub.auth.version import CHANNEL, read_version
from hub.db import make_engine, transaction
from hub.jobs.pg_wakeups import conninfo
from hub.sites.service import create_site, set_status
from hub.types import utcnow
from shared.schemas.auth import AccountCreate, Role
from shared.schemas.sites import SiteCreate, SiteStatus
from tests.helpers import site_body


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def version(engine: Engine) -> int:
    with transaction(engine, write=False) as s:
        return read_version(s)


def test_changes_that_can_refuse_a_token_raise_the_version(engine: Engine) -> None:
    with transaction(engine) as s:
        admin = bootstrap_admin(s, "root")
        create_site(s, SiteCreate.model_validate(site_body("alpha")))
        person = create_account(s, AccountCreate(name="r", role=Role.RESEARCHER, institution="kek"), "test")
    start = version(engine)

    with transaction(engine) as s:  # what heartbeats and the sweep change: not auth
        site = set_status(s, "alpha", SiteStatus.ACTIVE)
        site.reachability, site.last_heartbeat_at = "online", utcnow()
        s.add(site)
    assert version(engine) == start + 1, "activating the site is a status change; reachability is not"

    with transaction(engine) as s:
        set_status(s, "alpha", SiteStatus.SUSPENDED)
    assert version(engine) == start + 2

    caller = Principal(subject=admin.client_id, role=Role.NETWORK_ADMIN, issuer="test", client_id=admin.client_id)
    with transaction(engine) as s:
        disable_account(s, caller, person.client_id)
    assert version(engine) == start + 3

    with pytest.raises(RuntimeError), transaction(engine) as s:  # rolled back: not raised
        set_status(s, "alpha", SiteStatus.ACTIVE)
        raise RuntimeError("abandon")
    assert version(engine) == start + 3


def test_a_commit_here_reaches_this_process_cache_at_once(engine: Engine) -> None:
    cache = PrincipalCache(engine)
    with transaction(engine) as s:
        create_site(s, SiteCreate.model_validate(site_body("beta")))
    seen = version(engine)
    who = Principal(subject="agent-1", role=Role.AGENT, issuer="test")
    cache.put("token", who, seen, expires_at=utcnow().timestamp() + 600)
    assert cache.get("token") == who

    with transaction(engine) as s:  # another engine of this process, same database
        set_status(s, "beta", SiteStatus.SUSPENDED)
    assert cache.version == seen + 1, "announced on commit, without a re-read"
    assert cache.get("token") is None


def test_an_expired_token_is_not_served_from_the_cache(engine: Engine) -> None:
    cache = PrincipalCache(engine)
    who = Principal(subject="agent-1", role=Role.AGENT, issuer="test")
    cache.put("token", who, 0, expires_at=utcnow().timestamp() - 1)
    assert cache.get("token") is None


def test_on_postgresql_the_version_is_announced_when_its_transaction_commits_and_not_before(pg_url: str) -> None:
    """What lets every hub process refuse a revoked token at once: the transaction that raises
    the version sends it with NOTIFY, which PostgreSQL delivers at commit (and drops on
    rollback). A connection LISTENing, as each hub process's bridge does, hears exactly the
    committed versions."""
    engine = make_engine(pg_url)
    try:
        with psycopg.connect(conninfo(pg_url), autocommit=True) as listener:
            listener.execute(f"LISTEN {CHANNEL}")
            with transaction(engine) as s:
                admin = bootstrap_admin(s, "root")
                person = create_account(s, AccountCreate(name="r", role=Role.RESEARCHER, institution="kek"), "test")
            caller = Principal(subject=admin.client_id, role=Role.NETWORK_ADMIN, issuer="test", client_id=admin.client_id)
            with pytest.raises(RuntimeError), transaction(engine) as s:
                disable_account(s, caller, person.client_id)
                raise RuntimeError("rolled back")
            assert [n.payload for n in listener.notifies(timeout=0.5)] == [], "nothing sent for a rollback"
            with transaction(engine) as s:
                disable_account(s, caller, person.client_id)
            heard = [(n.channel, n.payload) for n in listener.notifies(timeout=30, stop_after=1)]
            assert heard == [(CHANNEL, str(version(engine)))]
    finally:
        engine.dispose()
