"""Where copies come from, and links shared per pair or per site uplink, in the placement simulation.

Each row replays the same month (bench/placement_scenario.py) with one thing switched:
copies come from the dataset's owner whatever the broker estimated (the hub before branch
copy-source) or from the holder the estimate assumed (``rules.fastest_source``); copies that
overlap share a pair's link (the hub's estimate today) or the source site's uplink, in the
simulated network and in the broker's estimate alike. Prints one markdown table per month.
Run: ``python -m bench.copy_sources --seeds 1 2``.
"""

from __future__ import annotations

import argparse
import time

import bench.placement_sim as sim
from bench.placement_scenario import build

ROWS = (  # label, policy, copies from, uplinks shared
    ("earliest, copies from the owner (before)", "earliest", "owner", False),
    ("earliest, copies from the estimated holder", "earliest", "fastest", False),
    ("earliest, estimated holder, uplinks shared", "earliest", "fastest", True),
    ("headroom, copies from the estimated holder", "headroom", "fastest", False),
    ("headroom, estimated holder, uplinks shared", "headroom", "fastest", True),
)


def table(seed: int, every_h: float, lend: float, days: float = 30.0) -> str:
    sc = build(seed, days, every_h, lend)
    out = [f"| seed {seed}, session every {every_h:g} h, lend {lend:g} | mean h | p95 h | cost | TB moved | copies | "
           "from a non-owner | copy actual/est median | p90 |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, policy, source, uplinks in ROWS:
        o = sim.simulate(sc, policy, copy_from=source, uplinks=uplinks)
        m = sim.metrics(sc, o)
        median, p90 = sim.copy_accuracy(o)
        out.append(f"| {label} | {m['mean_h']:.2f} | {m['p95_h']:.1f} | {m['cost']:,.0f} | {m['moved_tb']:.0f} | "
                   f"{len(o.copies)} | {o.from_other} | {median:.2f} | {p90:.2f} |")  # fmt: skip
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--days", type=float, default=30.0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    for every_h, lend in ((36.0, 1.0), (12.0, 0.5)):
        for seed in args.seeds:
            print(table(seed, every_h, lend, args.days) + "\n", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
