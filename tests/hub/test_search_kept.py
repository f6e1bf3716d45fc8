"""What the batch placer keeps from job to job stays what building it afresh gives.

A batch keeps, per kind of GPU job, the GPUs each site lends (``search.Needs``), and per
job its search's keys (``search.Candidates``), and recounts only the sites reserved since
(GPU counts only where GPUs were reserved; a search's key when the site comes up). The placements alone would not show a stale
count: a site wrongly thought to have room is scored exactly and found full, so the job goes
to the same site, but the reasons the decision records change. Here, on random networks,
after every placement the kept counts are compared with counts made from scratch.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from hub.broker.rules import evaluate_now
from hub.broker.search import Board, Candidates, Needs, job_key
from tests.hub.test_placer_equivalence import NOW, network, queue


@pytest.mark.parametrize("seed", range(3))
def test_kept_views_match_fresh_ones_as_work_is_reserved(seed: int) -> None:
    board = Board(network(random.Random(seed), 40), NOW)
    jobs = queue(random.Random(seed + 1000), 150, 40)
    placed = gpu_placed = 0
    for spec, institution in jobs:
        search = board.searches.setdefault(job_key(spec), Candidates(board.needs_of(spec), spec))
        best = search.best(institution)
        # The search's keys: each site's bound where it has room and is not ruled out; at a
        # site reserved since it was last looked at (``stale``), no less (recounted when it comes up).
        fits = search.needs.fits()
        expected, keys = np.where(fits & ~np.array(search.out), search.bound, -np.inf), np.array(search.keys)
        recounted = np.ones(len(keys), dtype=bool)
        recounted[list(search.stale)] = False
        assert np.array_equal(keys[recounted], expected[recounted])
        assert (keys >= expected).all()
        if best:
            i, verdict = best[0]
            board.reserve(i, spec, verdict.gpu_model, verdict.partition)
            placed += 1
            gpu_placed += verdict.gpu_model is not None
        for kept in board.needs.values():
            fresh = Needs(board, kept.spec, kept.fixed)
            kept.refresh()
            usable = kept.fixed.ok & board.open
            assert np.array_equal(kept.gpus[usable], fresh.gpus[usable])
            assert np.array_equal(kept.gpu_headroom[usable], fresh.gpu_headroom[usable])
    assert placed > 50 and gpu_placed > 5, "the queue reserves CPUs and GPUs"


@pytest.mark.parametrize("seed", range(3))
def test_what_a_search_keeps_of_a_site_scores_it_as_afresh(seed: int) -> None:
    """A search keeps, per site it scored, what the job's verdict there takes from what work
    reserved at the site leaves as it is (``rules.Standing``: partitions, prices, run times,
    the copy, and per option its parts and words). After every placement, each site's verdict
    from what is kept must be the one ``evaluate_now`` gives with nothing kept."""
    board = Board(network(random.Random(seed), 40), NOW)
    compared = reused = 0
    for spec, institution in queue(random.Random(seed + 1000), 150, 40):
        search = board.searches.setdefault(job_key(spec), Candidates(board.needs_of(spec), spec))
        best = search.best(institution)
        if best:
            i, verdict = best[0]
            board.reserve(i, spec, verdict.gpu_model, verdict.partition)
        for kept in board.searches.values():
            for site_id, standing in kept.kept.items():
                view = board.views[board.index[site_id]]
                again = evaluate_now(kept.spec, view, standing.models, NOW, set(), kept.runs, kept.kept)
                assert again == evaluate_now(kept.spec, view, standing.models, NOW, set()), view.name
                compared += 1
                reused += bool(standing.finishes)
    assert compared > 1000 and reused > 500, "sites scored again from what their searches kept"
