"""The seam between a model operation and whatever runs its batches.

A `Model` operation (embed, predict, rerank, ...) checks its options, builds a `Job` (the task
and how to tokenize the inputs) and hands it to its executor's `run(job, call)`, which returns
one float32 array per input, in order. Two executors exist:

- `DirectExecutor` (what `tei_jax.load()` gives): tokenizes in the calling thread, plans the
  inputs into batches and runs them through the shared `Pipeline`.
- `tei_jax.scheduler.Scheduler` (what the server hands in with `Model.with_executor`):
  tokenizes on its tokenization threads, queues each input on its own and lets one batching
  thread cut batches across concurrent calls, through the same `Pipeline`.

The optional `Call` is the side channel of one call, with no HTTP in it: the caller may set
`gone` (polled while the call waits; True withdraws its queued inputs and raises
`CallWithdrawn`), and the executor fills in sizes and timings (for TEI's x-* headers and
te_* metrics).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .pipeline import run_planned
from .tasks import Task
from .tokenization import Encoded


class CallWithdrawn(Exception):
    """The caller went away (`Call.gone()` turned True); its queued inputs were dropped."""


PIECE_CHARS = 8_192  # a piece of a job's tokenization: tens of milliseconds of one thread


@dataclasses.dataclass(frozen=True)
class Job:
    """What an executor runs: tokenize with `encode()` (it raises TEI's input errors), then
    compute `task` for every input. `pieces`, when given, is the same tokenization cut in
    order into parts (each returns its inputs' entries), so an executor can let concurrent
    calls take turns on its tokenizer threads; `steps()` is them, or `encode` whole."""

    task: Task
    encode: Callable[[], list[Encoded]]
    pieces: tuple[Callable[[], list[Encoded]], ...] = ()

    @classmethod
    def of_inputs(cls, task: Task, inputs: Sequence[Any], encode_one: Callable[[Any], Encoded],
                  encode_many: Callable[[list], list[Encoded]] | None = None) -> "Job":
        """A job tokenizing `inputs` with `encode_one` (or `encode_many`, the same over a list
        at once), in pieces of about PIECE_CHARS characters (one input at least: an input is
        never split)."""
        inputs = list(inputs)
        many = encode_many or (lambda part: [encode_one(item) for item in part])

        def encode() -> list[Encoded]:
            return many(inputs)

        def piece(part: list) -> Callable[[], list[Encoded]]:
            return lambda: many(part)

        pieces, part, chars = [], [], 0
        for item in inputs:
            part.append(item)
            chars += _chars(item)
            if chars >= PIECE_CHARS:
                pieces.append(piece(part))
                part, chars = [], 0
        if part:
            pieces.append(piece(part))
        return cls(task, encode, tuple(pieces))

    def steps(self) -> tuple[Callable[[], list[Encoded]], ...]:
        return self.pieces or (self.encode,)


def _chars(item: Any) -> int:
    """About what tokenizing `item` costs: the characters of a text or of a pair's texts, else
    the length of a token-id list."""
    if isinstance(item, str):
        return len(item)
    if isinstance(item, (list, tuple)) and any(isinstance(part, str) for part in item):
        return sum(len(part) for part in item if isinstance(part, str))
    try:
        return len(item)
    except TypeError:
        return 1


@dataclasses.dataclass
class Call:
    """One model call's side channel between its caller and the executor."""

    gone: Callable[[], bool] | None = None  # set by the caller: is it still waiting?
    chars: int = 0  # the rest is filled in by the executor
    tokens: int = 0
    input_lengths: list[int] = dataclasses.field(default_factory=list)
    tokenization: float = 0.0  # seconds, mean per input
    queue: float = 0.0  # seconds, mean per input (enqueue -> result, minus inference)
    inference: float = 0.0  # seconds, mean per input (device time of its batch)

    @property
    def ran(self) -> bool:
        """True once its inputs were tokenized and handed to the device."""
        return bool(self.input_lengths)

    def record_tokenized(self, items: list[Encoded], seconds: float) -> None:
        self.tokenization = seconds / max(1, len(items))
        self.chars += sum(item.chars for item in items)
        self.tokens += sum(len(item) for item in items)
        self.input_lengths.extend(len(item) for item in items)


class Executor(Protocol):
    """Runs a `Job`; returns one output per input, in order."""

    def run(self, job: Job, call: Call | None = None) -> list[np.ndarray]: ...


def encode_timed(job: Job, call: Call | None) -> list[Encoded]:
    """Run the job's tokenization and record it on the call."""
    started = time.perf_counter()
    items = job.encode()
    if call is not None:
        call.record_tokenized(items, time.perf_counter() - started)
    return items


class DirectExecutor:
    """In-process execution for a notebook or script: one call's inputs, planned and run
    right here (several threads may call it; the engine compiles each shape once)."""

    def __init__(self, engine):
        self.engine = engine

    def run(self, job: Job, call: Call | None = None) -> list[np.ndarray]:
        items = encode_timed(job, call)
        outputs, device_time = run_planned(self.engine, job.task, items)
        if call is not None and items:
            call.inference = device_time
        return outputs
