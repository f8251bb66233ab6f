"""Data mixture: shard sets of the store's dataset with weights; order a pure function of (seed, step)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from eupe.distill.data import Plan


def _plan(seed: int = 0, world: int = 1, micro: int = 4, parts=None, weights=(0.75, 0.25)) -> Plan:
    parts = parts or (np.arange(0, 4), np.arange(4, 12))
    return Plan(rows=np.arange(12), views_per_image=2, seed=seed, global_batch=8, micro_batch=micro, world_size=world,
                student_resolutions=(64,), teacher_resolutions=(), parts=tuple(parts), weights=tuple(weights))


def _rows(plan: Plan, step: int, world: int = 1) -> list[int]:
    return [s[0] for rank in range(world) for micro in plan.micro_batches(step, rank) for s in micro]


def test_every_step_takes_each_part_by_its_weight():
    plan = _plan()
    for step in range(40):
        rows = _rows(plan, step)
        assert len(rows) == 8 and sum(r < 4 for r in rows) == 6  # 0.75 x 8 from part 0, 2 from part 1


def test_shares_follow_fractional_weights_in_the_long_run():
    plan = _plan(weights=(0.1, 0.9))
    counts = Counter(r < 4 for step in range(100) for r in _rows(plan, step))
    assert counts[True] == 80 and counts[False] == 720  # exactly 10% of 800 samples


def test_each_part_visits_all_its_rows_once_per_own_epoch():
    plan = _plan()
    small = [r for step in range(4) for r in plan.step_samples(step) if r[0] < 4]  # 24 samples = 6 epochs of 4
    ordered = [plan._part_permutation(0, e) for e in range(6)]
    assert all(sorted(p.tolist()) == [0, 1, 2, 3] for p in ordered)
    assert Counter(r for r, _ in small) == {0: 6, 1: 6, 2: 6, 3: 6}


def test_order_is_a_pure_function_of_seed_and_step():
    a, b = _plan(), _plan()
    late = [_rows(a, s) for s in range(25, 30)]
    assert [_rows(b, s) for s in range(25, 30)] == late  # a fresh plan starting at step 25 (a resume)
    assert [_rows(_plan(seed=1), s) for s in range(25, 30)] != late
    views = {v for s in range(30) for _, v in a.step_samples(s)}
    assert views == {0, 1}


def test_ranks_split_the_same_global_batch():
    one, two = _plan(world=1, micro=4), _plan(world=2, micro=4)
    for step in range(5):
        assert sorted(_rows(one, step)) == sorted(_rows(two, step, world=2))
