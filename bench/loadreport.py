"""The heartbeat load test's results as a Markdown section for docs/benchmarks.md."""

from __future__ import annotations

import math
from typing import Any


def _ms(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def _cpu(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _share(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def _codes(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items()) or "—"


def _phase_row(p: dict[str, Any]) -> str:
    if "rate" in p:
        who = f"{p['rate']:.1f}/s, ≤{p['max_in_flight']} in flight"
    elif "agents" in p:
        who = f"{p['agents']} agents, {p.get('connections', '?')} connections"
    else:
        who = str(p.get("senders", ""))
    notes = []
    if p.get("dropped"):
        notes.append(f"{p['dropped']} not sent (in-flight cap)")
    if p.get("hub_restarted"):
        stop = p.get("hub_stop_s")
        how = f"stopped in {stop:.0f} s" if stop is not None else "did not stop on SIGTERM; killed"
        what = "/healthz" if p.get("healthz_after_s") is None else "an agent's /api/v1/whoami"
        notes.append(f"**no answer to {what} after the phase; restarted ({how})**")
    if p["phase"].startswith("burst"):
        notes.append(
            f"all {p['agents']} answered in {p['all_answered_s']:.1f} s" if p.get("all_answered_s") is not None
            else f"{p['unanswered']} never answered, {p['refused']} refused"
        )  # fmt: skip
        after = p["healthz_after_s"]
        notes.append(f"/healthz answered {after:.1f} s after" if after is not None else "no /healthz answer after")
        if after is not None:
            auth = p.get("whoami_after_s")
            notes.append(f"/api/v1/whoami {auth:.1f} s after" if auth is not None else "no /api/v1/whoami answer after")
    return (
        f"| {p['phase']} | {who} | {p['requests']} | {p['req_per_s']:.0f} | {_ms(p['p50_ms'])} | {_ms(p['p99_ms'])} | "
        f"{_ms(p['max_ms'])} | {_codes(p['statuses'])} | {_codes(p['client_errors'])} | {_cpu(p['hub_cpu_ms_per_req'])} | "
        f"{_cpu(p.get('db_cpu_ms_per_req'))} | "
        f"{p['hub_rss_peak_mb']:.0f} / {p['hub_rss_after_mb']:.0f} | {_share(p.get('client_cpu_share'))} | {'; '.join(notes)} |"
    )


def _ratios(phases: list[dict[str, Any]]) -> list[str]:
    rows = []
    for c in sorted({p["senders"] for p in phases if p.get("senders")}):
        by = {p["phase"]: p for p in phases if p.get("senders") == c}
        hb, hz, wh = by.get("heartbeat"), by.get("healthz"), by.get("whoami")
        if not (hb and hz and wh):
            continue

        def ratio(a: float | None, b: float | None) -> str:
            return f"{a / b:.2f}" if a is not None and b else "—"

        rows.append(
            f"| {c} | {ratio(hb['req_per_s'], hz['req_per_s'])} | {ratio(hb['req_per_s'], wh['req_per_s'])} | "
            f"{ratio(hb['hub_cpu_ms_per_req'], hz['hub_cpu_ms_per_req'])} | "
            f"{ratio(hb['hub_cpu_ms_per_req'], wh['hub_cpu_ms_per_req'])} |"
        )
    return rows


def _stops(r: dict[str, Any]) -> str:
    def took(x: float | None) -> str:
        return f"{x:.1f} s" if x is not None else "no exit on SIGTERM, killed"

    out = f" Hub stop before the burst: {took(r['stop_before_burst_s'])}." if "stop_before_burst_s" in r else ""
    return out + (f" Hub stop at the end: {took(r['stop_s'])}." if "stop_s" in r else "")


def network_table(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"### {r['db']}, {r['workers']} hub process(es), {r['sites']:,} sites\n\nNot measured: {r['error']}\n"
    head = (
        f"### {r['db']}, {r['workers']} hub process(es), {r['sites']:,} sites\n\n"
        + (
            f"PostgreSQL with fsync {'on (its defaults)' if r['pg_fsync'] else 'and synchronous_commit off'}. "
            if "pg_fsync" in r
            else ""
        )
        + f"Seeded in {r['seed_s']:.1f} s; hub ready in {r.get('start_s', float('nan')):.1f} s.{_stops(r)}\n\n"
        "| phase | senders | requests | 2xx/s | p50 ms | p99 ms | max ms | status codes | client errors | "
        "hub CPU ms/req | database CPU ms/req | hub RSS MB peak / after | client CPU | notes |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = "\n".join(_phase_row(p) for p in r["phases"])
    ratios = _ratios(r["phases"])
    ratio_table = (
        "\n\n| senders | heartbeat/healthz 2xx/s | heartbeat/whoami 2xx/s | heartbeat/healthz CPU per req | "
        "heartbeat/whoami CPU per req |\n|---|---|---|---|---|\n" + "\n".join(ratios)
        if ratios else ""
    )  # fmt: skip
    views = r.get("views") or {}
    view_rows = "\n".join(f"| `GET {k}` | {v['p50_ms']:.0f} | {v['p99_ms']:.0f} | {v['bytes']:,} | {v['ok']}/{v['n']} |"
                          for k, v in views.items())  # fmt: skip
    view_table = (
        f"\n\nViews as network admin over {r['sites']:,} sites (sequential):\n\n"
        "| request | p50 ms | p99 ms | bytes | 2xx |\n|---|---|---|---|---|\n" + view_rows
        if views else ""
    )  # fmt: skip
    return head + rows + ratio_table + view_table + "\n"


def section(results: list[dict[str, Any]], command: str) -> str:
    return (
        "## Hub load: heartbeats from simulated agents (issue 10)\n\n"
        f"Command: `{command}`. A real hub process; every simulated agent sends with its own token over "
        "loopback HTTP from one asyncio client on the same machine (the client competes with the hub for CPU). "
        "`whoami` is `GET /api/v1/whoami` with an agent's token: the authenticated no-op. 2xx/s counts only "
        "successful answers; hub CPU is user + system time of the hub's processes per answered request, database CPU "
        "the same for PostgreSQL's server processes (— on SQLite, which runs inside the hub).\n\n"
        + "\n".join(network_table(r) for r in results)
    )
