"""Ordered, bounded-parallel streams: a stream's messages run concurrently (each on the shared
stream pool), at most `limit` in flight, and their answers leave in request order (TEI's
GRPC_MAX_PARALLEL_STREAM_REQUESTS)."""

from __future__ import annotations

import logging
import os
import queue
import threading
from concurrent.futures import Executor, Future
from typing import Callable, Iterable, Iterator, TypeVar

log = logging.getLogger("app.grpc.streams")

ENV_VAR = "GRPC_MAX_PARALLEL_STREAM_REQUESTS"
DEFAULT_PARALLEL = 1024
_END = object()
_POLL_S = 0.1

In = TypeVar("In")
Out = TypeVar("Out")


def max_parallel() -> int:
    """GRPC_MAX_PARALLEL_STREAM_REQUESTS (default 1024; a value that is not a positive integer
    falls back to the default, as in TEI)."""
    try:
        value = int(os.environ.get(ENV_VAR, DEFAULT_PARALLEL))
    except ValueError:
        return DEFAULT_PARALLEL
    return value if value > 0 else DEFAULT_PARALLEL


def ordered_map(pool: Executor, work: Callable[[In], Out], requests: Iterable[In], limit: int) -> Iterator[Out]:
    """Yield work(r) for each r of `requests`, in order, running up to `limit` at once.

    A reader thread takes messages as they arrive (so answers flow while the client still
    sends); the first failed message raises here, after which nothing more is read or started.
    Closing the generator (the client went away) stops the reader too."""
    pending: queue.SimpleQueue = queue.SimpleQueue()
    slots = threading.Semaphore(limit)
    stop = threading.Event()

    def read() -> None:
        try:
            for message in requests:
                while not slots.acquire(timeout=_POLL_S):
                    if stop.is_set():
                        return
                if stop.is_set():
                    slots.release()
                    return
                pending.put(pool.submit(work, message))
        except BaseException as exc:  # the request stream broke (cancelled, reset)
            pending.put(exc)
        finally:
            pending.put(_END)

    reader = threading.Thread(target=read, name="tei-jax-grpc-stream-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = pending.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            try:
                yield item.result()
            finally:
                slots.release()
    finally:
        stop.set()
        _cancel_rest(pending)


def _cancel_rest(pending: queue.SimpleQueue) -> None:
    """Cancel what has not started; what runs finishes on its own (and frees its permit)."""
    while True:
        try:
            item = pending.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, Future):
            item.cancel()
