"""Permits (moved here from tests/test_scheduler.py with `Permits` itself): all or nothing,
and waiting for them."""

import threading

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


def test_waiting_for_permits_resumes_when_they_are_released():
    permits = Permits(2)
    held = permits.acquire(2)
    got = threading.Event()

    def waiter():
        with permits.wait_acquire(1):
            got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not got.wait(0.2)  # nothing free yet: the waiter waits
    held.__exit__(None, None, None)
    assert got.wait(5)
    thread.join(5)
    assert permits.available == 2
    with pytest.raises(OverloadedError):
        permits.wait_acquire(3)  # more than exist: refused at once
    with permits.acquire(2), pytest.raises(OverloadedError):
        permits.wait_acquire(1, timeout=0.05)
