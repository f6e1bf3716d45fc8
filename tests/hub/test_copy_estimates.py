"""What the broker estimates a copy of a job's inputs takes: a learned rate net of the set-up
the estimate adds back, and a link shared with the transfers already under way on it."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.broker.batch import place_batch
from hub.broker.rules import COPY_SETUP_S, Network, PartitionView, SiteView, copy_rate, copy_time, evaluate, rank
from shared.schemas.jobs import JobSpec
from shared.schemas.sites import SitePolicy

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TB = 10**12


def _sites(net: Network) -> list[SiteView]:
    """site-a holds the data but has no room; site-b and site-c are alike (site-b first by name)."""
    out = []
    for i, name, free in ((1, "site-a", 0), (2, "site-b", 512), (3, "site-c", 512)):
        out.append(SiteView(id=i, name=name, institution="x", country="JP", status="active", reachability="online",
                            partitions=[PartitionView("cpu", 8, 64, 512, None, 0)], software=[("relion", "4.1", None)],
                            policy=SitePolicy(), has_snapshot=True, cpus_total=512, cpus_free=free, network=net))  # fmt: skip
    out[0].datasets.add("movies")
    return out


def _job() -> JobSpec:
    return JobSpec.model_validate({"name": "mc", "kind": "relion.motioncorr", "inputs": [{"dataset": "movies"}],
                                   "resources": {"cpus": 32, "walltime_s": 86_400}})  # fmt: skip


def test_a_rate_learned_on_a_small_copy_does_not_stretch_a_large_one() -> None:
    """A 26 GB copy over a 250 MB/s link took the set-up and 104 s. Read as bytes over the whole
    time (64 MB/s), 4 TB would be estimated at 17 h; net of the set-up, at the 4.4 h it takes."""
    took = COPY_SETUP_S + 26e9 / 250e6
    assert copy_rate([(26 * 10**9, took)]) == 250e6
    net = Network(dataset_bytes={"movies": 4 * TB}, holders={"movies": {1}}, pair_bps={(1, 2): 250e6})
    seconds, moved = copy_time(_job(), _sites(net)[1])
    assert moved == 4 * TB and seconds == COPY_SETUP_S + 4 * TB / 250e6
    assert copy_rate([(10**9, COPY_SETUP_S / 3)]) is None, "all set-up: nothing learned of the rate"
    assert copy_rate([(10**9, COPY_SETUP_S / 3), (3 * 10**9, COPY_SETUP_S + 10)]) == 4 * 10**9 / 10, "pooled"


def test_a_copy_shares_its_link_with_the_transfers_under_way() -> None:
    """4 TB over a 250 MB/s link that already carries a 4 TB and a 1 TB transfer: the new copy
    moves its bytes at a third of the rate until the 1 TB lands, then at half."""
    net = Network(dataset_bytes={"movies": 4 * TB}, holders={"movies": {1}}, pair_bps={(1, 2): 250e6},
                  in_flight={(1, 2): [4 * TB, TB], (1, 3): [TB]})  # fmt: skip
    _, b, c = _sites(net)
    assert copy_time(_job(), b)[0] == COPY_SETUP_S + 9 * TB / 250e6
    assert copy_time(_job(), c)[0] == COPY_SETUP_S + 5 * TB / 100e6, "unmeasured pair: the default rate, shared too"


def test_the_job_goes_where_the_link_from_its_data_is_free() -> None:
    """site-b and site-c are alike but for the copy: the link to site-b carries a 4 TB transfer,
    so the job goes to site-c, in one-by-one placement and in the batch placer alike."""
    net = Network(dataset_bytes={"movies": 4 * TB}, holders={"movies": {1}})
    sites = _sites(net)
    assert rank([evaluate(_job(), "x", v, NOW, set()) for v in sites])[0].site == "site-b", "no transfer: first by name"
    net.in_flight = {(1, 2): [4 * TB]}
    verdicts = [evaluate(_job(), "x", v, NOW, set()) for v in sites]
    assert rank(verdicts)[0].site == "site-c"
    assert next(v for v in verdicts if v.site == "site-b").parts["copy_s"] == COPY_SETUP_S + 8 * TB / 100e6
    [result] = place_batch([(_job(), "x")], sites, NOW)
    assert result.site is not None and result.site.name == "site-c"
