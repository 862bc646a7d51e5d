"""Ordered, bounded-parallel streams (app/grpc/streams.py), without a server."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.grpc.streams import DEFAULT_PARALLEL, max_parallel, ordered_map


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(16) as executor:
        yield executor


def test_answers_leave_in_request_order_while_work_runs_concurrently(pool):
    lock, running, peak = threading.Lock(), [0], [0]

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01 * (i % 3))  # later messages often finish first
        with lock:
            running[0] -= 1
        return i * 10

    assert list(ordered_map(pool, work, iter(range(60)), limit=4)) == [i * 10 for i in range(60)]
    assert 1 < peak[0] <= 4


def test_the_first_failure_ends_the_stream_and_later_messages_are_not_read(pool):
    read = []

    def messages():
        for i in range(1000):
            read.append(i)
            yield i

    def work(i: int) -> int:
        if i == 3:
            raise ValueError("bad message 3")
        return i

    answers = []
    with pytest.raises(ValueError, match="bad message 3"):
        for answer in ordered_map(pool, work, messages(), limit=2):
            answers.append(answer)
    assert answers == [0, 1, 2]
    time.sleep(0.3)
    assert len(read) < 20  # the reader stopped soon after the failure


def test_a_broken_request_stream_raises_after_the_answers_before_it(pool):
    def messages():
        yield 1
        yield 2
        raise ConnectionError("client reset")

    answers = []
    with pytest.raises(ConnectionError):
        for answer in ordered_map(pool, lambda i: i, messages(), limit=8):
            answers.append(answer)
    assert answers == [1, 2]


def test_parallelism_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("GRPC_MAX_PARALLEL_STREAM_REQUESTS", "7")
    assert max_parallel() == 7
    monkeypatch.setenv("GRPC_MAX_PARALLEL_STREAM_REQUESTS", "lots")
    assert max_parallel() == DEFAULT_PARALLEL
    monkeypatch.delenv("GRPC_MAX_PARALLEL_STREAM_REQUESTS")
    assert max_parallel() == DEFAULT_PARALLEL
