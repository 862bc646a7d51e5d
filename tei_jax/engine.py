"""The engine: parameters on the device and one compiled function per (task, shape).

It runs one already-planned batch at a time: `dispatch` lays the entries out in the batch's
shape and starts the function compiled (ahead of time, by `warmup`, or on first use) for that
shape; `collect` reads the result back as numpy arrays per entry. It knows nothing of queues
or HTTP: the executors (tei_jax/executor.py, tei_jax/scheduler.py) decide what goes into a
batch and drive dispatch/collect through the one `Pipeline` (tei_jax/pipeline.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .batching import BatchShape, PackedBatch, ShapePolicy
from .config import ModelSpec
from .executables import ExecutableStore
from .models.architecture import Architecture
from .models.heads import DenseStack
from .pipeline import run_planned
from .pooling import pool
from .sharding import Placement
from .tasks import Task, tasks_for
from .tokenization import Encoded

log = logging.getLogger(__name__)

# The tasks under their short names (kept for callers that import them from here).
EMBED, EMBED_ALL, PREDICT = Task.EMBED, Task.EMBED_ALL, Task.PREDICT
TASKS = tuple(Task)


class Engine:
    """Owns the device parameters and the compiled functions of one model."""

    def __init__(
        self,
        spec: ModelSpec,
        arch: Architecture,
        params: dict,
        policy: ShapePolicy,
        dense_params: list[dict] | None = None,
        placement: Placement | None = None,
    ):
        self.spec = spec
        self.arch = arch
        self.policy = policy
        # Where parameters and batches live (tei_jax/sharding.py); one device by default.
        self.placement = placement or Placement.build(1, 1, jax.devices()[:1])
        if policy.row_multiple % self.placement.data_size:
            raise ValueError(f"ShapePolicy.row_multiple {policy.row_multiple} is not a multiple of the "
                             f"data-parallel size {self.placement.data_size}")
        self.params = {k: v for k, v in params.items()}
        self._dense = None
        if dense_params:
            layers = tuple((d.out_features, d.bias, d.activation) for d in spec.dense)
            self._dense = DenseStack(layers)
            self.params["dense"] = {f"dense_{i}": p for i, p in enumerate(dense_params)}
        self.param_shardings = self.placement.param_shardings(arch.param_axes(), self.params)
        self.tasks = tasks_for(spec.kind, spec.pooling)
        self._compiled: dict[tuple[str, BatchShape], Callable] = {}
        self._compiling: dict[tuple[str, BatchShape], Future] = {}
        self._lock = threading.Lock()
        rows = self.placement.rows
        self._jitted = {task: jax.jit(self._make_forward(task), static_argnums=5, out_shardings=rows)
                        for task in self.tasks}
        self.compile_seconds = 0.0
        # Compiled executables on disk (tei_jax/executables.py); load() attaches a real one.
        self.store = ExecutableStore(None)
        self._warming = 0  # > 0 while warmup runs: batches may borrow a wider compiled shape

    # The traced function ------------------------------------------------------------------
    def _make_forward(self, task: str) -> Callable:
        encoder, head, spec = self.arch.encoder, self.arch.head, self.spec
        dense = self._dense

        def forward(params, input_ids, type_ids, position_ids, segment_ids, slots):
            hidden = encoder.apply({"params": params["encoder"]}, input_ids, type_ids, position_ids, segment_ids)
            if task == EMBED_ALL:
                return hidden.astype(jnp.float32)
            if task == PREDICT:
                pooled = pool(hidden, segment_ids, slots, self.arch.classifier_pooling)
                return head.apply({"params": params["head"]}, pooled)
            if spec.pooling == "splade":
                logits = head.apply({"params": params["head"]}, hidden)
                return pool(logits, segment_ids, slots, "splade")
            pooled = pool(hidden, segment_ids, slots, spec.pooling)
            if dense is not None:
                pooled = dense.apply({"params": params["dense"]}, pooled)
            if self.arch.pooled_transform is not None:
                pooled = self.arch.pooled_transform(pooled)
            return pooled

        return forward

    def forward(self, task: Task | str) -> Callable:
        """The pure function `dispatch` runs compiled: (params, input_ids, type_ids,
        position_ids, segment_ids, slots) -> output; tei_jax.functional's `apply` calls it."""
        return self._make_forward(Task(task))

    # Compilation --------------------------------------------------------------------------
    @property
    def compile_count(self) -> int:
        """How many (task, shape) functions have been compiled."""
        return len(self._compiled)

    def _executable(self, task: str, shape: BatchShape) -> Callable:
        """The compiled function for (task, shape); compiles it once, whichever thread asks."""
        key = (task, shape)
        fn = self._compiled.get(key)
        if fn is not None:
            return fn
        with self._lock:
            if key in self._compiled:
                return self._compiled[key]
            future = self._compiling.get(key)
            owner = future is None
            if owner:
                future = self._compiling[key] = Future()
        if not owner:
            return future.result()
        try:
            start = time.perf_counter()
            fn = self.store.get(f"{Task(task).value}-{shape.rows}x{shape.width}x{shape.slots}",
                                lambda: self.lower(task, shape).compile(), lambda loaded: self._takes(loaded, shape),
                                devices=list(self.placement.mesh.devices.flat))
        except BaseException as exc:
            with self._lock:
                del self._compiling[key]
            future.set_exception(exc)
            raise
        with self._lock:
            self.compile_seconds += time.perf_counter() - start
            self._compiled[key] = fn
            del self._compiling[key]
        future.set_result(fn)
        return fn

    def lower(self, task: str, shape: BatchShape, params=None, platforms: Sequence[str] | None = None):
        """`jax.jit(forward)` lowered for (task, shape) on this placement: parameters on their
        shardings, the batch's rows split over the mesh's `data` axis, outputs likewise.
        `params` may be abstract (jax.ShapeDtypeStruct with shardings: ahead-of-time lowering
        for a device topology that is not attached, e.g. a TPU slice). `platforms` lowers for
        other platforms than the devices' own (("cuda",) on a CPU machine: StableHLO to read,
        not to compile here)."""
        params = self.params if params is None else params
        ints = jax.ShapeDtypeStruct((shape.rows, shape.width), jnp.int32, sharding=self.placement.rows)
        with jax.set_mesh(self.placement.mesh):  # the Pallas kernel's shard_map reads it
            traced = self._jitted[task].trace(params, ints, ints, ints, ints, shape.slots)
            return traced.lower(lowering_platforms=tuple(platforms) if platforms else None)

    def _takes(self, compiled, shape: BatchShape) -> bool:
        """Whether a loaded executable takes this engine's parameters and (task, shape)'s arrays."""
        ints = jax.ShapeDtypeStruct((shape.rows, shape.width), jnp.int32)
        expected = jax.tree_util.tree_flatten(((self.params, ints, ints, ints, ints), {}))
        try:
            got = jax.tree_util.tree_flatten(compiled.args_info)
        except Exception:
            return False
        if got[1] != expected[1]:
            return False
        return all(tuple(a.shape) == tuple(b.shape) and a.dtype == b.dtype for a, b in zip(got[0], expected[0]))

    def warmup_order(self, tasks: Sequence[str] | None = None,
                     shapes: Sequence[BatchShape] | None = None) -> tuple[list, int]:
        """(task, shape) pairs in the order warmup builds them, and how many of the first
        ones cover every batch: the widest shape of each row count (the batch planner never
        makes a batch it would not hold); then the one-row shapes, narrowest first (a single
        query, where running wide costs the most latency); then the rest largest first (they
        take longest, so the compile pool drains evenly)."""
        tasks = tuple(tasks or self.tasks)
        shapes = list(shapes or self.policy.shapes())
        covers = covering_shapes(shapes)
        rest = sorted((s for s in shapes if s not in covers),
                      key=lambda s: (s.rows > 1, s.tokens if s.rows == 1 else -s.tokens, s.width))
        order = [(t, s) for t in tasks for s in covers] + [(t, s) for t in tasks for s in rest]
        return order, len(tasks) * len(covers)

    def warmup(self, tasks: Sequence[str] | None = None, shapes: Sequence[BatchShape] | None = None,
               progress: Callable | None = None, workers: int | None = None,
               covered: Callable[[], None] | None = None, stop: threading.Event | None = None) -> int:
        """Build (or load from the store) every shape of the policy for the given tasks,
        several at a time (XLA compiles without holding the GIL); returns how many were new.

        Covering shapes come first (`warmup_order`); `covered()` is called once they are all
        built, when every batch can run. Until warmup returns, a batch whose own shape is not
        built yet runs on the smallest built shape that holds it (same result, more padding).
        `progress(done, total, task, shape)` is called after each one. Once `stop` is set
        (a server shutting down) the shapes not started are dropped, so the process can exit
        without compiling them all; the count is then of those built."""
        order, cover_count = self.warmup_order(tasks, shapes)
        todo = [key for key in order if key not in self._compiled]
        pending_covers = {key for key in order[:cover_count] if key not in self._compiled}
        workers = workers or min(8, os.cpu_count() or 1)
        with self._lock:
            self._warming += 1
        try:
            if not pending_covers and covered is not None:
                covered()
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tei-jax-compile") as pool:
                futures = {pool.submit(self._executable, task, shape): (task, shape) for task, shape in todo}
                for done, future in enumerate(as_completed(futures), 1):
                    future.result()
                    task, shape = futures[future]
                    if progress is not None:
                        progress(done, len(todo), task, shape)
                    if pending_covers:
                        pending_covers.discard((task, shape))
                        if not pending_covers and covered is not None:
                            covered()
                    if stop is not None and stop.is_set():
                        return sum(not f.cancel() for f in futures)  # done, or running (they finish)
        finally:
            with self._lock:
                self._warming -= 1
        return len(todo)

    def _runnable(self, task: str, shape: BatchShape) -> tuple[BatchShape, Callable]:
        """The shape a batch planned for `shape` runs at, and its executable: its own when
        built; during warmup the smallest built one that holds it; else its own, built now."""
        fn = self._compiled.get((task, shape))
        if fn is not None:
            return shape, fn
        if self._warming:
            with self._lock:
                built = [(s, f) for (t, s), f in self._compiled.items() if t == task and holds(s, shape)]
            if built:
                return min(built, key=lambda pair: (self.policy.cost(pair[0]), pair[0]))
        return shape, self._executable(task, shape)

    # Running ------------------------------------------------------------------------------
    def arrays(self, items: Sequence[Encoded], batch: PackedBatch,
               shape: BatchShape | None = None) -> tuple[np.ndarray, ...]:
        """Host arrays for a batch: ids, token types, positions, segment ids [rows, width]
        (of `shape` when it runs on a larger one than it was planned for)."""
        rows, width, _ = shape or batch.shape
        input_ids = np.full((rows, width), self.pad_id, np.int32)
        type_ids = np.zeros((rows, width), np.int32)
        position_ids = np.zeros((rows, width), np.int32)
        segment_ids = np.zeros((rows, width), np.int32)
        offset = self.spec.position_offset
        for item, (row, start, slot) in zip(items, batch.placements):
            n = len(item.input_ids)
            end = start + n
            input_ids[row, start:end] = item.input_ids
            if self.arch.uses_token_types:
                type_ids[row, start:end] = item.type_ids
            position_ids[row, start:end] = np.arange(offset, offset + n, dtype=np.int32)
            segment_ids[row, start:end] = slot + 1
        return input_ids, type_ids, position_ids, segment_ids

    @property
    def pad_id(self) -> int:
        """The id padding positions hold (the model's pad token, else 0)."""
        pad = self.spec.config.get("pad_token_id")
        return pad if isinstance(pad, int) and 0 <= pad < self.spec.vocab_size else 0

    def probe(self) -> Encoded:
        """A one-token input for health checks."""
        return Encoded((self.pad_id,), (0,), 1)

    def dispatch(self, task: str, items: Sequence[Encoded], batch: PackedBatch):
        """Start a batch on the device and return without waiting (JAX dispatch is async)."""
        if task not in self.tasks:
            raise ValueError(f"task {task!r} is not available for this model ({', '.join(self.tasks)})")
        if len(items) != len(batch.placements):
            raise ValueError(f"{len(items)} items for {len(batch.placements)} placements")
        # Host arrays go in as they are: the executable splits their rows over the mesh's
        # `data` axis itself (an explicit jax.device_put first cost ~0.5-3 ms more per batch).
        shape, fn = self._runnable(task, batch.shape)
        return fn(self.params, *self.arrays(items, batch, shape))

    @staticmethod
    def collect(task: str, items: Sequence[Encoded], batch: PackedBatch, output) -> list[np.ndarray]:
        """Wait for a dispatched batch and split its output per item (float32 numpy)."""
        out = np.asarray(output)
        if task == EMBED_ALL:
            return [out[p.row, p.start : p.start + len(item)] for item, p in zip(items, batch.placements)]
        return [out[p.row, p.slot] for p in batch.placements]

    def run(self, task: str, items: Sequence[Encoded], batch: PackedBatch | None = None) -> list[np.ndarray]:
        """Run one batch (planned here if not given; it must then fit one batch); returns one
        float32 array per item: pooled vector, logits, or [len, hidden] token states."""
        if batch is None:
            if len(self.policy.plan([len(i) for i in items])) != 1:
                raise ValueError(f"{len(items)} items do not fit one batch; use run_all")
            return self.run_all(task, items)
        return self.collect(task, items, batch, self.dispatch(task, items, batch))

    def run_all(self, task: str, items: Sequence[Encoded]) -> list[np.ndarray]:
        """Plan batches for any number of items and run them through the `Pipeline` (the
        next batch is dispatched before the previous one's result is read back)."""
        return run_planned(self, Task(task), items)[0]


def holds(big: BatchShape, small: BatchShape) -> bool:
    """Whether a batch planned for `small` can run at `big`: as many rows, width and slots
    or more (the extra positions are padding, segment id 0, seen by nothing)."""
    return big.rows >= small.rows and big.width >= small.width and big.slots >= small.slots


def covering_shapes(shapes: Sequence[BatchShape]) -> list[BatchShape]:
    """The fewest shapes that hold every one of `shapes`: for each row count, the widest
    shape with at least that many rows (widest first)."""
    covers: list[BatchShape] = []
    for rows in sorted({s.rows for s in shapes}):
        candidates = [s for s in shapes if s.rows >= rows]
        best = max(candidates, key=lambda s: (s.width, s.slots, -s.rows))
        if not any(holds(c, best) for c in covers):
            covers.append(best)
    # Drop any cover another one holds, then order widest first.
    kept = [c for c in covers if not any(o != c and holds(o, c) for o in covers)]
    assert all(any(holds(c, s) for c in kept) for s in shapes)
    return sorted(kept, key=lambda s: (-s.width, s.rows))
