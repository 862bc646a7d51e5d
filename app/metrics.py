"""Prometheus metrics with TEI's names and buckets (contract section 8), plus ours.

One registry per server (not prometheus_client's global one), so building the app twice in a
process never collides. prometheus_client keeps the values; `exposition()` renders them the way
TEI's exporter (metrics-exporter-prometheus) does, so dashboards built on TEI find them: a
counter is `te_request_count`, not `te_request_count_total`, and there are no `*_created` series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; charset=utf-8"

from tei_jax.scheduler import BatchStats

# TEI: 35 geometric buckets from 15 microseconds, ratio 1.5.
DURATION_BUCKETS = tuple(1.5e-5 * 1.5**i for i in range(35))
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(13))
BATCH_TOKEN_BUCKETS = tuple(float(2**i) for i in range(21))


def input_length_buckets(max_input_length: int) -> tuple[float, ...]:
    """2^0 .. 2^19, capped at max_input_length (TEI)."""
    buckets = [float(2**i) for i in range(20) if 2**i < max_input_length]
    return tuple(buckets + [float(max_input_length)])


class Metrics:
    """Every metric the server exposes on /metrics."""

    def __init__(self, max_input_length: int = 512):
        self.registry = registry = CollectorRegistry(auto_describe=True)

        def counter(name, doc, labels=()):
            return Counter(name, doc, labels, registry=registry)

        def histogram(name, doc, buckets=DURATION_BUCKETS, labels=()):
            return Histogram(name, doc, labels, buckets=buckets, registry=registry)

        self.request_count = counter("te_request_count", "Requests received", ["method"])
        self.request_success = counter("te_request_success", "Requests answered", ["method"])
        self.request_failure = counter("te_request_failure", "Requests failed", ["err"])
        self.request_duration = histogram("te_request_duration", "Request duration (s)")
        self.request_tokenization = histogram("te_request_tokenization_duration", "Tokenization (s)")
        self.request_queue = histogram("te_request_queue_duration", "Queue wait (s)")
        self.request_inference = histogram("te_request_inference_duration", "Inference (s)")
        self.input_length = histogram("te_request_input_length", "Tokens per input",
                                      input_length_buckets(max_input_length))
        self.embed_count = counter("te_embed_count", "Embed inputs received")
        self.embed_success = counter("te_embed_success", "Embed inputs answered")
        self.embed_duration = histogram("te_embed_duration", "Embed duration per input (s)")
        self.embed_tokenization = histogram("te_embed_tokenization_duration", "Embed tokenization per input (s)")
        self.embed_queue = histogram("te_embed_queue_duration", "Embed queue wait per input (s)")
        self.embed_inference = histogram("te_embed_inference_duration", "Embed inference per input (s)")
        self.predict_count = counter("te_predict_count", "Predict inputs received")
        self.predict_success = counter("te_predict_success", "Predict inputs answered")
        self.predict_duration = histogram("te_predict_duration", "Predict duration per input (s)")
        self.predict_tokenization = histogram("te_predict_tokenization_duration",
                                              "Predict tokenization per input (s)")
        self.predict_queue = histogram("te_predict_queue_duration", "Predict queue wait per input (s)")
        self.predict_inference = histogram("te_predict_inference_duration", "Predict inference per input (s)")
        self.batch_next_size = histogram("te_batch_next_size", "Items per batch", BATCH_SIZE_BUCKETS)
        self.batch_next_tokens = histogram("te_batch_next_tokens", "Computed tokens per batch (padding included)",
                                           BATCH_TOKEN_BUCKETS)
        self.batch_next_duration = histogram("te_batch_next_duration", "Time to cut and dispatch a batch (s)",
                                             labels=["method"])
        self.batch_inference_count = counter("te_batch_inference_count", "Batches run", ["method"])
        self.batch_inference_success = counter("te_batch_inference_success", "Batches succeeded", ["method"])
        self.batch_inference_duration = histogram("te_batch_inference_duration", "Device time per batch (s)",
                                                  labels=["method"])
        self.queue_size = Gauge("te_queue_size", "Items waiting in the queue", registry=registry)
        self.padding_efficiency = Gauge("te_padding_efficiency",
                                        "Real tokens / computed tokens over all batches so far", registry=registry)
        self.compiles_after_warmup = Gauge("te_compilations_after_warmup",
                                           "Shapes compiled after warmup completed (should stay 0)",
                                           registry=registry)
        self.warmup_shapes_ready = Gauge("te_warmup_shapes_ready",
                                         "Shapes built (compiled or loaded) by warmup so far", registry=registry)
        self.warmup_shapes_total = Gauge("te_warmup_shapes", "Shapes warmup builds in all", registry=registry)
        self.ready = Gauge("te_ready", "1 once every request can be served (/health 200)", registry=registry)
        self._real_tokens = 0
        self._computed_tokens = 0

    def set_max_input_length(self, max_input_length: int) -> None:
        """Re-bucket the input-length histogram once the model is known. Nothing has been
        observed in it before (inputs are only tokenized by a loaded model), and every other
        metric, failures while loading included, is kept."""
        self.registry.unregister(self.input_length)
        self.input_length = Histogram("te_request_input_length", "Tokens per input",
                                      buckets=input_length_buckets(max_input_length), registry=self.registry)

    def observe_items(self, family: str, items: int, seconds: float, tokenization: float, queue: float,
                      inference: float) -> None:
        """te_{family}_success and its four histograms, once per input answered (TEI's core
        records them per item)."""
        getattr(self, f"{family}_success").inc(items)
        for _ in range(items):
            getattr(self, f"{family}_duration").observe(seconds)
            getattr(self, f"{family}_tokenization").observe(tokenization)
            getattr(self, f"{family}_queue").observe(queue)
            getattr(self, f"{family}_inference").observe(inference)

    # Scheduler hooks ----------------------------------------------------------------------
    def on_batch(self, stats: BatchStats) -> None:
        self.batch_next_size.observe(stats.size)
        self.batch_next_tokens.observe(stats.computed_tokens)
        self.batch_next_duration.labels(stats.task).observe(stats.build_time)
        self.queue_size.set(stats.queue_size)
        self._real_tokens += stats.real_tokens
        self._computed_tokens += stats.computed_tokens
        self.padding_efficiency.set(self._real_tokens / self._computed_tokens)

    def on_done(self, task: str, size: int, seconds: float, ok: bool) -> None:
        self.batch_inference_count.labels(task).inc()
        if ok:
            self.batch_inference_success.labels(task).inc()
            self.batch_inference_duration.labels(task).observe(seconds)

    def on_drop(self, count: int) -> None:
        self.request_failure.labels("dropped").inc(count)

    def exposition(self) -> bytes:
        return render(self.registry)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def render(registry: CollectorRegistry) -> bytes:
    """The text format with TEI's series names: counters without `_total`, no `_created`."""
    lines = []
    for family in registry.collect():
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            name = sample.name
            if name.endswith("_created"):
                continue
            value = sample.value
            if family.type == "counter":
                name = family.name
                text = str(int(value)) if float(value).is_integer() else floatToGoString(value)
            else:
                text = floatToGoString(value)
            lines.append(f"{name}{_labels(sample.labels)} {text}")
        lines.append("")
    return "\n".join(lines).encode()
