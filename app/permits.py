"""TEI's `--max-concurrent-requests`: non-blocking permits, one per input item.

A request takes all its permits or none, so a batch larger than what is free is refused at
once (429), as in TEI, without holding a partial share while it waits. This is admission
control of the server, so it lives here, not in the engine.
"""

from __future__ import annotations

import threading

from tei_jax.errors import OverloadedError


class Permits:
    """`acquire(n)` as a context manager (OverloadedError when fewer than n are free), or
    `wait_acquire(n)` that waits for them."""

    def __init__(self, total: int):
        if total < 1:
            raise ValueError("max concurrent requests must be at least 1")
        self.total = total
        self._free = total
        self._lock = threading.Condition()

    @property
    def available(self) -> int:
        return self._free

    def try_acquire(self, count: int = 1) -> bool:
        with self._lock:
            if count > self._free:
                return False
            self._free -= count
            return True

    def acquire(self, count: int = 1) -> "Held":
        """Take `count` permits or raise OverloadedError; use as a context manager."""
        if not self.try_acquire(count):
            raise OverloadedError("Model is overloaded")
        return Held(self, count)

    def wait_acquire(self, count: int = 1, timeout: float | None = None) -> "Held":
        """Take `count` permits, waiting until they are free (TEI's streams wait for a permit
        per message instead of refusing it); OverloadedError after `timeout` seconds."""
        if count > self.total:
            raise OverloadedError("Model is overloaded")
        with self._lock:
            if not self._lock.wait_for(lambda: self._free >= count, timeout):
                raise OverloadedError("Model is overloaded")
            self._free -= count
        return Held(self, count)

    def release(self, count: int = 1) -> None:
        with self._lock:
            self._free = min(self.total, self._free + count)
            self._lock.notify_all()


class Held:
    """Permits taken by one request; released on leaving the `with` block."""

    def __init__(self, permits: Permits, count: int):
        self._permits, self._count = permits, count

    def __enter__(self) -> "Held":
        return self

    def __exit__(self, *exc) -> None:
        self._permits.release(self._count)
