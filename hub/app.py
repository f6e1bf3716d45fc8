"""The hub's FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub import metrics, openapi
from hub.accounts.router import router as accounts_router
from hub.agents.router import router as agents_router
from hub.auth.external_signin import router as external_signin_router
from hub.auth.keys import KeyCache
from hub.auth.router import router as auth_router
from hub.auth.signin import router as signin_router
from hub.auth.tokens import TokenVerifier
from hub.broker.cache import SiteViewCache
from hub.capacity import fast_path
from hub.capacity.history_buffer import HistoryBuffer
from hub.capacity.router import router as capacity_router
from hub.capacity.writer import HeartbeatWriter
from hub.costs.router import router as budgets_router
from hub.dashboard.api import router as dashboard_api
from hub.datasets.router import router as datasets_router
from hub.datasets.router import sites_router as dataset_sites_router
from hub.datasets.shares_router import router as shares_router
from hub.db import make_engine, transaction
from hub.errors import install_error_handlers
from hub.ga4gh import presign
from hub.ga4gh.drs_router import presign_router
from hub.ga4gh.drs_router import router as drs_router
from hub.ga4gh.tes_router import routers as tes_routers
from hub.jobs.notify import Notifier, recheck
from hub.jobs.pg_wakeups import bridge
from hub.jobs.router import router as jobs_router
from hub.jobs.service import restart_grace, sites_with_work
from hub.limits import BodyLimit, InFlightLimit, UrlGuard
from hub.logging import RequestIdMiddleware, configure_logging
from hub.network.router import router as network_router
from hub.network.service import KeptTotals
from hub.pictures.router import router as pictures_router
from hub.settings import HubSettings, get_settings
from hub.sites.router import router as sites_router
from hub.sweeps import start_scheduler
from hub.transfers.links import share_uplinks
from hub.transfers.router import router as transfers_router
from shared.version import __version__


def sites_with_work_in(engine: Engine, site_ids: set[int]) -> set[int]:
    with transaction(engine, write=False) as session:  # reads only: no write lock per re-check
        return sites_with_work(session, site_ids) | presign.sites_waiting(session, site_ids)


#: Young-generation threshold of the hub process's garbage collector (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector from pausing a serving hub.

    A hub holds a few hundred thousand long-lived objects (modules, the ORM's and pydantic's
    machinery, caches of tokens and site views), and Python's full collections walked them
    all: at 10,000 sites and 1,000 heartbeats/s one came every ~3.5 s and took 125-130 ms of
    CPU with every request waiting, which was most of the heartbeat's p99 (docs/benchmarks.md,
    "Heartbeat p99 at 10,000 sites on PostgreSQL"). Once started, the hub moves what it has
    built so far out of the collector's reach (``gc.freeze``: reference counting still frees
    it; only cycles among those objects would outlive their use) and collects the young
    generation after 10,000 allocations instead of 700, so full collections are rarer and
    walk only what came after the start. Called in ``cryomesh hub serve``'s processes only,
    not where a test builds many apps in one process."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


def create_app(settings: HubSettings | None = None, *, run_sweeps: bool = True, settle_collector: bool = False) -> FastAPI:
    """Build the hub. The database must already be migrated (``cryomesh hub migrate``).
    ``settle_collector``: at start-up, ``settle_garbage_collector`` (a process serving the hub)."""
    settings = settings or get_settings()
    engine = make_engine(
        settings.resolved_database_url,
        request_threads=settings.request_threads,
        busy_timeout_s=settings.database_busy_timeout_s,
    )
    share_uplinks(engine, settings.transfer_rate_shared_per_uplink)  # read by the broker's views and transfer starts
    history = HistoryBuffer(engine, settings.history_bucket_s, settings.history_flush_s, settings.history_flush_rows)
    heartbeats = HeartbeatWriter(engine, settings, history)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # As many handler threads as the pool has connections for them (make_engine).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        app.state.keys.ensure()  # a signing key exists before the first request
        with transaction(engine) as session:
            restart_grace(session, settings)  # the hub's own downtime is not the agents' fault
        notifier: Notifier = app.state.notifier
        notifier.bind(asyncio.get_running_loop())
        wakeups = [asyncio.create_task(recheck(notifier, partial(sites_with_work_in, engine), settings.long_poll_recheck_s))]
        if engine.dialect.name == "postgresql":  # other hub processes may share the database
            wakeups.append(asyncio.create_task(bridge(notifier, app.state.verifier.principals, settings.resolved_database_url)))
        history.start()
        heartbeats.start()
        sweeps = start_scheduler(engine, settings, notifier) if run_sweeps else None
        if settle_collector:
            settle_garbage_collector()
        try:
            yield
        finally:
            if sweeps is not None:
                sweeps.stop()
            for task in wakeups:
                task.cancel()
            await asyncio.gather(*wakeups, return_exceptions=True)
            heartbeats.stop()  # the heartbeats waiting to be written
            history.stop()  # the heartbeats folded since the last flush
            engine.dispose()

    app = FastAPI(
        title="cryomesh hub",
        version=__version__,
        description="Registry, OAuth 2.0 authorization server and broker of the cryomesh network.",
        lifespan=lifespan,
        # The hub exports Prometheus metrics and uses no OpenTelemetry; FastAPI's native
        # telemetry would look up the global providers on every request (8 % of a
        # heartbeat's hub CPU, docs/benchmarks.md "One hub process on PostgreSQL").
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.settle_collector = settle_collector
    app.state.engine = engine
    app.state.keys = KeyCache(engine, settings.token_lifetime_s)
    app.state.verifier = TokenVerifier(settings, app.state.keys, engine)
    app.state.notifier = Notifier()
    app.state.site_views = SiteViewCache(settings.site_view_max_age_s)
    app.state.network_totals = KeptTotals()
    app.state.history = history
    app.state.heartbeats = heartbeats
    app.state.metrics = metrics.make_registry(engine)
    Gauge(
        "cryomesh_hub_long_polls_waiting", "Agents' polls for work waiting in this hub process", registry=app.state.metrics
    ).set_function(lambda: app.state.notifier.waiting_polls)
    Gauge(
        "cryomesh_hub_heartbeat_transactions",
        "Transactions this hub process has written heartbeats in (several heartbeats share one under load)",
        registry=app.state.metrics,
    ).set_function(lambda: heartbeats.batches)
    Gauge(
        "cryomesh_hub_heartbeats_pending", "Heartbeats accepted and not yet written or answered", registry=app.state.metrics
    ).set_function(lambda: heartbeats.pending)
    # Innermost first: limits are checked before anything reads the request, inside the
    # request id and timing so a refusal is logged and counted like any other answer.
    app.add_middleware(
        BodyLimit, max_body_bytes=settings.max_body_bytes, max_manifest_body_bytes=settings.max_manifest_body_bytes
    )
    app.add_middleware(UrlGuard)
    app.add_middleware(InFlightLimit, max_in_flight=settings.max_requests_in_flight)
    app.add_middleware(metrics.TimingMiddleware)
    app.add_middleware(DashboardHeaders)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    openapi.install(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up (answered on the event loop, however busy the handler threads are). Anyone may call."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["health"])
    def readyz(request: Request) -> JSONResponse:
        """The database answers and a signing key is available. Anyone may call."""
        try:
            with transaction(engine, write=False) as session:
                session.execute(text("SELECT 1"))
            request.app.state.keys.signing_jwk()
        except Exception as exc:  # readiness reports any failure rather than raising
            return JSONResponse({"status": "unavailable", "detail": str(exc)[:200]}, status_code=503)
        return JSONResponse({"status": "ready"})

    for router in (
        auth_router,
        signin_router,
        external_signin_router,
        sites_router,
        capacity_router,
        agents_router,
        accounts_router,
        network_router,
        jobs_router,
        budgets_router,
        datasets_router,
        dataset_sites_router,
        shares_router,
        transfers_router,
        pictures_router,
        metrics.router,
        dashboard_api,
        *tes_routers,
        drs_router,
        presign_router,
    ):
        app.include_router(router)
    if settings.heartbeat_fast_path:
        fast_path.install(app)  # in front of the heartbeat route (hub/capacity/fast_path.py)
    app.mount("/dashboard", StaticFiles(directory=Path(__file__).parent / "dashboard" / "static", html=True), name="dashboard")

    return app


def worker_app() -> FastAPI:
    """The hub in one of the processes of ``cryomesh hub serve --workers N``: uvicorn starts
    each worker afresh and builds its app by name, with settings from the environment."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings, settle_collector=True)


#: The dashboard loads nothing from elsewhere and cannot be framed.
DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class DashboardHeaders:
    """Adds DASHBOARD_HEADERS to responses under /dashboard (plain ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/dashboard"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode(), v.encode()) for k, v in DASHBOARD_HEADERS.items()),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)
