"""Shape ladder and batch planning."""

import numpy as np
import pytest

from tei_jax.batching import ShapePolicy, padding_efficiency, row_ladder, seq_ladder


def test_seq_ladder_is_increasing_multiples_of_16_and_covers_max():
    for max_len in (16, 100, 256, 512, 8192):
        ladder = seq_ladder(max_len)
        assert ladder == sorted(set(ladder))
        assert all(x % 16 == 0 for x in ladder)
        assert ladder[-1] >= max_len
        assert all(b / a <= 2.0 for a, b in zip(ladder, ladder[1:]))


def test_max_rows_respects_budget_and_request_cap():
    policy = ShapePolicy(512, max_batch_tokens=4096, max_batch_requests=16)
    for rows, seq, _slots in policy.shapes():
        assert rows * seq <= 4096 and rows <= 16
    assert policy.max_rows(512) == 8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plan_covers_every_item_once_within_shapes(seed):
    rng = np.random.default_rng(seed)
    lengths = list(rng.integers(1, 257, size=int(rng.integers(1, 300))))
    policy = ShapePolicy(256, max_batch_tokens=2048)
    plan = policy.plan(lengths)
    seen = sorted(i for batch in plan for i in batch.indices)
    assert seen == list(range(len(lengths)))
    allowed = set(policy.shapes())
    for batch in plan:
        assert batch.shape in allowed
        occupied = {}
        for index, (row, start, slot) in zip(batch.indices, batch.placements):
            assert row < batch.shape.rows and slot < batch.shape.slots
            assert start + lengths[index] <= batch.shape.width
            for t in range(start, start + lengths[index]):  # no two items share a token
                assert occupied.setdefault((row, t), index) == index
        assert batch.real_tokens == sum(lengths[i] for i in batch.indices)
    assert padding_efficiency(plan) > 0.8


def test_short_items_fill_holes_but_never_open_wide_rows():
    policy = ShapePolicy(512, max_batch_tokens=16384)
    plan = policy.plan([400] + [5] * 100)
    wide, narrow = plan
    assert wide.shape.width == 464 and wide.shape.rows == 1
    assert len(wide.indices) > 1  # short items packed into the long row's free space
    assert narrow.shape.width == 64 and wide.real_tokens + narrow.real_tokens == 900


def test_unpacked_policy_puts_one_item_per_row():
    policy = ShapePolicy(256, max_batch_tokens=2048, packing=False)
    for batch in policy.plan([3, 17, 40, 200, 5]):
        assert batch.shape.slots == 1
        assert len({p.row for p in batch.placements}) == len(batch.indices)


def test_row_ladder_and_request_cap():
    assert row_ladder(256)[:8] == [1, 2, 3, 4, 6, 8, 12, 16]
    policy = ShapePolicy(128, max_batch_tokens=4096, max_batch_requests=5)
    assert all(len(b.indices) <= 5 for b in policy.plan([4] * 23))


def test_too_long_raises():
    with pytest.raises(ValueError):
        ShapePolicy(64).seq_bucket(65)


def test_batch_tokens_aims_batches_below_the_cap():
    capped = ShapePolicy(512, max_batch_tokens=16384, batch_tokens=1024)
    assert capped.token_budget == 1024
    assert all(s.rows * s.width <= max(1024, s.width) for s in capped.shapes())
    assert len(capped.shapes()) < len(ShapePolicy(512, max_batch_tokens=16384).shapes())
    lengths = [7, 300, 512, 45, 90, 12] * 20
    batches = capped.plan(lengths)
    assert sorted(i for b in batches for i in b.indices) == list(range(len(lengths)))
    assert all(b.shape.tokens <= max(1024, b.shape.width) for b in batches)
    # The cap still wins when it is the smaller of the two.
    assert ShapePolicy(512, max_batch_tokens=512, batch_tokens=4096).token_budget == 512
