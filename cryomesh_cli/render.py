"""Readable tables for the terminal.

Tables fit the terminal: ids and site names a user copies are shown whole (never wrapped,
never cut with "…"); other cells wrap at spaces; when even that does not fit, the least
useful columns are left out and the caption says which (``--json`` has everything).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

console = Console()

#: Words longer than this may be folded in a wrapping column; shorter ones never are.
LONGEST_WORD = 20


@dataclass(frozen=True)
class Col:
    """A table column: ``keep`` for ids and names people copy (shown whole); ``drop`` orders what a
    narrow terminal leaves out (0: never; the highest goes first)."""

    header: str
    keep: bool = False
    drop: int = 0
    justify: str = "left"


def _plain(cell: RenderableType) -> str | None:
    return Text.from_markup(cell).plain if isinstance(cell, str) else None


def _widths(col: Col, cells: list[RenderableType]) -> tuple[int, int]:
    """(narrowest, natural): the narrowest this column can be without cutting a cell (keep) or
    folding a short word, and the width at which no cell wraps."""
    narrow = [len(w) for w in col.header.split()]
    natural = [len(col.header)]
    for cell in cells:
        text = _plain(cell)
        if text is None:
            m = Measurement.get(console, console.options, cell)
            narrow.append(m.minimum)
            natural.append(m.maximum)
            continue
        longest = max((len(line) for line in text.splitlines()), default=0)
        natural.append(longest)
        narrow.extend([longest] if col.keep else [min(len(w), LONGEST_WORD) for w in text.split()])
    return max(narrow, default=1), max(natural, default=1)


def fitted_table(
    cols: Sequence[Col],
    rows: Sequence[Sequence[RenderableType]],
    *,
    title: str | None = None,
    caption: str | None = None,
    width: int | None = None,
) -> Table:
    """A table of ``rows`` that fits ``width`` (default: the terminal's)."""
    width = width or console.width
    measured = [_widths(c, [r[i] for r in rows]) for i, c in enumerate(cols)]
    sizes = [narrow for narrow, _ in measured]
    shown = list(range(len(cols)))

    def total() -> int:  # cells + one space of padding each side + the vertical lines
        return sum(sizes[i] + 3 for i in shown) + 1

    while total() > width:
        droppable = [i for i in shown if cols[i].drop > 0]
        if not droppable:
            break
        shown.remove(max(droppable, key=lambda i: (cols[i].drop, i)))
    spare = width - total()
    while spare > 0:  # widen the columns that would wrap, the most wrapped first
        short = [i for i in shown if sizes[i] < measured[i][1]]
        if not short:
            break
        grow = max(short, key=lambda i: measured[i][1] - sizes[i])
        sizes[grow] += 1
        spare -= 1
    left_out = [c.header for i, c in enumerate(cols) if i not in shown]
    if left_out:
        note = f"not shown at this width: {', '.join(left_out)}; --json has everything"
        caption = f"{caption}\n{note}" if caption else note
    table = Table(title=title, caption=caption)
    for i in shown:
        c = cols[i]
        table.add_column(c.header, justify=c.justify, no_wrap=c.keep, width=sizes[i], overflow="fold")  # type: ignore[arg-type]
    for r in rows:
        table.add_row(*(r[i] for i in shown))
    return table


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def gpu_text(gpus: dict[str, Any]) -> str:
    if not gpus:
        return "-"
    return ", ".join(f"{m} {g['free']}/{g['total']}" for m, g in sorted(gpus.items()))


def startable_text(p: dict[str, Any]) -> str:
    """What an elastic partition could have: e.g. '2 nodes (1 starting), 96 CPUs, a10g 8, start <= 600 s'."""
    if not p.get("elastic"):
        return "-"
    count = p.get("nodes_bootable", 0) + p.get("nodes_booting", 0)
    nodes = f"{count} node{'' if count == 1 else 's'}"
    if p.get("nodes_booting"):
        nodes += f" ({p['nodes_booting']} starting)"
    gpus = [f"{g['model']} {g['bootable']}" for g in p["gpus"] if g.get("bootable")]
    timeout = p.get("resume_timeout_s")
    return ", ".join([nodes, f"{p.get('cpus_bootable', 0)} CPUs", *gpus] + ([f"start <= {timeout} s"] if timeout else []))


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def sites_table(sites: list[dict[str, Any]]) -> Table:
    cols = (
        Col("name", keep=True),
        Col("institution", keep=True, drop=1),
        Col("country", drop=5),
        Col("status", drop=3),
        Col("reachability"),
        Col("partitions", drop=4),
        Col("GPUs offered", drop=2),
    )
    rows = []
    for s in sites:
        gpus = {p["gpu_model"]: p["gpus_per_node"] * p["node_count"] for p in s["partitions"] if p.get("gpu_model")}
        rows.append(
            (
                s["name"],
                s["institution"],
                s["country"],
                s["status"],
                s["reachability"],
                ", ".join(p["name"] for p in s["partitions"]) or "-",
                ", ".join(f"{m}x{n}" for m, n in gpus.items()) or "-",
            )
        )
    return fitted_table(cols, rows, title=f"{len(sites)} site(s)")


def summary_table(summary: dict[str, Any]) -> Table:
    caption = (
        f"network: {summary['cpus_free']}/{summary['cpus_total']} CPUs free; "
        f"GPUs free: {gpu_text(summary['gpus'])}; "
        f"sites: {', '.join(f'{k} {v}' for k, v in sorted(summary['sites_by_reachability'].items()))}"
    )
    shown, matching = len(summary["sites"]), summary.get("sites_matching", len(summary["sites"]))
    if shown < matching:
        first = summary.get("offset", 0) + 1
        caption += f"\nsites {first}-{first + shown - 1} of {matching} listed" if shown else f"\n{matching} site(s) match"
    cols = (
        Col("site", keep=True),
        Col("institution", keep=True, drop=3),
        Col("status", drop=4),
        Col("reachability"),
        Col("CPUs free/total", keep=True),
        Col("GPUs free/total", drop=1),
        Col("queue", drop=2),
        Col("last heartbeat", drop=2),
    )
    rows = []
    for s in summary["sites"]:
        cap = s.get("capacity")
        reach = s["reachability"]
        colour = {"online": "green", "unreachable": "red"}.get(reach, "yellow")
        rows.append(
            (
                s["name"],
                s["institution"],
                s["status"],
                f"[{colour}]{reach}[/{colour}]",
                f"{cap['cpus_free']}/{cap['cpus_total']}" if cap else "-",
                gpu_text(cap["gpus"]) if cap else "-",
                str(cap["jobs_pending"]) if cap else "-",
                age_text(s.get("heartbeat_age_s")),
            )
        )
    return fitted_table(cols, rows, title="cryomesh network", caption=caption)


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
    soft = Table(
        "name", "version", "CUDA arch", "source", "build", "notes", title="software (declared, or measured by the agent)"
    )
    for s in site["software"]:
        build = " ".join(x for x in (s.get("build"), "MPI" if s.get("mpi") else None, s.get("path")) if x)
        soft.add_row(
            s["name"], s["version"], s.get("cuda_arch") or "-", s.get("source", "declared"), build or "-", s.get("notes") or ""
        )
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
        cap.add_column("could start (elastic)")
        for p in capacity["partitions"]:
            cap.add_row(
                p["name"] + (" (spot)" if p.get("spot") else ""),
                f"{p['cpus_idle']}/{p['cpus_allocated']}/{p['cpus_total']}",
                f"{p['memory_free_mb'] / 1024:.0f}/{p['memory_total_mb'] / 1024:.0f}",
                gpu_text({g["model"]: g for g in p["gpus"]}),
                f"{p['nodes_available']}/{p['nodes_total']}",
                str(p["jobs_pending"]),
                str(p["jobs_running"]),
                startable_text(p),
            )
        tables.append(cap)
    return tables
