"""Notice a client that hung up while its items wait in the queue, so they can be dropped.

gunicorn hands the WSGI app its connection socket (`environ["gunicorn.socket"]`). While a
request waits for its results nothing more is expected from the client, so a socket that
turns readable and yields zero bytes on a peek means the peer closed it. Bytes waiting (a
pipelined next request) mean it is still there; we never consume them.
"""

from __future__ import annotations

import select
import socket
from typing import Callable, Mapping


def hung_up(sock: socket.socket) -> bool:
    """True once the peer has closed (or reset) the connection."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):  # reset, or already closed on our side
        return True


def watcher(environ: Mapping) -> Callable[[], bool] | None:
    """A cheap `client_gone()` check for this request, or None outside gunicorn."""
    sock = environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket):
        return None
    return lambda: hung_up(sock)
