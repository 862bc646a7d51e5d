"""The tokenizer pool: results in order, calls taking turns, the first failure, withdrawal."""

from __future__ import annotations

import threading

import pytest

from tei_jax.tokenizer_pool import PoolClosed, TokenizerPool


def pieces_of(name, count, log, hold=None):
    """`count` pieces that log (name, i) when they run; piece 0 waits for `hold` first."""
    def piece(i):
        def run():
            if i == 0 and hold is not None:
                assert hold.wait(10)
            log.append((name, i))
            return [f"{name}{i}"]
        return run
    return [piece(i) for i in range(count)]


def wait_until(condition, timeout=10.0):
    event = threading.Event()
    while not condition():
        assert not event.wait(0.002) and (timeout := timeout - 0.002) > 0


def test_results_come_back_in_order_with_every_thread_on_one_call():
    pool = TokenizerPool(3)
    try:
        log = []
        results, seconds = pool.run(pieces_of("a", 20, log))
        assert results == [f"a{i}" for i in range(20)] and seconds >= 0
        assert pool.run([]) == ([], 0.0)
    finally:
        pool.shutdown()


def test_a_short_call_waits_for_the_running_piece_only():
    pool = TokenizerPool(1)
    log, hold = [], threading.Event()
    try:
        big = threading.Thread(target=pool.run, args=(pieces_of("big", 30, log, hold),))
        big.start()
        wait_until(lambda: bool(pool._running))  # big0 runs (held), big1.. wait
        short_done = []
        short = threading.Thread(target=lambda: short_done.append(pool.run(pieces_of("short", 1, log))))
        short.start()
        wait_until(lambda: len(pool._line) == 1)  # the short call is in line while big0 runs
        hold.set()
        short.join(10)
        big.join(10)
        assert short_done[0][0] == ["short0"]
        # Before: the big call's 30 inputs were one task, and the short one came last.
        assert log[:3] == [("big", 0), ("short", 0), ("big", 1)]
    finally:
        hold.set()
        pool.shutdown()


def test_two_big_calls_alternate():
    pool = TokenizerPool(1)
    log, hold = [], threading.Event()
    try:
        first = threading.Thread(target=pool.run, args=(pieces_of("a", 4, log, hold),))
        first.start()
        wait_until(lambda: bool(pool._running))
        second = threading.Thread(target=pool.run, args=(pieces_of("b", 4, log),))
        second.start()
        wait_until(lambda: len(pool._line) == 1)
        hold.set()
        first.join(10)
        second.join(10)
        assert [name for name, _ in log] == ["a", "b", "a", "b", "a", "b", "a", "b"]
    finally:
        hold.set()
        pool.shutdown()


def test_the_earliest_failure_is_raised_and_later_pieces_never_run():
    pool = TokenizerPool(2)
    ran = []

    def piece(i):
        def run():
            ran.append(i)
            if i in (2, 4):
                raise ValueError(f"bad {i}")
            return [i]
        return run

    try:
        with pytest.raises(ValueError, match="bad 2"):
            pool.run([piece(i) for i in range(10)])
        assert max(ran) <= 4  # stopped at the failure (one piece may already have started)
    finally:
        pool.shutdown()


def test_a_caller_that_goes_away_drops_its_waiting_pieces():
    pool = TokenizerPool(1)
    log, hold = [], threading.Event()
    gone = threading.Event()
    try:
        outcome = []
        caller = threading.Thread(target=lambda: outcome.append(
            pool.run(pieces_of("a", 10, log, hold), gone=gone.is_set, poll_s=0.01)))
        caller.start()
        wait_until(lambda: bool(pool._running))
        gone.set()
        caller.join(10)
        hold.set()
        assert outcome == [None]
        pool.run(pieces_of("b", 1, log))  # one thread: it ran after whatever a had left
        assert log == [("a", 0), ("b", 0)]
    finally:
        hold.set()
        pool.shutdown()


def test_shutdown_refuses_new_calls():
    pool = TokenizerPool(1)
    pool.shutdown()
    with pytest.raises(PoolClosed):
        pool.run(pieces_of("a", 1, []))
