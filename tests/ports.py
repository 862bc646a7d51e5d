"""TCP ports for the servers the tests start, safe with several test processes at once.

Binding port 0 and letting go (the old way) hands out a port from the kernel's ephemeral range,
the same range every outgoing connection takes its local port from: while one pytest-xdist
worker's clients hammer a server, the port another worker was handed can be taken by a client
socket before its server (seconds later, after importing JAX) binds it: "Address already in
use". So ports come from a range below the ephemeral one, and each is reserved by an advisory
lock on a file named after it, held until this process ends: another worker, or another test
session on the same machine, skips a reserved port. A port is handed out only if it also binds
right now (nothing else is listening there).
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

# Below Linux's default ephemeral range (32768-60999) and above the usual services.
FIRST, LAST = 20000, 32000
LOCKS = Path(tempfile.gettempdir()) / "tei-jax-test-ports"
_HELD: dict[int, int] = {}  # port -> open lock file descriptor (closing it frees the port)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _binds(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def reserve_port() -> int:
    """A port no other test process of this machine holds and nothing listens on, kept for this
    process until it exits."""
    LOCKS.mkdir(exist_ok=True)
    low, high = _ephemeral_range()
    free = [p for p in range(FIRST, LAST) if p not in _HELD]
    # (a machine whose ephemeral range covers ours: the lock and the bind check still hold)
    candidates = [p for p in free if not low <= p <= high] or free
    start = random.randrange(len(candidates))  # two processes rarely try the same ports first
    for port in candidates[start:] + candidates[:start]:
        fd = os.open(LOCKS / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if _binds(port):
            _HELD[port] = fd
            return port
        os.close(fd)
    raise RuntimeError(f"no free port in {FIRST}-{LAST}")
