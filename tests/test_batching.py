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


def test_short_items_fill_the_long_items_row():
    policy = ShapePolicy(512, max_batch_tokens=16384)
    plan = policy.plan([400] + [5] * 100)
    assert plan[0].shape.width >= 464 and plan[0].shape.rows == 1 and plan[0].indices[0] == 0
    assert len(plan[0].indices) > 1  # short items packed into the long row's free space
    assert sum(b.real_tokens for b in plan) == 900 and padding_efficiency(plan) > 0.9


def test_one_short_query_runs_in_a_narrow_single_row():
    policy = ShapePolicy(256, max_batch_tokens=2048)
    (batch,) = policy.plan([12])
    assert batch.shape == (1, 16, 4)
    assert policy.max_rows(32) == 1 and policy.max_rows(64) > 1
    # Two that do not fit one narrow row go to the regular widths.
    (batch,) = policy.plan([30, 30])
    assert batch.shape.width == 64 and batch.shape.rows == 1


def test_pack_picks_a_wider_width_when_it_wastes_less():
    policy = ShapePolicy(256, max_batch_tokens=2048)
    lengths = [40, 40, 40]  # at 64: three rows (192 tokens); at 128: one row holds all three
    batch = policy.pack(lengths)
    assert batch.shape == (1, 128, 32) and batch.real_tokens == 120
    # Attention's cost makes a wide row dearer: with a heavy weight the narrow rows win.
    heavy = ShapePolicy(256, max_batch_tokens=2048, attention_cost=0.03, batch_overhead=1000)
    assert heavy.pack(lengths).shape.width == 64


def test_pack_always_takes_the_first_item_and_leaves_the_rest_in_order():
    policy = ShapePolicy(256, max_batch_tokens=256)
    lengths = [10] + [200] * 3
    batch = policy.pack(lengths, first=0)
    assert batch.indices[0] == 0
    assert len(batch.indices) < len(lengths)  # the rest waits for a later batch


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_short_batches_pack_above_90_percent(seed):
    rng = np.random.default_rng(seed)
    policy = ShapePolicy(256, max_batch_tokens=16384, batch_tokens=1024,
                         attention_cost=ShapePolicy.attention_cost_for(384))
    computed = real = 0
    for _ in range(50):
        lengths = list(rng.integers(8, 33, size=int(rng.integers(12, 40))))
        plan = policy.plan(lengths)
        computed += sum(b.shape.tokens for b in plan)
        real += sum(lengths)
    assert real / computed > 0.9


def test_unpacked_policy_puts_one_item_per_row():
    policy = ShapePolicy(256, max_batch_tokens=2048, packing=False)
    for batch in policy.plan([3, 17, 40, 200, 5]):
        assert batch.shape.slots == 1
        assert len({p.row for p in batch.placements}) == len(batch.indices)


def test_row_ladder_and_request_cap():
    assert row_ladder(40) == [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40]
    policy = ShapePolicy(128, max_batch_tokens=4096, max_batch_requests=5)
    assert all(len(b.indices) <= 5 for b in policy.plan([4] * 23))


def test_exact_rows_compiles_every_row_count_up_to_it_and_pads_short_calls_less():
    assert row_ladder(40, exact=16) == list(range(1, 17)) + [20, 24, 28, 32, 40]
    cpu = dict(max_batch_tokens=16384, batch_tokens=1024, attention_cost=ShapePolicy.attention_cost_for(384, "cpu"))
    eight = ShapePolicy(256, **cpu)  # MiniLM's policy on CPU before exact_rows
    sixteen = ShapePolicy(256, **cpu, exact_rows=16)
    assert sixteen.row_counts(64) == list(range(1, 17))
    assert set(eight.shapes()) < set(sixteen.shapes())
    # The bench's short workload (8-32 tokens, calls of 32): 11 rows of 64 no longer round up to 12.
    lengths = np.random.default_rng(0).integers(8, 33, size=512).tolist()
    calls = [lengths[i:i + 32] for i in range(0, 512, 32)]
    by_eight = [b for call in calls for b in eight.plan(call)]
    by_sixteen = [b for call in calls for b in sixteen.plan(call)]
    assert any(b.shape.rows == 11 for b in by_sixteen)
    assert padding_efficiency(by_sixteen) > padding_efficiency(by_eight) + 0.01
    assert all(b.shape in sixteen.shapes() for b in by_sixteen)
    with pytest.raises(ValueError):
        ShapePolicy(256, exact_rows=0)


def test_too_long_raises():
    with pytest.raises(ValueError):
        ShapePolicy(64).width_for(65)  # seq_bucket, its dead alias, is gone


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
