"""The serving state of one worker: load the model, warm it up, and hand it the batching
scheduler as its executor; plus TEI's permits and metrics.

Everything that touches JAX happens in this process after gunicorn forked it: the loader
thread loads the weights, then the scheduler's warmup thread builds every shape (loaded from
the executable store when a previous start left them there), covering shapes first. Once
every request has a shape that holds it the service is `ready` (/health 200) and the
batching thread serves while the rest are built; before that /health answers 503. The routes
call the served model's operations (`service.require_ready().embed(...)`); nothing here runs
inference of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from typing import Callable, Iterator

from tei_jax.errors import TEIError, UnhealthyError
from tei_jax.executor import Call
from tei_jax.scheduler import Scheduler

from .metrics import Metrics
from .permits import Permits
from .settings import Settings

log = logging.getLogger("app.service")

HEALTH_TIMEOUT_S = 30.0
# TEI's x-compute-type: the same constant on every device (its router never sends another).
COMPUTE_TYPE = "gpu+optimized"
WORKER_BOOT_ERROR = 3  # gunicorn's exit code for "the worker failed to boot": the master halts


@dataclasses.dataclass
class Timings:
    """A request's figures for TEI's x-* headers (and gRPC's Metadata): seconds, means over
    its items, gathered from the `Call` of each model call it made."""

    start: float
    compute_type: str = COMPUTE_TYPE
    chars: int = 0
    tokens: int = 0
    tokenization: float = 0.0
    queue: float = 0.0
    inference: float = 0.0

    def add(self, call: Call) -> None:
        """Take in one model call's sizes and timings."""
        self.chars += call.chars
        self.tokens += call.tokens
        self.tokenization, self.queue, self.inference = call.tokenization, call.queue, call.inference

    def headers(self) -> dict[str, str]:
        total = _ms(time.perf_counter() - self.start)
        return {
            "x-compute-type": self.compute_type,
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
        self.model = None  # the loaded model, its executor the scheduler
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
                data_parallel_size=s.data_parallel_size, tensor_parallel_size=s.tensor_parallel_size,
            )
            # The input-length histogram's buckets depend on the model's max input length.
            self.metrics.set_max_input_length(model.max_input_length)
            log.info("Model loaded in %.1fs: %s, %s, max_input_length %d, %s",
                     time.perf_counter() - self._started_at, model.kind, model.dtype,
                     model.max_input_length, _describe_type(model))
            log.info("Devices: %s", _describe_placement(model))
            scheduler = Scheduler.for_model(model, on_batch=self.metrics.on_batch, on_drop=self.metrics.on_drop,
                                            on_done=self.metrics.on_done,
                                            tokenization_workers=s.tokenization_workers)
            self.model = model.with_executor(scheduler)
            self.state = "warming up"
            warmup_start = time.perf_counter()
            self.metrics.warmup_shapes_total.set(model.shape_count)
            scheduler.start(warmup=True, progress=_progress_logger(warmup_start, self.metrics, model.shape_count))
            self.scheduler = scheduler
            while not scheduler.ready.wait(0.1):
                if scheduler.error is not None:
                    raise RuntimeError(f"warmup failed: {scheduler.error}")
            self.serve(self.model)
            log.info("Ready: every request has a compiled shape (%d/%d built, %.1fs since start); "
                     "the rest are built in the background", model.compile_count, model.shape_count,
                     time.perf_counter() - self._started_at)
            while not scheduler.warmed.wait(0.5):
                if scheduler.warmup_error is not None or scheduler.error is not None:
                    return  # logged by the scheduler; the covering shapes keep serving
            stats = model.engine.store.stats
            log.info("Warmup done: %d shapes in %.1fs (%d loaded from the executable store, %d compiled); "
                     "%.1fs since start", model.compile_count, time.perf_counter() - warmup_start,
                     stats.loaded, stats.built, time.perf_counter() - self._started_at)
        except BaseException as exc:
            self.state = "failed"
            log.error("Could not start the model: %s", exc, exc_info=not isinstance(exc, TEIError))
            self._on_fatal(exc)

    def serve(self, model, scheduler: Scheduler | None = None) -> None:
        """Start answering with `model` (its executor set): after warmup, or at once in
        tests that hand in a model over a fake executor."""
        self.model = model
        if scheduler is not None:
            self.scheduler = scheduler
        self.state = "ready"
        self.metrics.ready.set(1)
        self.ready.set()

    def stop(self, timeout: float | None = None) -> None:
        """Finish every accepted item, then stop the batching thread."""
        if self.scheduler is not None:
            self.scheduler.stop(drain=True, timeout=timeout)

    def require_ready(self):
        """The model, or 503 Unhealthy while loading or warming up."""
        if not self.ready.is_set():
            raise UnhealthyError(f"the model is {self.state}")
        return self.model

    def timings(self, start: float | None = None) -> Timings:
        """A request's Timings, started now unless `start` is given."""
        return Timings(time.perf_counter() if start is None else start)

    @contextlib.contextmanager
    def counted(self, family: str | None, call: Call, start: float) -> Iterator[None]:
        """Around one model call: te_request_input_length per input; with `family` ("embed" for
        embed, embed_all and embed_sparse, "predict" for predict and rerank, as TEI's core
        counts them) te_{family}_count for the inputs that reached the device, then, if it
        answered, per input te_{family}_success, _duration and the _tokenization, _queue and
        _inference_duration (the call's means per input)."""
        try:
            yield
        finally:
            for length in call.input_lengths:
                self.metrics.input_length.observe(length)
            if family is not None and call.ran:
                getattr(self.metrics, f"{family}_count").inc(len(call.input_lengths))
        if family is not None:
            self.metrics.observe_items(family, len(call.input_lengths), time.perf_counter() - start,
                                       call.tokenization, call.queue, call.inference)

    def healthy(self) -> bool:
        """TEI's /health: cheap if the last batch succeeded, else a real 1-token forward."""
        if not self.ready.is_set():
            return False
        if self.scheduler is None or self.scheduler.healthy:
            return True
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        try:
            self.model.check_health(Call(gone=lambda: time.monotonic() > deadline))
        except Exception as exc:
            log.warning("health check failed: %s", exc)
            return False
        return True


def _describe_type(model) -> str:
    if model.kind.value == "embedding":
        return f"pooling {model.spec.pooling}, dim {model.embedding_dim}"
    return f"{len(model.spec.id2label)} labels"


def _progress_logger(start: float, metrics: Metrics | None = None, shapes: int = 0) -> Callable:
    """Log warmup progress about every 10% (and the last one), and keep the gauge current
    (`shapes` in all, of which warmup builds the last `total`)."""
    state = {"next": 0.0}

    def progress(done: int, total: int, task: str, shape) -> None:
        if metrics is not None:
            metrics.warmup_shapes_ready.set(max(shapes, total) - total + done)
        fraction = done / total if total else 1.0
        if fraction >= state["next"] or done == total:
            state["next"] = fraction + 0.1
            log.info("Warming up: %d/%d shapes built (%s rows=%d width=%d) %.1fs",
                     done, total, task, shape.rows, shape.width, time.perf_counter() - start)

    return progress


def _exit_worker(exc: BaseException) -> None:
    """A model that cannot load stops the server (as TEI exits), instead of gunicorn
    restarting the worker forever."""
    logging.shutdown()
    os._exit(WORKER_BOOT_ERROR)


def _describe_placement(model) -> str:
    """The startup log's line on devices, mesh and parameter shardings."""
    info = model.sharding_info
    mesh = " x ".join(f"{name} {size}" for name, size in info["mesh"].items())
    sizes = sorted(set(info["parameter_bytes_per_device"].values()))
    return (f"{len(info['device_ids'])} {info['platform']} ({info['device_kind']}), ids {info['device_ids']}; "
            f"mesh {mesh}; {info['parameters_split']} of {info['parameters']} parameters split over 'model', "
            f"{'/'.join(f'{b / 2**20:.1f}' for b in sizes)} MiB of parameters per device")
