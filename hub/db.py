"""Engine, sessions and migrations. One request (or one sweep) is one transaction."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError
from sqlmodel import Session, create_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


#: Connections kept beside the request threads' own: the sweep, the key cache's and the
#: revocation version's refreshes, start-up and readiness checks.
BACKGROUND_CONNECTIONS = 4
#: Each SQLite connection's page cache, at most (``PRAGMA cache_size``), in KiB.
SQLITE_CACHE_KIB = 16_384
#: Execution option that makes a SQLite transaction begin DEFERRED (a reader): set on the
#: engine that ``reader`` returns.
_READ_OPTION = "cryomesh_read"
_readers: WeakKeyDictionary[Engine, Engine] = WeakKeyDictionary()
#: Key in a SQLite connection's ``info``: the process's writer lock, while it holds it.
_WRITING = "cryomesh_writing"


def _done_writing(info: dict[Any, Any]) -> None:
    writers = info.pop(_WRITING, None)
    if writers is not None:
        writers.release()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, request_threads: int = 8, busy_timeout_s: float = 5.0) -> Engine:
    """The engine, with a pool of ``request_threads + BACKGROUND_CONNECTIONS`` connections and
    no overflow: a handler thread never waits for a connection another handler holds while it
    waits for a thread (the pool is never smaller than the handlers that can hold one). Waiting
    for a lock or a connection ends after ``busy_timeout_s`` with an ``OperationalError`` or a
    pool ``TimeoutError``, which the API answers 503 with Retry-After."""
    pool = {"pool_size": request_threads + BACKGROUND_CONNECTIONS, "max_overflow": 0, "pool_timeout": busy_timeout_s}
    if is_sqlite(url):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if url.startswith("sqlite:///:memory:"):
            pool = {}  # one shared connection (SingletonThreadPool); it takes no pool size
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s}, **pool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            # A page cache of up to 16 MB per connection (SQLite's default is 2 MB, filled only
            # as pages are read): a broker pass over 10,000 queued jobs reads their rows and then
            # writes about 17 MB of jobs, attempts and decisions in one transaction; in 2 MB its
            # pages were evicted and read again, and dirty ones spilled to the WAL before the
            # commit (docs/benchmarks.md, "Broker pass through the database, third round").
            cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cur.close()

        # SQLite has one writer at a time, and its busy handler polls (sleeping up to 100 ms
        # between tries), so under load a waiting writer can starve past the busy timeout while
        # others take the lock. This process's writers queue on a lock of their own instead,
        # woken the moment it is free; SQLite's lock still guards against other processes.
        writers = threading.Lock()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A writer takes the write lock at BEGIN, so concurrent writers queue (for at most
            # the busy timeout) instead of failing on lock upgrade; a reader (WAL) takes no lock
            # and is never blocked by a writer.
            if conn.get_execution_options().get(_READ_OPTION, False):
                conn.exec_driver_sql("BEGIN")
                return
            if not writers.acquire(timeout=busy_timeout_s):
                raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
            conn.info[_WRITING] = writers
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _done_writing(conn.info)
                raise

        for name in ("commit", "rollback"):  # the transaction's end, on the connection
            event.listen(engine, name, lambda conn: _done_writing(conn.info))

        # However a connection leaves its transaction (back in the pool, invalidated after an
        # error), the lock goes with it: a lock never released would refuse every writer.
        @event.listens_for(engine.pool, "reset")
        def _reset(_dbapi_conn: Any, record: Any, _state: Any) -> None:
            _done_writing(record.info)

        @event.listens_for(engine.pool, "checkin")
        def _checkin(_dbapi_conn: Any, record: Any) -> None:
            if record is not None:
                _done_writing(record.info)

        @event.listens_for(engine.pool, "invalidate")
        def _invalidate(_dbapi_conn: Any, record: Any, _exc: Any) -> None:
            _done_writing(record.info)

        @event.listens_for(engine, "connect")
        def _no_pysqlite_autobegin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        return engine
    # lock_timeout: a statement waiting for a row lock gives up after the busy timeout.
    options = f"-c lock_timeout={int(busy_timeout_s * 1000)}"
    return create_engine(url, pool_pre_ping=True, connect_args={"options": options}, **pool)


def reader(engine: Engine) -> Engine:
    """The same engine (pool, events) whose transactions only read: on SQLite they begin
    DEFERRED and take no lock; on PostgreSQL nothing changes."""
    found = _readers.get(engine)
    if found is None:
        found = _readers[engine] = engine.execution_options(**{_READ_OPTION: True})
    return found


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once this session's transaction has committed (e.g. wake a poller)."""
    session.info.setdefault("after_commit", []).append(callback)


def run_after_commit(session: Session) -> None:
    for callback in session.info.pop("after_commit", []):
        callback()


def commit(session: Session) -> None:
    """Commit, then run the after-commit callbacks; on failure roll back and forget them."""
    try:
        session.commit()
    except BaseException:
        rollback(session)
        raise
    run_after_commit(session)


def rollback(session: Session) -> None:
    session.rollback()
    session.info.pop("after_commit", None)


@contextmanager
def transaction(engine: Engine, *, write: bool = True) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back if it raises. With
    ``write=False`` it only reads (see ``reader``)."""
    with Session(engine if write else reader(engine), expire_on_commit=False) as session:
        try:
            yield session
        except BaseException:
            rollback(session)
            raise
        commit(session)


def alembic_config(url: str) -> Config:
    # Alembic is imported only to migrate: it is a seventh of the hub's start-up, which
    # `hub serve --no-migrate` and the workers of `hub serve --workers N` do without.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (creating a SQLite file if needed)."""
    if is_sqlite(url) and url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    from alembic import command

    command.upgrade(alembic_config(url), revision)


# ---------------------------------------------------------------- when the database is away


class DatabaseUnavailable(Exception):
    """The database cannot be reached or opened; the message (one line, no password) says
    what to do."""


def safe_url(url: str) -> str:
    """The URL as it may be shown: the password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileExistsError):  # mkdir of the database's folder: a file is in the way
        return f"not a directory: {exc.filename}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror.lower()}: {exc.filename}" if exc.filename else exc.strerror.lower()
    raw = str(getattr(exc, "orig", None) or exc).strip()
    text = raw.splitlines()[0] if raw else type(exc).__name__
    text = re.sub(r"^connection failed: ", "", text)
    text = re.sub(r"^connection to server (at|on) .*? failed: ", "", text)  # the URL already says where
    text = re.sub(r"^FATAL:\s+|\[Errno -?\d+\]\s*", "", text).strip()
    return text[:1].lower() + text[1:]


def describe_database_error(url: str, exc: BaseException) -> str:
    """One line: which database, what went wrong, what to do."""
    reason = _reason(exc)
    password = make_url(url).password if not is_sqlite(url) else None
    if password:
        reason = reason.replace(str(password), "***")
    if is_sqlite(url):
        where = url.removeprefix("sqlite:///") or url
        return (
            f"cannot open the SQLite database at {where} ({reason}); choose a writable place with "
            "CRYOMESH_DATA_DIR or CRYOMESH_DATABASE_URL"
        )
    if "password" in reason or "authentication" in reason:
        hint = "check the user name and password in CRYOMESH_DATABASE_URL"
    elif "does not exist" in reason:
        hint = "create that database (createdb) or set CRYOMESH_DATABASE_URL to one that exists"
    else:
        hint = "is PostgreSQL running there and accepting connections? set CRYOMESH_DATABASE_URL to the right URL"
    return f"cannot reach the database at {safe_url(url)} ({reason}); {hint}"


@contextmanager
def database_errors_explained(url: str) -> Iterator[None]:
    """Turn a database that cannot be reached or opened into :class:`DatabaseUnavailable`."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(describe_database_error(url, exc)) from exc
    except OSError as exc:
        if not is_sqlite(url):
            raise
        raise DatabaseUnavailable(describe_database_error(url, exc)) from exc


def check_database(url: str, timeout_s: int = 10) -> None:
    """Connect once (waiting at most ``timeout_s`` for a server); raise
    :class:`DatabaseUnavailable` if that fails."""
    with database_errors_explained(url):
        engine = make_engine(url) if is_sqlite(url) else create_engine(url, connect_args={"connect_timeout": timeout_s})
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()


# The registry's change counter listens to every session (hub/broker/changes.py): imported
# here so any process that opens a transaction, the CLI's included, raises it.
import hub.broker.changes  # noqa: E402, F401
