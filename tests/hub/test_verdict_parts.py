"""Every number of an exact verdict is what its definition gives.

``rules.evaluate_now`` is written for speed (it runs once per job a pass places): it skips
work that gives nothing (no inputs, one partition, nothing priced) and keeps parts that do
not change (an estimate's rounded run times, prices). The placer comparisons cannot catch a
shortcut that changes a number, as both sides score sites with it. Here each part of each
eligible verdict, on random networks (tests/hub/test_placer_equivalence.py's), is computed
again from the functions that define it: the copy, the chosen partition's option, headroom,
queue, reliability, locality, the score from its tie-break, and the reasons' first words.
"""

from __future__ import annotations

import math
import random

import pytest

from hub.broker.rules import (
    GPU_SITE_PENALTY,
    TIE_BAND,
    TIE_WEIGHTS,
    closed,
    copy_time,
    cpus_available,
    evaluate_now,
    gpus_available,
    locality,
    options,
    room,
    static_verdict,
)
from tests.hub.test_placer_equivalence import NOW, network, queue


@pytest.mark.parametrize("seed", range(4))
def test_each_part_of_a_verdict_is_what_its_definition_gives(seed: int) -> None:
    views = network(random.Random(seed), 40)
    checked, with_copy, several = 0, 0, 0
    for spec, institution in queue(random.Random(seed + 100), 60, 40):
        r = spec.resources
        for site in views:
            never, models = static_verdict(spec, institution, site)
            if never:
                continue
            v = evaluate_now(spec, site, models, NOW, set())
            if not v.eligible:
                assert v.reasons == (closed(site, NOW, set()) or room(spec, site, models)[0] or v.reasons)
                continue
            copy_s, copy_bytes = copy_time(spec, site)
            opts = [o for o in options(spec, site, models) if o.partition.name == v.partition]
            assert len(opts) == 1
            o = opts[0]
            p = v.parts
            assert p["copy_s"] == round(copy_s, 1)
            assert p["finish_s"] == round(copy_s + o.run.p50 + o.startup, 1)
            assert (p["run_p10_s"], p["run_s"], p["run_p90_s"]) == (round(o.run.p10, 1), round(o.run.p50, 1), round(o.run.p90, 1))
            assert p["runs"] == float(o.run.runs) and p["startup_s"] == float(o.startup)
            assert p["cost"] == round(o.cost, 4)
            if v.gpu_model:
                spare = (gpus_available(site, v.gpu_model) - r.gpus) / max(site.gpus_total.get(v.gpu_model, 1), 1)
            else:
                spare = (cpus_available(site) - r.cpus) / max(site.cpus_total, 1)
            assert p["capacity"] == round(spare, 4)
            assert p["queue"] == round(1 / (1 + site.jobs_pending), 4)
            assert p["reliability"] == round(site.reliability, 4)
            assert p["locality"] == round(locality(spec, site), 4)
            assert list(p) == ["finish_s", "copy_s", "run_p10_s", "run_s", "run_p90_s", "runs", "startup_s", "cost",
                               "capacity", "queue", "reliability", "locality"]  # fmt: skip
            slow = (GPU_SITE_PENALTY if not r.gpus and site.gpus_total else 1.0) / max(site.reliability, 0.05)
            band = math.floor(math.log(max((copy_s + o.run.p50 + o.startup) * slow, 60.0)) / math.log(TIE_BAND))
            tie = (TIE_WEIGHTS["cost"] * o.cost / (1 + o.cost) + TIE_WEIGHTS["locality"] * (1 - p["locality"])
                   + TIE_WEIGHTS["capacity"] * (1 - max(min(p["capacity"], 1.0), 0.0))
                   + TIE_WEIGHTS["queue"] * (1 - p["queue"]))  # fmt: skip
            assert v.score == round(1000 - band - tie, 6)
            assert v.reasons[0] == f"{r.cpus} of {site.cpus_free - site.unseen_cpus} free CPUs"
            assert ("copying" in v.reasons[1 + bool(v.gpu_model)]) == bool(copy_bytes)
            checked += 1
            with_copy += bool(copy_bytes)
            several += len(options(spec, site, models)) > 1
    assert checked > 100 and with_copy > 10 and several > 10, "the networks exercise copies and sites with several partitions"
