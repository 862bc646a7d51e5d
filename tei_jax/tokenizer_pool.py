"""Tokenization threads that calls share by taking turns.

A plain thread pool runs each call's tokenization as one task, so one client's 2 MB body of
long inputs holds a thread for seconds and every short request queued behind it waits. Here a
call hands in its work as pieces (a few inputs each, in order) and the threads take pieces in
turns: a free thread serves first the calls none of whose pieces is running (oldest turn
first; a call goes to the back of that line each time one of its pieces ends), and only when
there is none, another piece of a call already running. So a short request waits for the
pieces already running, never for another call's whole batch; two big calls alternate; and a
call alone on the pool still has every thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
Piece = Callable[[], list]


class PoolClosed(RuntimeError):
    """`run` after `shutdown`."""


class _Turn(Generic[T]):
    """One call's pieces: those waiting, those done, the first failure."""

    def __init__(self, pieces: Sequence[Piece]):
        self.waiting: deque[tuple[int, Piece]] = deque(enumerate(pieces))
        self.results: list[list | None] = [None] * len(pieces)
        self.running = 0
        self.failed_at: int | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0  # tokenization time summed over the pieces that ran
        self.done = threading.Event()

    def fail(self, index: int, error: BaseException) -> None:
        """Keep the failure of the earliest piece (what running them in order would raise)."""
        if self.failed_at is None or index < self.failed_at:
            self.failed_at, self.error = index, error
        self.waiting.clear()


class TokenizerPool:
    """`workers` threads running calls' pieces in turns; `run(pieces)`, `shutdown()`."""

    def __init__(self, workers: int, name: str = "tei-jax-tokenizer"):
        self.workers = max(1, workers)
        self._name = name
        self._line: deque[_Turn] = deque()  # calls with pieces waiting and none running
        self._running: list[_Turn] = []  # calls with pieces waiting and some running
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def run(self, pieces: Sequence[Piece], gone: Callable[[], bool] | None = None,
            poll_s: float = 0.05) -> tuple[list, float] | None:
        """Run every piece on the pool and return (their results joined in order, seconds of
        tokenization summed over them). A failing piece raises its error (the earliest one's,
        as in a plain loop) once the pieces already running are done; the rest never run. With
        `gone`, polled every `poll_s`: True drops the pieces not started and returns None."""
        if not pieces:
            return [], 0.0
        turn: _Turn = _Turn(pieces)
        with self._cond:
            if self._closed:
                raise PoolClosed("the tokenizer pool is shut down")
            self._start_threads()
            self._line.append(turn)
            self._cond.notify()
        while not turn.done.wait(None if gone is None else poll_s):
            if gone():
                with self._cond:
                    turn.waiting.clear()
                    self._forget(turn)
                return None
        if turn.error is not None:
            raise turn.error
        return [item for result in turn.results for item in result], turn.seconds

    def shutdown(self) -> None:
        """Refuse new calls; the threads finish the pieces already handed in, then end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _start_threads(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _next(self) -> tuple[_Turn, int, Piece] | None:
        """The next piece to run (the caller holds the lock), or None when there is none."""
        if self._line:
            turn = self._line.popleft()
        elif self._running:
            turn = min(self._running, key=lambda t: t.running)
        else:
            return None
        index, piece = turn.waiting.popleft()
        turn.running += 1
        if turn.waiting and turn not in self._running:
            self._running.append(turn)
        elif not turn.waiting and turn in self._running:
            self._running.remove(turn)
        return turn, index, piece

    def _forget(self, turn: _Turn) -> None:
        if turn in self._line:
            self._line.remove(turn)
        if turn in self._running:
            self._running.remove(turn)

    def _work(self) -> None:
        while True:
            with self._cond:
                while (taken := self._next()) is None and not self._closed:
                    self._cond.wait()
                if taken is None:
                    return  # closed and nothing left
                if self._line or self._running:
                    self._cond.notify()  # more to do: wake another thread
            turn, index, piece = taken
            started = time.perf_counter()
            try:
                result, error = piece(), None
            except BaseException as exc:  # handed to the caller, whatever it is
                result, error = None, exc
            seconds = time.perf_counter() - started
            with self._cond:
                turn.running -= 1
                turn.seconds += seconds
                if error is not None:
                    turn.fail(index, error)
                    self._forget(turn)
                else:
                    turn.results[index] = result
                if turn.waiting and not turn.running:
                    self._running.remove(turn)
                    self._line.append(turn)  # its next piece waits behind the calls in line
                    self._cond.notify()
                if not turn.waiting and not turn.running:
                    turn.done.set()
