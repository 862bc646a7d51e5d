"""The engine: parameters on the device and one compiled function per (task, shape).

It runs one already-planned batch at a time: pads the entries into the batch's shape, calls
the function compiled ahead of time for that shape, and hands back numpy arrays per entry. It
knows nothing of queues or HTTP; the scheduler (server) and Model (library) decide what goes
into a batch.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .batching import ShapePolicy
from .config import ModelSpec
from .models.architecture import Architecture
from .models.heads import DenseStack
from .pooling import pool
from .tokenization import Encoded

log = logging.getLogger(__name__)

EMBED, EMBED_ALL, PREDICT = "embed", "embed_all", "predict"
TASKS = (EMBED, EMBED_ALL, PREDICT)


def tasks_for(spec: ModelSpec) -> tuple[str, ...]:
    """The tasks a model can run: embeddings (+ per-token) or classification."""
    if spec.kind in ("classifier", "reranker"):
        return (PREDICT,)
    if spec.pooling == "splade":
        return (EMBED,)
    return (EMBED, EMBED_ALL)


class Engine:
    """Owns the device parameters and the compiled functions of one model."""

    def __init__(
        self,
        spec: ModelSpec,
        arch: Architecture,
        params: dict,
        policy: ShapePolicy,
        dense_params: list[dict] | None = None,
    ):
        self.spec = spec
        self.arch = arch
        self.policy = policy
        self.params = {k: v for k, v in params.items()}
        self._dense = None
        if dense_params:
            layers = tuple((d.out_features, d.bias, d.activation) for d in spec.dense)
            self._dense = DenseStack(layers)
            self.params["dense"] = {f"dense_{i}": p for i, p in enumerate(dense_params)}
        self.tasks = tasks_for(spec)
        self._compiled: dict[tuple[str, int, int], Callable] = {}
        self._lock = threading.Lock()
        self._jitted = {task: jax.jit(self._make_forward(task)) for task in self.tasks}
        self.compile_seconds = 0.0

    # The traced function ------------------------------------------------------------------
    def _make_forward(self, task: str) -> Callable:
        encoder, head, spec = self.arch.encoder, self.arch.head, self.spec
        dense = self._dense

        def forward(params, input_ids, type_ids, position_ids, segment_ids):
            hidden = encoder.apply({"params": params["encoder"]}, input_ids, type_ids, position_ids, segment_ids)
            if task == EMBED_ALL:
                return hidden.astype(jnp.float32)
            if task == PREDICT:
                pooled = pool(hidden, segment_ids, 1, self.arch.classifier_pooling)[:, 0]
                return head.apply({"params": params["head"]}, pooled)
            if spec.pooling == "splade":
                logits = head.apply({"params": params["head"]}, hidden)
                return pool(logits, segment_ids, 1, "splade")[:, 0]
            pooled = pool(hidden, segment_ids, 1, spec.pooling)[:, 0]
            if dense is not None:
                pooled = dense.apply({"params": params["dense"]}, pooled)
            return pooled

        return forward

    # Compilation --------------------------------------------------------------------------
    @property
    def compile_count(self) -> int:
        """How many (task, shape) functions have been compiled."""
        return len(self._compiled)

    def compiled_shapes(self) -> list[tuple[str, int, int]]:
        return sorted(self._compiled)

    def _executable(self, task: str, rows: int, seq: int) -> Callable:
        key = (task, rows, seq)
        fn = self._compiled.get(key)
        if fn is not None:
            return fn
        with self._lock:
            fn = self._compiled.get(key)
            if fn is None:
                start = time.perf_counter()
                ints = jax.ShapeDtypeStruct((rows, seq), jnp.int32)
                fn = self._jitted[task].lower(self.params, ints, ints, ints, ints).compile()
                self.compile_seconds += time.perf_counter() - start
                self._compiled[key] = fn
        return fn

    def warmup(self, tasks: Sequence[str] | None = None, shapes=None, progress: Callable | None = None) -> int:
        """Compile every shape of the policy for the given tasks; returns how many were new."""
        tasks = tuple(tasks or self.tasks)
        shapes = list(shapes or self.policy.shapes())
        todo = [(t, r, s) for t in tasks for r, s in shapes if (t, r, s) not in self._compiled]
        for i, (task, rows, seq) in enumerate(todo, 1):
            self._executable(task, rows, seq)
            if progress is not None:
                progress(i, len(todo), task, rows, seq)
        return len(todo)

    # Running ------------------------------------------------------------------------------
    def _arrays(self, items: Sequence[Encoded], rows: int, seq: int):
        input_ids = np.zeros((rows, seq), np.int32)
        type_ids = np.zeros((rows, seq), np.int32)
        position_ids = np.zeros((rows, seq), np.int32)
        segment_ids = np.zeros((rows, seq), np.int32)
        pad = int(self.spec.config.get("pad_token_id") or 0)
        input_ids[:] = pad if 0 <= pad < self.spec.vocab_size else 0
        offset = self.spec.position_offset
        positions = np.arange(seq, dtype=np.int32) + offset
        for row, item in enumerate(items):
            n = len(item.input_ids)
            input_ids[row, :n] = item.input_ids
            if self.arch.uses_token_types:
                type_ids[row, :n] = item.type_ids
            position_ids[row, :n] = positions[:n]
            segment_ids[row, :n] = 1
        return input_ids, type_ids, position_ids, segment_ids

    def run(self, task: str, items: Sequence[Encoded], shape: tuple[int, int] | None = None) -> list[np.ndarray]:
        """Run one batch; returns one float32 array per item (pooled vector, logits, or
        [len, hidden] token states for embed_all)."""
        if task not in self.tasks:
            raise ValueError(f"task {task!r} is not available for this model ({', '.join(self.tasks)})")
        if shape is None:
            seq = self.policy.seq_bucket(max(len(i) for i in items))
            shape = (self.policy.row_bucket(len(items), seq), seq)
        rows, seq = shape
        if len(items) > rows or max(len(i) for i in items) > seq:
            raise ValueError(f"{len(items)} items do not fit the shape {shape}")
        fn = self._executable(task, rows, seq)
        out = np.asarray(fn(self.params, *self._arrays(items, rows, seq)))
        if task == EMBED_ALL:
            return [out[i, : len(item)] for i, item in enumerate(items)]
        return [out[i] for i in range(len(items))]

    def run_all(self, task: str, items: Sequence[Encoded]) -> list[np.ndarray]:
        """Plan batches for any number of items and run them in order (the library path)."""
        results: list[np.ndarray | None] = [None] * len(items)
        for indices, shape in self.policy.plan([len(i) for i in items]):
            outputs = self.run(task, [items[i] for i in indices], shape)
            for index, output in zip(indices, outputs):
                results[index] = output
        return results  # type: ignore[return-value]
