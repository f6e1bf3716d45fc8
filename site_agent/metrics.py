"""Prometheus metrics of the agent, served on a local address when ``[agent] metrics_address``
is set (e.g. "127.0.0.1:9464"). The agent opens no port otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from site_agent.daemon import Agent


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        a = self.agent
        yield GaugeMetricFamily(
            "cryomesh_agent_jobs_running", "Federated job attempts this agent holds", value=len(a.worker.active)
        )
        yield GaugeMetricFamily(
            "cryomesh_agent_outbox_depth", "Job reports waiting to be delivered", value=len(a.worker.store.pending())
        )
        yield GaugeMetricFamily(
            "cryomesh_agent_transfer_rate_bytes_per_second", "Current transfer rate over all transfers", value=a.transfers.rate()
        )
        yield GaugeMetricFamily("cryomesh_agent_transfers_active", "Transfer sides in progress", value=a.transfers.active())
        yield CounterMetricFamily("cryomesh_agent_transfer_bytes", "Bytes moved by transfers", value=a.transfers.moved_total)
        yield CounterMetricFamily("cryomesh_agent_heartbeats", "Heartbeats the hub accepted", value=a.heartbeats_sent)
        last = a.last_heartbeat_ok.timestamp() if a.last_heartbeat_ok else 0
        yield GaugeMetricFamily(
            "cryomesh_agent_last_heartbeat_timestamp_seconds", "When the hub last accepted a heartbeat (0: never)", value=last
        )


def serve(agent: Agent, address: str) -> None:
    host, _, port = address.rpartition(":")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
