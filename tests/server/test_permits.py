"""Permits (moved here from tests/test_scheduler.py with `Permits` itself): all or nothing."""

import pytest

from app.permits import Permits
from tei_jax.errors import OverloadedError


def test_permits_are_all_or_nothing():
    permits = Permits(3)
    with permits.acquire(2):
        assert permits.available == 1
        with pytest.raises(OverloadedError, match="Model is overloaded"):
            permits.acquire(2)
        assert permits.available == 1  # a refused request takes nothing
    assert permits.available == 3
    assert not permits.try_acquire(4)
