"""tei_jax/sharding.py on this process's one device (multi-device checks: tests/sharding/)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from tei_jax.batching import ShapePolicy
from tei_jax.errors import ModelLoadError
from tei_jax.sharding import Placement


def test_one_device_is_a_one_by_one_mesh_with_a_stable_description():
    placement = Placement.build()
    assert (placement.data_size, placement.model_size) == (len(jax.local_devices()), 1)
    described = placement.describe()
    assert described["axis_names"] == ["data", "model"]
    assert described["platform"] == jax.devices()[0].platform
    assert described["device_ids"] == [d.id for d in jax.local_devices()]
    assert json.loads(placement.key()) == described
    assert Placement.build().key() == placement.key()


def test_sizes_are_checked_against_the_devices():
    with pytest.raises(ModelLoadError, match="data_parallel_size 2 x tensor_parallel_size 1 = 2 devices, but only 1"):
        Placement.build(2, 1, jax.devices()[:1])
    with pytest.raises(ModelLoadError, match="tensor_parallel_size must be a positive integer, got 0"):
        Placement.build(1, 0)
    with pytest.raises(ModelLoadError, match="tensor_parallel_size 2 does not divide the 1 devices"):
        Placement.build(None, 2, jax.devices()[:1])


def test_place_puts_a_host_array_on_the_mesh():
    placement = Placement.build(1, 1, jax.devices()[:1])
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    placed = placement.place(("embed", "mlp"), host)
    np.testing.assert_array_equal(np.asarray(placed), host)
    assert placed.sharding.mesh.shape == {"data": 1, "model": 1}


def test_row_multiple_makes_every_row_count_divide():
    policy = ShapePolicy(256, max_batch_tokens=2048, row_multiple=4)
    shapes = policy.shapes()
    assert shapes and all(s.rows % 4 == 0 for s in shapes)
    assert policy.max_rows(16) == 4  # a one-row width runs one row per device
    assert policy.row_counts(64) == [4, 8, 12, 16, 20, 24, 28, 32]
    for batch in policy.plan([5, 70, 200, 3, 64] * 7):
        assert batch.shape.rows % 4 == 0 and batch.shape in shapes
    with pytest.raises(ValueError, match="row_multiple"):
        ShapePolicy(256, row_multiple=0)
