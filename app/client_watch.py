"""Notice a client that hung up while its items wait in the queue, so they can be dropped.

gunicorn hands the WSGI app its connection socket (`environ["gunicorn.socket"]`). While a
request waits for its results nothing more is expected from the client, so a socket that
turns readable and yields zero bytes on a peek means the peer sent its FIN. Bytes waiting (a
pipelined next request) mean it is still there; we never consume them.

A FIN alone does not tell a client that closed from one that only half-closed (shut down its
sending side and still reads). So the first FIN is answered with an interim
`HTTP/1.1 100 Continue` (every HTTP/1.1 client must skip unexpected 1xx responses): a closed
peer answers it with a reset, a half-closed one reads past it and gets its answer later.

`poll()` is used, not `select()`, which fails for descriptors >= 1024 (many kept-alive
connections). An error of the check itself is never taken for a hang-up.
"""

from __future__ import annotations

import errno
import select
import socket
from typing import Callable, Mapping

INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"
_GONE = select.POLLHUP | select.POLLERR
_READABLE = select.POLLIN | select.POLLPRI | getattr(select, "POLLRDHUP", 0)
_RESET = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT)


def _events(fd: int) -> int:
    poller = select.poll()
    poller.register(fd, _READABLE)
    found = poller.poll(0)
    return found[0][1] if found else 0


def peer_state(sock: socket.socket) -> str:
    """"closed" (our side closed, or the peer reset), "eof" (the peer sent its FIN), or
    "open" (quiet, talking, or the check itself failed)."""
    try:
        fd = sock.fileno()
    except OSError:
        return "closed"
    if fd < 0:
        return "closed"
    try:
        events = _events(fd)
    except (OSError, ValueError):
        return "open"
    if events & select.POLLNVAL:
        return "open"
    if not events & (_READABLE | _GONE):
        return "open"
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return "closed" if events & _GONE else "open"
    except OSError as exc:
        return "closed" if exc.errno in _RESET else "open"
    if data:
        return "open"
    return "closed" if events & _GONE else "eof"


class ClientWatch:
    """`client_gone()` for one request: True once the peer closed or reset the connection."""

    def __init__(self, sock: socket.socket, probe: bool = True):
        self.sock = sock
        self.probe = probe  # only HTTP/1.1 clients may be sent a 1xx
        self.probed = False

    def __call__(self) -> bool:
        state = peer_state(self.sock)
        if state != "eof":
            return state == "closed"
        if not self.probe:
            return True
        if self.probed:
            return False  # still no reset after the interim answer: it only half-closed
        self.probed = True
        try:
            self.sock.send(INTERIM, socket.MSG_DONTWAIT)
        except OSError as exc:
            return exc.errno in _RESET
        return False


def hung_up(sock: socket.socket) -> bool:
    """True once the peer has reset the connection, or closed it (a FIN) for a request
    that cannot be probed."""
    return ClientWatch(sock, probe=False)()


def watcher(environ: Mapping) -> Callable[[], bool] | None:
    """A cheap `client_gone()` check for this request, or None outside gunicorn."""
    sock = environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket):
        return None
    return ClientWatch(sock, probe=environ.get("SERVER_PROTOCOL") == "HTTP/1.1")
