"""Planned batches -> device work -> per-item results: the one path every executor uses.

A `Pipeline` keeps one batch in flight ahead: `push` dispatches a batch (JAX dispatch is
asynchronous) and only then waits for the batch before it, so building the next batch's host
arrays overlaps the device's work. The direct executor pushes the batches of one call's plan;
the scheduler pushes the batches it cuts from its queue. Both get back `Finished` batches with
their outputs (or error) and device time, and hand the results to whoever waits for them.

This is the place that turns a plan into device work (for many devices, where a batch is
laid out over a mesh, it is the one place to change).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .batching import PackedBatch
from .tasks import Task
from .tokenization import Encoded

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class Planned:
    """One batch to run: its items in placement order, and the caller's `tag` for them."""

    task: Task
    items: list[Encoded]
    batch: PackedBatch
    tag: Any = None


@dataclasses.dataclass(eq=False)
class Finished:
    """A batch that ran (outputs, one float32 array per item) or failed (error)."""

    planned: Planned
    outputs: list[np.ndarray] | None
    error: Exception | None
    device_time: float  # seconds from the device starting it to its result being read back


class Pipeline:
    """Dispatch batch N+1 before reading batch N back; one instance per thread of work."""

    def __init__(self, engine: "Engine", on_dispatch: Callable[[Planned], None] | None = None):
        """`on_dispatch(planned)` runs once a batch is on the device (metrics, witnesses)."""
        self.engine = engine
        self._on_dispatch = on_dispatch
        self._flight: tuple[Planned, Any, float] | None = None
        self._last_done = 0.0

    @property
    def busy(self) -> bool:
        """True while a batch is in flight."""
        return self._flight is not None

    def push(self, planned: Planned) -> list[Finished]:
        """Dispatch `planned`, then finish the batch before it; returns what finished (the
        older batch, and `planned` itself if its dispatch failed)."""
        finished = []
        dispatched = time.perf_counter()
        try:
            output = self.engine.dispatch(planned.task, planned.items, planned.batch)
        except Exception as exc:
            finished.append(self._failed(planned, exc))
            output = None
        else:
            if self._on_dispatch is not None:
                try:
                    self._on_dispatch(planned)
                except Exception:
                    log.exception("batch dispatch callback failed")
        previous, self._flight = self._flight, None
        if output is not None:
            self._flight = (planned, output, dispatched)
        if previous is not None:
            finished.insert(0, self._collect(*previous))
        return finished

    def drain(self) -> list[Finished]:
        """Finish the batch in flight, if any."""
        previous, self._flight = self._flight, None
        return [self._collect(*previous)] if previous is not None else []

    def _collect(self, planned: Planned, output: Any, dispatched: float) -> Finished:
        try:
            outputs = self.engine.collect(planned.task, planned.items, planned.batch, output)
        except Exception as exc:
            return self._failed(planned, exc, dispatched)
        done = time.perf_counter()
        # The device only starts this batch once the previous one is finished.
        device_time = done - max(dispatched, self._last_done)
        self._last_done = done
        return Finished(planned, outputs, None, device_time)

    def _failed(self, planned: Planned, exc: Exception, dispatched: float | None = None) -> Finished:
        now = time.perf_counter()
        self._last_done = now
        return Finished(planned, None, exc, 0.0 if dispatched is None else now - dispatched)


def run_planned(engine: "Engine", task: Task, items: Sequence[Encoded]) -> tuple[list[np.ndarray], float]:
    """Plan any number of items into batches and run them through one `Pipeline`; returns
    one output per item (in order) and the device seconds. The first failure is raised."""
    results: list[np.ndarray | None] = [None] * len(items)
    device_time = 0.0
    pipeline = Pipeline(engine)

    def store(finished: list[Finished]) -> None:
        nonlocal device_time
        for done in finished:
            if done.error is not None:
                raise done.error
            device_time += done.device_time
            for index, value in zip(done.planned.tag, done.outputs):
                results[index] = value

    try:
        for batch in engine.policy.plan([len(item) for item in items]):
            members = [items[i] for i in batch.indices]
            store(pipeline.push(Planned(task, members, batch, tag=batch.indices)))
        store(pipeline.drain())
    finally:
        pipeline.drain()
    return results, device_time  # type: ignore[return-value]
