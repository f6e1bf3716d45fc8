"""Readable tables for the terminal."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def gpu_text(gpus: dict[str, Any]) -> str:
    if not gpus:
        return "-"
    return ", ".join(f"{m} {g['free']}/{g['total']}" for m, g in sorted(gpus.items()))


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def sites_table(sites: list[dict[str, Any]]) -> Table:
    table = Table(
        "name", "institution", "country", "status", "reachability", "partitions", "GPUs offered", title=f"{len(sites)} site(s)"
    )
    for s in sites:
        gpus = {p["gpu_model"]: p["gpus_per_node"] * p["node_count"] for p in s["partitions"] if p.get("gpu_model")}
        table.add_row(
            s["name"],
            s["institution"],
            s["country"],
            s["status"],
            s["reachability"],
            ", ".join(p["name"] for p in s["partitions"]) or "-",
            ", ".join(f"{m}x{n}" for m, n in gpus.items()) or "-",
        )
    return table


def summary_table(summary: dict[str, Any]) -> Table:
    caption = (
        f"network: {summary['cpus_free']}/{summary['cpus_total']} CPUs free; "
        f"GPUs free: {gpu_text(summary['gpus'])}; "
        f"sites: {', '.join(f'{k} {v}' for k, v in sorted(summary['sites_by_reachability'].items()))}"
    )
    table = Table(
        "site",
        "institution",
        "status",
        "reachability",
        "CPUs free/total",
        "GPUs free/total",
        "queue",
        "last heartbeat",
        title="cryomesh network",
        caption=caption,
    )
    for s in summary["sites"]:
        cap = s.get("capacity")
        reach = s["reachability"]
        colour = {"online": "green", "unreachable": "red"}.get(reach, "yellow")
        table.add_row(
            s["name"],
            s["institution"],
            s["status"],
            f"[{colour}]{reach}[/{colour}]",
            f"{cap['cpus_free']}/{cap['cpus_total']}" if cap else "-",
            gpu_text(cap["gpus"]) if cap else "-",
            str(cap["jobs_pending"]) if cap else "-",
            age_text(s.get("heartbeat_age_s")),
        )
    return table


def site_detail(site: dict[str, Any], capacity: dict[str, Any] | None) -> list[Table]:
    info = Table(title=f"site {site['name']}", show_header=False)
    info.add_column("field")
    info.add_column("value")
    for key in (
        "display_name",
        "institution",
        "country",
        "location",
        "status",
        "reachability",
        "agent_version",
        "last_heartbeat_at",
    ):
        info.add_row(key, str(site.get(key) or "-"))
    for c in site.get("contacts", []):
        info.add_row("contact", f"{c['name']} <{c['email']}>" + (f" ({c['role']})" if c.get("role") else ""))
    parts = Table("name", "nodes", "cores/node", "mem GB/node", "GPUs/node", "CPU", "interconnect", title="partitions")
    for p in site["partitions"]:
        gpus = f"{p['gpus_per_node']}x {p['gpu_model']}" if p.get("gpu_model") else "-"
        parts.add_row(
            p["name"],
            str(p["node_count"]),
            str(p["cores_per_node"]),
            f"{p['memory_gb_per_node']:g}",
            gpus,
            p.get("cpu_model") or "-",
            p.get("interconnect") or "-",
        )
    soft = Table("name", "version", "CUDA arch", "notes", title="software")
    for s in site["software"]:
        soft.add_row(s["name"], s["version"], s.get("cuda_arch") or "-", s.get("notes") or "")
    tables = [info, parts, soft]
    if capacity:
        cap = Table(title=f"capacity (reported {capacity['received_at']}, backend {capacity['backend']})")
        for col in (
            "partition",
            "CPUs idle/alloc/total",
            "mem free/total GB",
            "GPUs free/total",
            "nodes up",
            "pending",
            "running",
        ):
            cap.add_column(col)
        for p in capacity["partitions"]:
            cap.add_row(
                p["name"],
                f"{p['cpus_idle']}/{p['cpus_allocated']}/{p['cpus_total']}",
                f"{p['memory_free_mb'] / 1024:.0f}/{p['memory_total_mb'] / 1024:.0f}",
                gpu_text({g["model"]: g for g in p["gpus"]}),
                f"{p['nodes_available']}/{p['nodes_total']}",
                str(p["jobs_pending"]),
                str(p["jobs_running"]),
            )
        tables.append(cap)
    return tables
