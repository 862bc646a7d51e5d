"""Clients that hang up: the socket check, and the scheduler withdrawing their queued items."""

from __future__ import annotations

import socket

import pytest

from app.client_watch import hung_up, watcher


def test_hung_up_tells_a_closed_peer_from_a_quiet_or_talking_one():
    ours, theirs = socket.socketpair()
    try:
        assert not hung_up(ours)  # quiet
        theirs.sendall(b"GET / HTTP/1.1\r\n")  # a pipelined request: still there, and not consumed
        assert not hung_up(ours)
        assert ours.recv(64).startswith(b"GET /")
        theirs.close()
        assert hung_up(ours)
    finally:
        ours.close()
    assert hung_up(ours)  # closed on our side too: nothing more to wait for


def test_watcher_needs_gunicorns_socket():
    assert watcher({}) is None
    ours, theirs = socket.socketpair()
    with ours, theirs:
        check = watcher({"gunicorn.socket": ours})
        assert check() is False


def test_a_client_that_hangs_up_has_its_queued_items_withdrawn():
    """The scheduler (the server's executor) polls `Call.gone` and withdraws the call's items."""
    from types import SimpleNamespace

    from tei_jax.batching import ShapePolicy
    from tei_jax.executor import Call, CallWithdrawn, Job
    from tei_jax.scheduler import Scheduler
    from tei_jax.tasks import Task
    from tei_jax.tokenization import Encoded

    engine = SimpleNamespace(policy=ShapePolicy(128), tasks=(Task.EMBED,))
    scheduler = Scheduler(engine)  # never started: its items would wait forever
    items = [Encoded((1, 2), (0, 0), 2) for _ in range(3)]
    polls = iter([False, False, True])
    with pytest.raises(CallWithdrawn):
        scheduler.run(Job(Task.EMBED, lambda: items), Call(gone=lambda: next(polls)))
    assert all(entry.future.cancelled() for group in scheduler._groups.values() for entry in group)
    assert scheduler.queue_size == 3  # still queued, dropped (and counted) by the batching thread
