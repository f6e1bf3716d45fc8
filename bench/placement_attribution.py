"""What each change to the placement simulation and the copy estimate moved, on the busier months.

Each row replays the same month (bench/placement_scenario.py) with one thing switched: copies
that overlap on a link share its rate or each has it whole (``share_links``); the broker is told
the transfers under way or not (``see_in_flight``); a pair's rate is learned as this branch
learns it (``rules.copy_rate``) or as main did (the median of bytes over request-to-done).
Prints one markdown table per seed. Run: ``python -m bench.placement_attribution --seeds 1 2``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterable

import bench.placement_sim as sim
from bench.placement_scenario import build


def _main_rate(transfers: Iterable[tuple[int, float]]) -> float | None:
    return statistics.median(size / seconds for size, seconds in transfers)


ROWS = (  # label, policy, main's rate, broker told the transfers under way, links shared
    ("earliest, links not shared, main's estimate", "earliest", True, False, False),
    ("headroom, links not shared", "headroom", False, True, False),
    ("earliest, shared links, main's estimate", "earliest", True, False, True),
    ("earliest, shared links, rate net of set-up", "earliest", False, False, True),
    ("earliest, shared links, + transfers in flight (branch)", "earliest", False, True, True),
    ("headroom, shared links (branch)", "headroom", False, True, True),
)


def table(seed: int, days: float = 30.0) -> str:
    sc = build(seed, days, 12.0, 0.5)
    out = [f"| seed {seed}, session every 12 h, lend half | mean h | p95 h | cost | TB moved | copy actual/est median | p90 |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    learned = sim.copy_rate
    try:
        for label, policy, old_rate, in_flight, shared in ROWS:
            sim.copy_rate = _main_rate if old_rate else learned  # type: ignore[assignment]
            o = sim.simulate(sc, policy, see_in_flight=in_flight, share_links=shared)
            m = sim.metrics(sc, o)
            median, p90 = sim.copy_accuracy(o)
            out.append(f"| {label} | {m['mean_h']:.2f} | {m['p95_h']:.1f} | {m['cost']:,.0f} | {m['moved_tb']:.0f} | "
                       f"{median:.2f} | {p90:.2f} |")  # fmt: skip
    finally:
        sim.copy_rate = learned
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--days", type=float, default=30.0)
    args = parser.parse_args()
    for seed in args.seeds:
        print(table(seed, args.days) + "\n", flush=True)


if __name__ == "__main__":
    main()
