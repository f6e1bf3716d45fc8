"""``cryomesh agent run``: the agent's loops.

Heartbeats; work (``site_agent.work``); transfers (``site_agent.transfers``). The
heartbeat loop sends a capacity snapshot every interval (with the software measured at
the site, ``site_agent.software``, whenever it differs from what the hub last acknowledged), backs off with full jitter while
the hub is away (transport errors, 408/429/5xx, honouring Retry-After), re-fetches its
token before it expires, and keeps going across hub restarts. The agent stops only on
SIGTERM/SIGINT, or when the hub says this agent is revoked or unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from shared.schemas.capacity import Heartbeat
from shared.schemas.software import MeasuredSoftware
from shared.version import __version__
from site_agent import metrics
from site_agent.audit import audit_loop
from site_agent.backoff import Backoff, pause
from site_agent.client import HubClient
from site_agent.config import AgentSettings
from site_agent.credentials import load_credentials, load_key
from site_agent.discovery import Discovery, make_discovery
from site_agent.discovery.base import storage_capacity
from site_agent.errors import AuthRefused, HubRefused, HubUnavailable
from site_agent.executors import make_executor
from site_agent.software import container_software, discover_software
from site_agent.transfers.worker import TransferWorker
from site_agent.work import Worker

log = logging.getLogger("cryomesh.agent")

#: Exit codes of ``cryomesh agent run``.
EXIT_OK = 0
EXIT_REVOKED = 3

#: While the enrollment waits for approval: first and longest pause between checks, seconds.
APPROVAL_POLL_S = 2.0
APPROVAL_POLL_MAX_S = 5.0


class Agent:
    def __init__(self, settings: AgentSettings, discovery: Discovery | None = None) -> None:
        self.settings = settings
        creds = load_credentials(settings.agent.state_dir)
        self.site = creds.site
        self.enrollment_id = creds.enrollment_id
        hub_url = settings.agent.hub_url or creds.hub_url
        token_endpoint = creds.token_endpoint
        if settings.agent.hub_url and settings.agent.hub_url.rstrip("/") != creds.hub_url.rstrip("/"):
            token_endpoint = settings.agent.hub_url.rstrip("/") + "/oauth/token"
        self.client = HubClient(
            hub_url, creds.client_id, load_key(settings.agent.state_dir), token_endpoint, settings.agent.request_timeout_s
        )
        executor = make_executor(settings.executor)
        self.discovery = discovery or make_discovery(settings.discovery, executor.allocated)
        self.stopping = asyncio.Event()
        self.worker = Worker(settings, self.client, self.site, executor, self.stopping)
        self.transfers = TransferWorker(settings, self.client, self.site, self.stopping)
        self.exit_code = EXIT_OK
        self.last_heartbeat_ok: datetime | None = None
        self.heartbeats_sent = 0
        self.software_acked: list[MeasuredSoftware] | None = None  # what the hub has of our software
        self.software_probed_at: float | None = None
        # Container runtimes and images: found once, here, not in the heartbeat (whose lateness expires leases).
        self.containers = container_software(settings.tes)

    def measured_software(self) -> list[MeasuredSoftware] | None:
        """The software measured now, or None when unchanged since the hub acknowledged it."""
        cfg = self.settings.software
        now = time.monotonic()
        if self.software_probed_at is None or now - self.software_probed_at >= cfg.probe_interval_s:
            self.software_probed_at = now
            try:  # RELION builds when [software] probe is on; container runtimes and images always
                relion = discover_software(cfg) if cfg.probe else []
                self.worker.software = relion + self.containers
            except Exception:  # measuring software must never stop the heartbeat; keep the last list
                log.exception("could not measure the installed software; reporting the last measurement")
            self.worker.software_ready.set()
        return None if self.worker.software == self.software_acked else self.worker.software

    def snapshot(self) -> Heartbeat:
        # Stamped before reading, so a job started during the read counts as not yet seen.
        sampled_at = datetime.now(UTC)
        partitions = self.discovery.partitions()
        software = self.measured_software()
        return Heartbeat(
            agent_version=__version__,
            interval_s=self.settings.agent.heartbeat_interval_s,
            sampled_at=sampled_at,
            backend=self.discovery.name,
            partitions=partitions,
            storage=storage_capacity(self.settings.storage),
            totals=self.discovery.site_totals(),
            attempts=self.worker.held(),
            software=software,
        )

    async def _sleep(self, seconds: float) -> None:
        await pause(self.stopping, seconds)

    async def heartbeat_loop(self) -> None:
        interval = self.settings.agent.heartbeat_interval_s
        backoff = Backoff(base=min(1.0, interval), cap=self.settings.agent.max_backoff_s)
        while not self.stopping.is_set():
            try:
                hb = await asyncio.to_thread(self.snapshot)
                await self.client.request("POST", f"/api/v1/sites/{self.site}/heartbeat", json=hb.model_dump(mode="json"))
            except HubUnavailable as exc:
                delay = backoff.next_delay(exc.retry_after)
                log.warning("hub unavailable (%s); retrying in %.1f s", exc, delay)
                await self._sleep(delay)
                continue
            except AuthRefused as exc:
                if exc.pending:  # only if the hub was away when the agent started: see wait_for_approval
                    delay = min(backoff.next_delay(), APPROVAL_POLL_MAX_S)
                    log.info("enrollment not approved yet; checking again in %.1f s", delay)
                    await self._sleep(delay)
                    continue
                log.error("the hub refused this agent's credentials: %s; stopping", exc.detail)
                self.exit_code = EXIT_REVOKED
                self.stopping.set()
                return
            except HubRefused as exc:
                # The hub understood and said no (a suspended site, a snapshot it rejects).
                # Nothing to fix by retrying at once; keep trying slowly so the agent
                # recovers by itself once an admin acts.
                delay = backoff.next_delay()
                log.error("heartbeat refused: %s; retrying in %.1f s", exc, delay)
                await self._sleep(delay)
                continue
            except Exception:  # a discovery failure must not kill the agent
                delay = backoff.next_delay()
                log.exception("could not take a capacity snapshot; retrying in %.1f s", delay)
                await self._sleep(delay)
                continue
            if hb.software is not None:
                self.software_acked = hb.software
            if backoff.failures:
                log.info("heartbeats flowing again after %d failure(s)", backoff.failures)
            backoff.reset()
            self.last_heartbeat_ok = datetime.now(UTC)
            self.heartbeats_sent += 1
            await self._sleep(interval)

    async def wait_for_approval(self) -> bool:
        """Wait until the hub gives this agent a token; False if the agent should stop.

        An agent may start before its enrollment is approved (the site-admin guide says to).
        That is a normal state, not an error: say so once, check again every few seconds
        without logging each check, and start the loops as soon as the approval comes. If
        the hub cannot be reached, start the loops anyway: they wait for the hub themselves
        and meanwhile the agent watches the jobs it already runs."""
        checks = 0
        while not self.stopping.is_set():
            try:
                await self.client.token()
            except HubUnavailable:
                return True
            except AuthRefused as exc:
                if not exc.pending:
                    log.error("the hub refused this agent's credentials: %s; stopping", exc.detail)
                    self.exit_code = EXIT_REVOKED
                    return False
                if checks == 0:
                    log.info(
                        "waiting for the hub to approve enrollment %s (thumbprint %s); a network admin runs "
                        "`cryomesh admin approve %s`",
                        self.enrollment_id, self.client.key.thumbprint(), self.enrollment_id,
                    )  # fmt: skip
                else:
                    log.debug("enrollment %s still waiting for approval", self.enrollment_id)
                checks += 1
                await self._sleep(min(APPROVAL_POLL_S + 0.5 * (checks - 1), APPROVAL_POLL_MAX_S))
                continue
            if checks:
                log.info("enrollment %s approved; starting work", self.enrollment_id)
            return True
        return False

    async def _until_stopped(self, loop: Coroutine[Any, Any, None]) -> None:
        """Run a loop that may be blocked in a long-poll, and cut it off at shutdown."""
        task = asyncio.ensure_future(loop)
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stop.cancel()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        log.info(
            "agent for site %s starting (hub %s, discovery %s, executor %s)",
            self.site, self.client.hub_url, self.discovery.name, self.worker.executor.name,
        )  # fmt: skip
        for note in self.settings.deprecations():
            log.warning("%s", note)
        if self.settings.agent.metrics_address:
            metrics.serve(self, self.settings.agent.metrics_address)
            log.info("metrics at http://%s/metrics", self.settings.agent.metrics_address)
        await asyncio.to_thread(self.worker.adopt_existing)
        try:
            if not await self.wait_for_approval():
                return self.exit_code
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.heartbeat_loop())
                tg.create_task(self._until_stopped(self.worker.work_loop()))
                tg.create_task(self.worker.monitor_loop())
                tg.create_task(self.worker.outbox_loop())
                tg.create_task(self.transfers.loop())
                if self.settings.audit.enabled:
                    tg.create_task(audit_loop(self.settings.audit, self.client, self.site, self.stopping))
        finally:
            await self.client.aclose()
            log.info("agent for site %s stopped", self.site)
        return self.exit_code


def run_agent(settings: AgentSettings) -> int:
    return asyncio.run(Agent(settings).run())
