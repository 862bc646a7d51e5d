"""Clients that hang up: the socket check, and the scheduler withdrawing their queued items."""

from __future__ import annotations

import os
import socket
import time

import pytest

from app.client_watch import INTERIM, ClientWatch, hung_up, watcher


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(server side, client side) of a real loopback TCP connection."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


def settle(check, want, timeout=2.0):
    """Poll `check` until it returns `want` (a reset takes a moment to arrive)."""
    deadline = time.monotonic() + timeout
    while check() != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


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


def test_descriptors_above_1024_are_watched_not_taken_for_hang_ups():
    # select() raises ValueError above FD_SETSIZE; that was read as "client gone".
    ours, theirs = tcp_pair()
    high = os.dup2(ours.fileno(), 1500)
    try:
        sock = socket.socket(fileno=high)
        assert sock.fileno() >= 1024
        assert ClientWatch(sock)() is False
        theirs.close()
        assert settle(ClientWatch(sock, probe=False), True) is True
        sock.close()
    finally:
        ours.close()


def test_a_half_closed_client_is_still_there_and_a_closed_one_is_not():
    ours, theirs = tcp_pair()
    with ours, theirs:
        theirs.shutdown(socket.SHUT_WR)  # sent its request, still reading
        check = ClientWatch(ours)
        assert settle(check, False) is False and check.probed
        assert check() is False  # no reset came back
        assert theirs.recv(64) == INTERIM  # an interim answer HTTP clients skip
    ours, theirs = tcp_pair()
    with ours:
        theirs.close()
        check = ClientWatch(ours)
        assert settle(check, True) is True  # the probe drew a reset


def test_watcher_needs_gunicorns_socket():
    assert watcher({}) is None
    ours, theirs = socket.socketpair()
    with ours, theirs:
        check = watcher({"gunicorn.socket": ours, "SERVER_PROTOCOL": "HTTP/1.1"})
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
    queued = list(scheduler._queue)
    assert len(queued) == 3 and all(entry.future.cancelled() for entry in queued)
    assert scheduler.queue_size == 3  # still queued, dropped (and counted) by the batching thread
