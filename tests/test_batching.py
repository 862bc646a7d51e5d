"""Shape ladder and batch planning."""

import numpy as np
import pytest

from tei_jax.batching import ShapePolicy, padding_efficiency, seq_ladder


def test_seq_ladder_is_increasing_multiples_of_16_and_covers_max():
    for max_len in (16, 100, 256, 512, 8192):
        ladder = seq_ladder(max_len)
        assert ladder == sorted(set(ladder))
        assert all(x % 16 == 0 for x in ladder)
        assert ladder[-1] >= max_len
        assert all(b / a <= 2.0 for a, b in zip(ladder, ladder[1:]))


def test_max_rows_respects_budget_and_request_cap():
    policy = ShapePolicy(512, max_batch_tokens=4096, max_batch_requests=16)
    for rows, seq in policy.shapes():
        assert rows * seq <= 4096 and rows <= 16
    assert policy.max_rows(512) == 8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plan_covers_every_item_once_within_shapes(seed):
    rng = np.random.default_rng(seed)
    lengths = list(rng.integers(1, 257, size=int(rng.integers(1, 300))))
    policy = ShapePolicy(256, max_batch_tokens=2048)
    plan = policy.plan(lengths)
    seen = sorted(i for members, _ in plan for i in members)
    assert seen == list(range(len(lengths)))
    allowed = set(policy.shapes())
    for members, (rows, seq) in plan:
        assert (rows, seq) in allowed
        assert len(members) <= rows
        assert max(lengths[i] for i in members) <= seq
    efficiency = padding_efficiency(lengths, [shape for _, shape in plan])
    assert 0 < efficiency <= 1


def test_plan_groups_short_items_apart_from_long_ones():
    policy = ShapePolicy(512, max_batch_tokens=16384)
    plan = policy.plan([500] + [5] * 31)
    shapes = sorted(shape for _, shape in plan)
    assert shapes == [(1, 512), (32, 16)]


def test_too_long_raises():
    with pytest.raises(ValueError):
        ShapePolicy(64).seq_bucket(65)
