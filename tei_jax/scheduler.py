"""The batching scheduler: the server's executor, a thread-safe queue of single items in
front of one `Engine`.

`run(job, call)` (the `Executor` seam of tei_jax/executor.py) tokenizes a call's inputs on the
tokenization threads, in pieces, taking turns with the other calls (tei_jax/tokenizer_pool.py:
a short request never waits for another call's whole batch to be tokenized), queues each input on its own (`submit`, one
`concurrent.futures.Future` per item) and waits for them, withdrawing them if the caller
goes away (`Call.gone`). A single batching thread runs every batch. It
cuts batches by the tokens the device will actually compute (rows x width, padding included)
and by `max_batch_requests`, packing items into the policy's compiled shapes with the same
`ShapePolicy.pack` as the offline planner, and runs them through the same `Pipeline` as the
direct executor (batch N+1 is dispatched before batch N's result is read back). Warmup runs on
its own thread beside it: the batching thread serves as soon as every batch has a built
shape that holds it, and the engine runs a batch on such a shape until its own is built.

Why not TEI's FIFO: TEI stops at the first item that does not fit, so one long input holds every
short one behind it. Here the queue is split by call and (task, width bucket)
(tei_jax/fair_queue.py): calls take turns leading a batch (a call with nothing in flight first,
then round-robin), each batch starts from the leader's oldest bucket, takes the leader's items
of that bucket and narrower ones, then other calls' items of the same buckets, and lets the
policy pack them at the width (that bucket's or a few steps wider) that wastes the least. So a
short request behind one huge call rides in the next batch instead of after all of the huge
call's, a long item never blocks short ones of another bucket, and nothing starves. The
leader's items are packed first; other calls' items fill the room it leaves (a batch that
would push out one of the leader's items for them is not taken). Candidates are picked under
the queue lock; packing them runs outside it, so `submit` never waits on planning.

This is a library piece: no web framework here. Metrics are reported through callbacks.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import Callable, Sequence

import numpy as np

from .batching import BatchShape, PackedBatch
from .engine import Engine
from .errors import BackendError, TEIError, UnhealthyError, ValidationError
from .executor import Call, CallWithdrawn, Job, encode_timed
from .fair_queue import Candidates, Entry, FairQueue
from .pipeline import Finished, Pipeline, Planned
from .tasks import Task
from .tokenization import Encoded
from .tokenizer_pool import PoolClosed, TokenizerPool

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiting call checks that its caller is still there


@dataclasses.dataclass(frozen=True)
class Result:
    """One item's output and its timings (seconds)."""

    output: np.ndarray
    queue_time: float  # enqueue -> result, minus inference_time (TEI's definition)
    inference_time: float  # the device time of the batch that carried the item


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """What one dispatched batch looked like, for metrics."""

    task: str
    size: int  # items
    shape: BatchShape
    real_tokens: int
    queue_size: int  # items still waiting after this batch was taken
    build_time: float = 0.0  # seconds spent choosing the batch and dispatching it

    @property
    def computed_tokens(self) -> int:
        return self.shape.tokens


class Scheduler:
    """Queue + batching thread for one engine. `start()`, `submit()`, `stop()`."""

    def __init__(
        self,
        engine: Engine,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
        on_done: Callable[[str, int, float, bool], None] | None = None,
        tokenization_workers: int | None = None,
    ):
        """`on_batch(stats)` runs when a batch is dispatched, `on_drop(n)` when queued items of
        clients that went away are dropped, `on_done(task, size, seconds, ok)` when a batch's
        result is back (or failed): the hooks a server hangs its metrics on.
        `tokenization_workers` threads tokenize the calls of `run` (so however many threads
        call it, that many tokenize at once, calls taking turns piece by piece); None
        tokenizes in the calling thread."""
        self.engine = engine
        self._tokenizers = TokenizerPool(tokenization_workers) if tokenization_workers else None
        self.policy = engine.policy
        self._on_batch = on_batch
        self._on_drop = on_drop
        self._on_done = on_done
        self._queue = FairQueue(self.policy.token_budget, self.policy.max_batch_requests, self._dropped)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stop_warmup = threading.Event()  # set by stop(): shapes not started are not built
        self._dead: BaseException | None = None
        self.ready = threading.Event()  # serving: every batch has a built shape that holds it
        self.warmed = threading.Event()  # every shape built: from here on nothing compiles
        self.warmup_error: BaseException | None = None  # a shape that failed after `ready`
        self.healthy = True  # False after a failed batch, True again after a good one
        self.real_tokens = 0
        self.computed_tokens = 0
        self.batches = 0
        self._compiles_at_ready: int | None = None
        self._compiles_reported = 0

    @classmethod
    def for_model(cls, model, **options) -> "Scheduler":
        """A scheduler over a loaded `Model`'s engine (hand it back with `model.with_executor`)."""
        return cls(model.engine, **options)

    # Lifecycle --------------------------------------------------------------------------------
    def start(self, warmup: bool = True, progress: Callable | None = None,
              before_warmup: Callable[[], None] | None = None) -> None:
        """Start the batching thread. With `warmup`, a warmup thread builds (or loads) every
        shape of the policy for the engine's tasks, covering shapes first (Engine.warmup).
        Items submitted meanwhile wait in the queue until every batch has a covering shape;
        then `ready` is set and the batching thread serves while the rest are built. When
        the last one is, `warmed` is set and the recompilation witness is armed."""
        if self._thread is not None:
            raise RuntimeError("scheduler already started")
        self._thread = threading.Thread(target=self._main, args=(warmup, progress, before_warmup),
                                        name="tei-jax-batcher", daemon=True)
        self._thread.start()

    def stop(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Refuse new items and drop the warmup shapes not started yet (a process stopped
        while warming up exits without compiling them); with `drain`, finish every queued and
        in-flight item first, otherwise fail the queued ones. Returns True when the thread
        has ended."""
        self._stop_warmup.set()
        with self._cond:
            self._stopping = True
            if not drain:
                self._fail_queued(UnhealthyError("the server is shutting down"))
            self._cond.notify_all()
        if self._tokenizers is not None:
            self._tokenizers.shutdown()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """What stopped the batching thread (warmup included), or None while it runs."""
        return self._dead

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    @property
    def padding_efficiency(self) -> float:
        """Real tokens / computed tokens over every batch run so far."""
        return self.real_tokens / self.computed_tokens if self.computed_tokens else 1.0

    # The executor seam ------------------------------------------------------------------------
    def run(self, job: Job, call: Call | None = None) -> list[np.ndarray]:
        """Tokenize the job's inputs, queue each on its own and wait for all; returns one output
        per input, in order. The first failure fails the call and withdraws its other items;
        so does the caller going away (`call.gone()` True: `CallWithdrawn`)."""
        gone = call.gone if call is not None else None
        items = self._tokenize(job, call, gone)
        futures = self.submit(job.task, items)
        try:
            while True:
                done, pending = wait(futures, timeout=None if gone is None else POLL_S,
                                     return_when=FIRST_EXCEPTION)
                failed = next((f for f in done if f.exception() is not None), None)
                if failed is not None:
                    raise as_tei_error(failed.exception())
                if not pending:
                    break
                if gone is not None and gone():
                    raise CallWithdrawn()
            results: list[Result] = [f.result() for f in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        if call is not None and results:
            call.queue = sum(r.queue_time for r in results) / len(results)
            call.inference = sum(r.inference_time for r in results) / len(results)
        return [r.output for r in results]

    def _tokenize(self, job: Job, call: Call | None, gone: Callable[[], bool] | None) -> list[Encoded]:
        """The job's entries, from the tokenizer pool (or this thread without one)."""
        if self._tokenizers is None:
            return encode_timed(job, call)
        try:
            tokenized = self._tokenizers.run(job.steps(), gone, POLL_S)
        except PoolClosed:  # stop() was called
            raise UnhealthyError("the server is shutting down") from None
        if tokenized is None:
            raise CallWithdrawn()
        items, seconds = tokenized
        if call is not None:
            call.record_tokenized(items, seconds)
        return items

    # Submitting -------------------------------------------------------------------------------
    def submit(self, task: str, items: Sequence[Encoded]) -> list[Future]:
        """Queue each item on its own; returns one future per item, in order. A future's
        result is a `Result`; an item longer than the widest shape fails its own future.
        The items of one `submit` are one call: they take turns with other calls' items."""
        if task not in self.engine.tasks:
            raise BackendError(f"task {task!r} is not available for this model")
        task = Task(task)
        now = time.perf_counter()
        futures = []
        with self._cond:
            if self._dead is not None:
                raise UnhealthyError(f"the batching thread failed: {self._dead}")
            if self._stopping:
                raise UnhealthyError("the server is shutting down")
            caller = self._queue.caller()
            for item in items:
                future: Future = Future()
                futures.append(future)
                try:
                    width = self.policy.width_for(len(item))
                except ValueError as exc:
                    future.set_exception(exc)
                    continue
                self._queue.add(Entry(task, item, width, future, now, caller))
            self._cond.notify()
        return futures

    # The batching thread ----------------------------------------------------------------------
    def _main(self, warmup: bool, progress, before_warmup) -> None:
        try:
            if before_warmup is not None:
                before_warmup()
            if warmup:
                covered = threading.Event()
                warming = threading.Thread(target=self._warm, args=(progress, covered), name="tei-jax-warmup",
                                           daemon=True)
                warming.start()
                covered.wait()
                if self.warmup_error is not None and not self.warmed.is_set():
                    raise self.warmup_error
            else:
                self.warmed.set()
            self.ready.set()
            self._serve()
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            log.exception("the batching thread stopped on an unexpected error")
            with self._cond:
                self._dead = exc
                self._fail_queued(UnhealthyError(f"the batching thread failed: {exc}"))
            self.healthy = False

    def _warm(self, progress, covered: threading.Event) -> None:
        """The warmup thread: build every shape, covering ones first (then `covered` is set);
        a failure before that stops the scheduler, one after it leaves the covering shapes
        serving and is logged."""
        try:
            self.engine.warmup(progress=progress, covered=covered.set, stop=self._stop_warmup)
            if self._stop_warmup.is_set():  # stopped part-way: `warmed` stays unset
                log.info("warmup stopped by shutdown: %d of %d shapes built", self.engine.compile_count,
                         len(self.engine.tasks) * len(self.policy.shapes()))
                return
            self._compiles_at_ready = self._compiles_reported = self.engine.compile_count
            self.warmed.set()
        except BaseException as exc:
            self.warmup_error = exc
            if covered.is_set():
                log.exception("warmup stopped after every batch had a shape; serving on the shapes built")
        finally:
            covered.set()

    def _serve(self) -> None:
        pipeline = Pipeline(self.engine, on_dispatch=self._dispatched)
        while True:
            with self._cond:
                while not self._queue and not pipeline.busy and not self._stopping:
                    self._cond.wait()
                if not self._queue and not pipeline.busy:
                    return  # stopping, and everything accepted has been answered
                started = time.perf_counter()
                candidates = self._queue.candidates() if self._queue else None
            planned = self._take(candidates, started) if candidates and candidates.lead else None  # packs unlocked
            for finished in (pipeline.push(planned) if planned is not None else pipeline.drain()):
                self._finish(finished)

    def _take(self, candidates: Candidates, started: float) -> Planned | None:
        """Pack the candidates (without the lock; the leader's oldest item always goes in),
        then take the packed ones off the queue; the rest stay queued in their order. None if
        the queue was failed meanwhile (stop without drain)."""
        packed, entries = self._pack(candidates)
        with self._cond:
            if not all(entry.queued for entry in entries):
                return None
            self._queue.take(entries)
            for entry in entries:
                # Placed: from here on the client can no longer cancel it. If it was cancelled
                # in the meantime, its slot is still computed but nobody is answered.
                entry.live = entry.future.set_running_or_notify_cancel()
                if not entry.live:
                    self._dropped(1)
        batch = PackedBatch(list(range(len(entries))), packed.placements, packed.shape, packed.real_tokens)
        return Planned(entries[0].task, [e.item for e in entries], batch, tag=(entries, started))

    def _pack(self, candidates: Candidates) -> tuple[PackedBatch, list[Entry]]:
        """The leader's items packed alone; when they all fit and other calls wait, the batch
        with other calls' items too, if it still holds every one of the leader's (first with
        all of them, then with those no longer than the leader's shortest, which cannot
        outrank its items in the planner's longest-first order). Packed indices map into the
        returned entries' list order."""
        lead = candidates.lead
        lengths = [len(entry.item) for entry in lead]
        alone = self.policy.pack(lengths, first=0)
        chosen = [lead[i] for i in alone.indices]
        if not candidates.others or len(alone.indices) < len(lead):
            return alone, chosen
        shortest = min(lengths)
        for extra in (candidates.others, [e for e in candidates.others if len(e.item) <= shortest]):
            if not extra:
                continue
            pool = lead + extra
            filled = self.policy.pack([len(entry.item) for entry in pool], first=0)
            if sum(1 for i in filled.indices if i < len(lead)) == len(lead):
                return filled, [pool[i] for i in filled.indices]
        return alone, chosen

    def _dropped(self, count: int) -> None:
        if self._on_drop is not None:
            self._on_drop(count)

    def _dispatched(self, planned: Planned) -> None:
        """A batch is on the device: counters, the recompilation witness, metrics."""
        entries, started = planned.tag
        batch = planned.batch
        self._check_compiles(planned.task, batch.shape)
        self.batches += 1
        self.real_tokens += batch.real_tokens
        self.computed_tokens += batch.shape.tokens
        if self._on_batch is not None:
            self._on_batch(BatchStats(planned.task, len(entries), batch.shape, batch.real_tokens, len(self._queue),
                                      time.perf_counter() - started))

    def _finish(self, finished: Finished) -> None:
        """Answer a batch's futures with its outputs (or its error)."""
        entries, _ = finished.planned.tag
        task = finished.planned.task
        with self._cond:
            self._queue.finished(entries)
        if finished.error is not None:
            self._fail(entries, finished.error)
            self._done(task, len(entries), finished.device_time, False)
            return
        done = time.perf_counter()
        inference = finished.device_time
        self.healthy = True
        self._done(task, len(entries), inference, True)
        for entry, output in zip(entries, finished.outputs):
            if entry.live:
                entry.future.set_result(Result(output, max(0.0, done - entry.enqueued - inference), inference))

    def _done(self, task: str, size: int, seconds: float, ok: bool) -> None:
        if self._on_done is not None:
            try:
                self._on_done(task, size, seconds, ok)
            except Exception:
                log.exception("batch completion callback failed")

    def _fail(self, entries: list[Entry], exc: Exception) -> None:
        log.error("batch of %d items failed: %s", len(entries), exc)
        self.healthy = False
        error = exc if isinstance(exc, BackendError) else BackendError(str(exc))
        for entry in entries:
            if entry.live:
                entry.future.set_exception(error)

    def _fail_queued(self, error: Exception) -> None:
        """Fail every queued item (the caller holds the lock)."""
        for entry in self._queue.clear():
            if entry.future.set_running_or_notify_cancel():
                entry.future.set_exception(error)

    def _check_compiles(self, task: str, shape: BatchShape) -> None:
        """The witness of 'no compilation after warmup completes': loud if the count grew."""
        if self._compiles_at_ready is None:
            return
        count = self.engine.compile_count
        if count > self._compiles_reported:
            log.error("RECOMPILATION WHILE SERVING: %s %s was not compiled during warmup "
                      "(compile count %d -> %d); every request behind it waited",
                      task, tuple(shape), self._compiles_reported, count)
            self._compiles_reported = count

    @property
    def compiles_since_ready(self) -> int:
        """Compilations after warmup completed (0 unless a shape escaped the warmup set)."""
        if self._compiles_at_ready is None:
            return 0
        return self.engine.compile_count - self._compiles_at_ready


def as_tei_error(exc: BaseException) -> BaseException:
    """An item's failure as the TEI error its caller sees."""
    if isinstance(exc, TEIError):
        return exc
    if isinstance(exc, ValueError):  # an item longer than the widest compiled shape
        return ValidationError(str(exc))
    return BackendError(str(exc))
