"""TCP ports for the servers the tests start, safe with several test processes at once.

Binding port 0 and letting go (the old way) hands out a port from the kernel's ephemeral range,
the same range every outgoing connection takes its local port from: while one pytest-xdist
worker's clients hammer a server, the port another worker was handed can be taken by a client
socket before its server (seconds later, after importing JAX) binds it: "Address already in
use". So ports come from a range below the ephemeral one, and each is reserved by an advisory
lock on a file named after it, held until this process ends: another worker, or another test
session on the same machine, skips a reserved port. A port is handed out only if it also binds
right now (nothing else is listening there). Lock files are removed by their holder when it is
done with them (tests/file_locks.py says why that is safe), and ones left by processes that died
are swept once per process, so they no longer pile up.
"""

from __future__ import annotations

import atexit
import os
import random
import socket
import tempfile
from pathlib import Path

import file_locks

# Below Linux's default ephemeral range (32768-60999) and above the usual services.
FIRST, LAST = 20000, 32000
LOCKS = Path(tempfile.gettempdir()) / "tei-jax-test-ports"
_HELD: dict[int, int] = {}  # port -> open lock file descriptor (closing it frees the port)
_swept = False


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
    global _swept
    LOCKS.mkdir(exist_ok=True)
    if not _swept:
        _swept = True
        file_locks.remove_unheld(LOCKS)
        atexit.register(_release_all)
    low, high = _ephemeral_range()
    free = [p for p in range(FIRST, LAST) if p not in _HELD]
    # (a machine whose ephemeral range covers ours: the lock and the bind check still hold)
    candidates = [p for p in free if not low <= p <= high] or free
    start = random.randrange(len(candidates))  # two processes rarely try the same ports first
    for port in candidates[start:] + candidates[:start]:
        fd = file_locks.acquire(_lock_path(port), blocking=False)
        if fd is None:
            continue
        if _binds(port):
            _HELD[port] = fd
            return port
        file_locks.release(fd, _lock_path(port))
    raise RuntimeError(f"no free port in {FIRST}-{LAST}")


def _lock_path(port: int) -> Path:
    return LOCKS / f"{port}.lock"


def _release_all() -> None:
    """At exit: remove this process's lock files (the locks would go with the process anyway)."""
    for port, fd in list(_HELD.items()):
        file_locks.release(fd, _lock_path(port))
    _HELD.clear()
