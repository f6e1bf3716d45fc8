"""Prometheus metrics for the hub, at ``/metrics``.

Counters and histograms are updated where the work happens (requests, heartbeats, transfer
progress, broker decisions); gauges of what the database holds (sites by status, jobs by
state, transfers by state) are read when Prometheus scrapes. Open by default; with
``metrics_token`` set, a scrape needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.db import transaction

REQUEST_SECONDS = Histogram(
    "cryomesh_hub_request_seconds",
    "Time to answer an HTTP request, by route template",
    ["method", "route", "status"],
    registry=None,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HEARTBEATS = Counter("cryomesh_hub_heartbeats", "Heartbeats accepted from site agents", registry=None)
TRANSFER_BYTES = Counter("cryomesh_hub_transfer_bytes", "Bytes the agents reported moved, by side", ["side"], registry=None)
BROKER_SECONDS = Histogram(
    "cryomesh_hub_broker_decision_seconds",
    "Time to place jobs: one job at submission, or a sweep's pass over the queue",
    ["scope"],
    registry=None,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from hub.jobs.models import Job
        from hub.sites.models import Site
        from hub.transfers.models import Transfer

        with transaction(self.engine, write=False) as session:
            sites = GaugeMetricFamily(
                "cryomesh_hub_sites", "Sites by lifecycle status and reachability", labels=["status", "reachability"]
            )
            for status, reach, n in session.exec(
                select(Site.status, Site.reachability, func.count()).group_by(Site.status, Site.reachability)
            ):
                sites.add_metric([status, reach], n)
            jobs = GaugeMetricFamily("cryomesh_hub_jobs", "Jobs by state", labels=["state"])
            for state, n in session.exec(select(Job.state, func.count()).group_by(Job.state)):
                jobs.add_metric([state], n)
            transfers = GaugeMetricFamily("cryomesh_hub_transfers", "Transfers by state", labels=["state"])
            for state, n in session.exec(select(Transfer.state, func.count()).group_by(Transfer.state)):
                transfers.add_metric([state], n)
        yield sites
        yield jobs
        yield transfers


def make_registry(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for metric in (REQUEST_SECONDS, HEARTBEATS, TRANSFER_BYTES, BROKER_SECONDS):
        registry.register(metric)
    registry.register(DatabaseCollector(engine))
    return registry


class TimingMiddleware:
    """Times every HTTP request by route template (plain ASGI: no buffering, long-polls stay cancellable)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = ["500"]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = getattr(scope.get("route"), "path", None) or "(unmatched)"
            REQUEST_SECONDS.labels(scope["method"], template, status[0]).observe(time.perf_counter() - start)


router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=True, response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format. Open unless the hub's ``metrics_token`` is set; then a bearer token is needed."""
    token = request.app.state.settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
            return Response(
                '{"error":"Unauthorized","detail":"metrics need the bearer token set in metrics_token"}',
                status_code=401,
                media_type="application/json",
                headers={"WWW-Authenticate": "Bearer"},
            )
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
