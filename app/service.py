"""The serving state of one worker: load the model, warm it up, and run items through the
batching scheduler with TEI's permits, timings and metrics.

Everything that touches JAX happens in this process after gunicorn forked it: the loader
thread loads the weights, then the scheduler's batching thread compiles every shape (warmup)
and serves. Until that is done the service is not `ready` and /health answers 503.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Callable, Sequence

from tei_jax.errors import TEIError, UnhealthyError
from tei_jax.scheduler import Permits, Result, Scheduler
from tei_jax.tokenization import Encoded

from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("app.service")

HEALTH_TIMEOUT_S = 30.0
CLIENT_POLL_S = 0.05  # how often a waiting request checks that its client is still there
WORKER_BOOT_ERROR = 3  # gunicorn's exit code for "the worker failed to boot": the master halts


class ClientDisconnected(Exception):
    """The client hung up before its results were ready; its queued items were dropped."""


@dataclasses.dataclass
class Timings:
    """A request's figures for TEI's x-* headers (seconds; means over its items)."""

    start: float
    chars: int = 0
    tokens: int = 0
    tokenization: float = 0.0
    queue: float = 0.0
    inference: float = 0.0

    def headers(self) -> dict[str, str]:
        total = _ms(time.perf_counter() - self.start)
        return {
            "x-compute-type": "gpu+optimized",
            "x-compute-time": total,
            "x-total-time": total,
            "x-compute-characters": str(self.chars),
            "x-compute-tokens": str(self.tokens),
            "x-tokenization-time": _ms(self.tokenization),
            "x-queue-time": _ms(self.queue),
            "x-inference-time": _ms(self.inference),
        }


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


class Service:
    """Model + scheduler + permits for one server process."""

    def __init__(self, settings: Settings, on_fatal: Callable[[BaseException], None] | None = None):
        self.settings = settings
        self.permits = Permits(settings.max_concurrent_requests)
        self._tokenizers = ThreadPoolExecutor(max(1, settings.tokenization_workers),
                                              thread_name_prefix="tei-jax-tokenizer")
        self.model = None
        self.scheduler: Scheduler | None = None
        self.metrics = Metrics()
        self.state = "starting"  # -> loading -> warming up -> ready | failed
        self.ready = threading.Event()
        self._on_fatal = on_fatal or _exit_worker
        self._thread: threading.Thread | None = None
        self._started_at = time.perf_counter()

    # Lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Load and warm up in the background; the HTTP threads answer 503 meanwhile."""
        self._thread = threading.Thread(target=self._load, name="tei-jax-loader", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        s = self.settings
        try:
            import tei_jax

            self.state = "loading"
            log.info("Starting model download/load: %s", s.model_id)
            model = tei_jax.load(
                s.model_id, revision=s.revision, dtype=s.dtype, pooling=s.pooling, token=s.hf_token,
                cache_dir=s.huggingface_hub_cache, max_batch_tokens=s.max_batch_tokens,
                max_batch_requests=s.max_batch_requests, auto_truncate=s.auto_truncate,
                attention=s.attention, dense_path=s.dense_path, default_prompt_name=s.default_prompt_name,
                default_prompt=s.default_prompt, compile_cache=s.compile_cache_dir,
                chunk_long_inputs=s.chunk_long_inputs, chunk_overlap=s.chunk_overlap,
            )
            # The input-length histogram's buckets depend on the model's max input length.
            self.metrics.set_max_input_length(model.max_input_length)
            log.info("Model loaded in %.1fs: %s, %s, max_input_length %d, %s",
                     time.perf_counter() - self._started_at, model.kind, model.dtype,
                     model.max_input_length, _describe_type(model))
            self.model = model
            scheduler = Scheduler(model.engine, on_batch=self.metrics.on_batch, on_drop=self.metrics.on_drop,
                                  on_done=self.metrics.on_done)
            self.state = "warming up"
            warmup_start = time.perf_counter()
            scheduler.start(warmup=True, progress=_progress_logger(warmup_start))
            self.scheduler = scheduler
            while not scheduler.ready.wait(0.5):
                if scheduler.error is not None:
                    raise RuntimeError(f"warmup failed: {scheduler.error}")
            self.state = "ready"
            self.metrics.ready.set(1)
            self.ready.set()
            log.info("Warmup done: %d shapes compiled in %.1fs. Ready (%.1fs since start)",
                     model.compile_count, time.perf_counter() - warmup_start,
                     time.perf_counter() - self._started_at)
        except BaseException as exc:
            self.state = "failed"
            log.error("Could not start the model: %s", exc, exc_info=not isinstance(exc, TEIError))
            self._on_fatal(exc)

    def stop(self, timeout: float | None = None) -> None:
        """Finish every accepted item, then stop the batching thread."""
        if self.scheduler is not None:
            self.scheduler.stop(drain=True, timeout=timeout)

    def require_ready(self):
        """The model, or 503 Unhealthy while loading or warming up."""
        if not self.ready.is_set():
            raise UnhealthyError(f"the model is {self.state}")
        return self.model

    # Requests ---------------------------------------------------------------------------
    def tokenize(self, timings: Timings, prepare: Callable[[], list[Encoded]]) -> list[Encoded]:
        """Run a model's prepare_* on one of the `--tokenization-workers` threads (so however
        many request threads there are, that many tokenize at once) and record its timings."""

        def timed() -> tuple[list[Encoded], float]:
            started = time.perf_counter()
            return prepare(), time.perf_counter() - started

        items, elapsed = self._tokenizers.submit(timed).result()
        timings.tokenization = elapsed / max(1, len(items))
        timings.chars += sum(item.chars for item in items)
        timings.tokens += sum(len(item) for item in items)
        for item in items:
            self.metrics.input_length.observe(len(item))
        return items

    def infer(self, task: str, items: Sequence[Encoded], timings: Timings | None = None,
              client_gone: Callable[[], bool] | None = None) -> list[Result]:
        """Submit each item on its own and wait for all; the first failure fails the request
        and withdraws its other items from the queue. With `client_gone`, a client that hangs
        up meanwhile has its items withdrawn too (ClientDisconnected)."""
        futures = self.scheduler.submit(task, items)
        try:
            while wait(futures, timeout=None if client_gone is None else CLIENT_POLL_S,
                       return_when=FIRST_EXCEPTION).not_done:
                if client_gone():
                    raise ClientDisconnected()
            for future in futures:
                if future.done() and future.exception() is not None:
                    raise _as_tei(future.exception())
            results = [f.result() for f in futures]
        except BaseException:
            _cancel(futures)
            raise
        if timings is not None and results:
            timings.queue = sum(r.queue_time for r in results) / len(results)
            timings.inference = sum(r.inference_time for r in results) / len(results)
        return results

    def healthy(self) -> bool:
        """TEI's /health: cheap if the last batch succeeded, else a real 1-token forward."""
        if not self.ready.is_set() or self.scheduler is None:
            return False
        if self.scheduler.healthy:
            return True
        task = self.model.engine.tasks[0]
        probe = Encoded((self.model.engine._pad_id,), (0,), 1)
        try:
            futures = self.scheduler.submit(task, [probe])
            futures[0].result(timeout=HEALTH_TIMEOUT_S)
        except Exception as exc:
            log.warning("health check failed: %s", exc)
            return False
        return True


def _as_tei(exc: BaseException) -> BaseException:
    if isinstance(exc, TEIError):
        return exc
    from tei_jax.errors import ValidationError

    if isinstance(exc, ValueError):  # an item longer than the widest compiled shape
        return ValidationError(f"Input validation error: {exc}")
    from tei_jax.errors import BackendError

    return BackendError(f"Backend error: {exc}")


def _cancel(futures: Sequence[Future]) -> None:
    for future in futures:
        future.cancel()


def _describe_type(model) -> str:
    if model.kind == "embedding":
        return f"pooling {model.spec.pooling}, dim {model.embedding_dim}"
    return f"{len(model.spec.id2label)} labels"


def _progress_logger(start: float) -> Callable:
    """Log warmup progress about every 10% (and the last one)."""
    state = {"next": 0.0}

    def progress(done: int, total: int, task: str, shape) -> None:
        fraction = done / total if total else 1.0
        if fraction >= state["next"] or done == total:
            state["next"] = fraction + 0.1
            log.info("Warming up: %d/%d shapes compiled (%s rows=%d width=%d) %.1fs",
                     done, total, task, shape.rows, shape.width, time.perf_counter() - start)

    return progress


def _exit_worker(exc: BaseException) -> None:
    """A model that cannot load stops the server (as TEI exits), instead of gunicorn
    restarting the worker forever."""
    logging.shutdown()
    os._exit(WORKER_BOOT_ERROR)
