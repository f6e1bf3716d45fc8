"""Which holder a copy of a job's input comes from, as the broker estimates it and as the hub
starts it (hub/broker/rules.py ``fastest_source``): the soonest by each link's measured rate net
of the transfers under way on it, the owner on a tie, and never a holder that may not serve it.
On the hub, with its sharing rules, in tests/hub/test_copy_source.py."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.broker.rules import (
    COPY_SETUP_S,
    DEFAULT_COPY_BPS,
    Network,
    PartitionView,
    SiteView,
    copy_plan,
    copy_time,
    evaluate,
    fastest_source,
    sources,
)
from shared.schemas.jobs import JobSpec
from shared.schemas.sites import SitePolicy

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
GB, TB = 10**9, 10**12
KEK, OSAKA, NAGOYA, DEST = 1, 2, 3, 4


def _net(**kw: object) -> Network:
    """movies (40 GB) is owned by kek-krios and held by osaka-gpu and nagoya too."""
    net = Network(dataset_bytes={"movies": 40 * GB, "maps": 2 * GB}, holders={"movies": {KEK, OSAKA, NAGOYA}, "maps": {KEK}},
                  owners={"movies": KEK, "maps": KEK}, relays={"movies": {OSAKA, NAGOYA}},
                  names={KEK: "kek-krios", OSAKA: "osaka-gpu", NAGOYA: "nagoya", DEST: "dest"})  # fmt: skip
    for k, v in kw.items():
        setattr(net, k, v)
    return net


def _dest(net: Network) -> SiteView:
    return SiteView(id=DEST, name="dest", institution="x", country="JP", status="active", reachability="online",
                    partitions=[PartitionView("cpu", 8, 64, 512, None, 0)], software=[("relion", "4.1", None)],
                    policy=SitePolicy(), has_snapshot=True, cpus_total=512, cpus_free=512, network=net)  # fmt: skip


def _job(*inputs: str) -> JobSpec:
    return JobSpec.model_validate({"name": "mc", "kind": "relion.motioncorr", "inputs": [{"dataset": d} for d in inputs],
                                   "resources": {"cpus": 32, "walltime_s": 86_400}})  # fmt: skip


def test_the_copy_comes_from_the_holder_with_the_best_measured_throughput() -> None:
    net = _net(pair_bps={(KEK, DEST): 50e6, (OSAKA, DEST): 400e6, (NAGOYA, DEST): 200e6})
    assert fastest_source(40 * GB, DEST, [KEK, OSAKA, NAGOYA], KEK, net.pair_bps, net.in_flight) == (OSAKA, 40 * GB / 400e6)
    (c,) = copy_plan(_job("movies"), _dest(net))
    assert (c.source, c.size, c.seconds) == (OSAKA, 40 * GB, COPY_SETUP_S + 100.0)
    [v] = [evaluate(_job("movies"), "x", _dest(net), NOW, set())]
    assert "7 m copying 40.0 GB from osaka-gpu, no wait" in v.reasons[1], v.reasons


def test_the_owner_wins_a_tie_and_is_the_default_until_links_are_measured() -> None:
    net = _net()
    assert fastest_source(40 * GB, DEST, [NAGOYA, OSAKA, KEK], KEK, {}, {}) == (KEK, 40 * GB / DEFAULT_COPY_BPS)
    assert fastest_source(40 * GB, DEST, [NAGOYA, OSAKA], KEK, {}, {}) == (OSAKA, 40 * GB / DEFAULT_COPY_BPS), "then lowest id"
    same = {(KEK, DEST): 300e6, (OSAKA, DEST): 300e6}
    assert fastest_source(40 * GB, DEST, [OSAKA, KEK], KEK, same, {})[0] == KEK
    assert copy_plan(_job("movies"), _dest(net))[0].source == KEK
    assert fastest_source(40 * GB, DEST, [], KEK, {}, {}) == (None, 40 * GB / DEFAULT_COPY_BPS), "no holder may serve it"


def test_transfers_under_way_on_a_faster_link_can_make_another_holder_sooner() -> None:
    """osaka-gpu's link is twice as fast but carries two 40 GB copies: 120 GB of its time at
    400 MB/s (300 s) against 40 GB at kek's 200 MB/s (200 s)."""
    net = _net(pair_bps={(KEK, DEST): 200e6, (OSAKA, DEST): 400e6}, relays={"movies": {OSAKA}})
    assert copy_plan(_job("movies"), _dest(net))[0].source == OSAKA
    net.in_flight = {(OSAKA, DEST): [40 * GB, 40 * GB]}
    (c,) = copy_plan(_job("movies"), _dest(net))
    assert (c.source, c.seconds) == (KEK, COPY_SETUP_S + 200.0)


def test_a_faster_holder_that_may_not_serve_the_copy_is_skipped() -> None:
    net = _net(pair_bps={(KEK, DEST): 50e6, (OSAKA, DEST): 400e6, (NAGOYA, DEST): 200e6}, relays={"movies": {NAGOYA}})
    assert sorted(sources(net, "movies")) == [KEK, NAGOYA], "osaka-gpu holds it but its sharing rules do not let it serve"
    (c,) = copy_plan(_job("movies"), _dest(net))
    assert (c.source, c.seconds) == (NAGOYA, COPY_SETUP_S + 200.0)
    net.relays = {}
    assert copy_plan(_job("movies"), _dest(net))[0].source == KEK, "only the owner may serve it"
    assert copy_time(_job("movies"), _dest(net)) == (COPY_SETUP_S + 40 * GB / 50e6, 40 * GB)
    v = evaluate(_job("movies"), "x", _dest(net), NOW, set())
    assert "copying 40.0 GB from kek-krios" in v.reasons[1] and "osaka-gpu" not in " ".join(v.reasons)


def test_a_dataset_whose_owner_is_not_known_may_come_from_any_holder() -> None:
    """A view built without owners (a simulation, an older caller) keeps the estimate as it was."""
    net = Network(dataset_bytes={"movies": 40 * GB}, holders={"movies": {KEK, OSAKA}}, pair_bps={(OSAKA, DEST): 400e6})
    assert sorted(sources(net, "movies")) == [KEK, OSAKA]
    assert copy_plan(_job("movies"), _dest(net))[0].source == OSAKA
    v = evaluate(_job("movies"), "x", _dest(net), NOW, set())
    assert "copying 40.0 GB from site 2," in v.reasons[1], "a source whose name the view lacks, by id"


def test_inputs_from_two_holders_are_each_named() -> None:
    net = _net(pair_bps={(OSAKA, DEST): 400e6})
    plan = copy_plan(_job("movies", "maps"), _dest(net))
    assert [(c.dataset, c.source) for c in plan] == [("movies", OSAKA), ("maps", KEK)]
    assert copy_time(_job("movies", "maps"), _dest(net))[0] == sum(c.seconds for c in plan)
    v = evaluate(_job("movies", "maps"), "x", _dest(net), NOW, set())
    assert "copying 42.0 GB: 40.0 GB from osaka-gpu, 2.0 GB from kek-krios, no wait" in v.reasons[1], v.reasons
