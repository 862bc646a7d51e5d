"""Clients that hang up: the socket check, and the service withdrawing their queued items."""

from __future__ import annotations

import socket
from concurrent.futures import Future

import pytest

from app.client_watch import hung_up, watcher
from app.service import ClientDisconnected, Service
from app.settings import parse_settings


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


class _StuckScheduler:
    """Queues items and never runs them."""

    def __init__(self):
        self.futures: list[Future] = []

    def submit(self, task, items):
        self.futures = [Future() for _ in items]
        return self.futures


def test_a_client_that_hangs_up_has_its_queued_items_withdrawn():
    service = Service(parse_settings(["--hostname", "127.0.0.1"]))
    service.scheduler = _StuckScheduler()
    polls = iter([False, False, True])
    with pytest.raises(ClientDisconnected):
        service.infer("embed", ["a", "b", "c"], client_gone=lambda: next(polls))
    assert all(f.cancelled() for f in service.scheduler.futures)
