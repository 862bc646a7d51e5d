"""The engine's compile discipline: each shape once, warmup covers serving, nothing after."""

import threading

import jax
import numpy as np
import pytest
import tiny_models as tm

import tei_jax
from tei_jax.engine import EMBED, EMBED_ALL


class CompileCounter:
    """Counts XLA backend compilations reported by jax.monitoring while active."""

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)

    def _on_duration(self, event, duration, **kwargs):
        if self.active and event == "/jax/core/compile/backend_compile_duration":
            self.count += 1


@pytest.fixture(scope="module")
def counter():
    return CompileCounter()


def test_no_compilation_while_serving_after_warmup(counter):
    folder = tm.make_model("bert", "base", seed=3)
    tm.write_pooling(folder, "mean")
    model = tei_jax.load(str(folder), max_batch_tokens=128)
    compiled = model.engine.warmup(workers=2)
    assert compiled == len(model.engine.policy.shapes()) * 2  # embed + embed_all
    assert model.compile_count == compiled
    rng = np.random.default_rng(17)
    counter.active = True
    try:
        for _ in range(3):  # a mixed workload: many lengths, batch sizes and both tasks
            texts = tm.random_texts(rng, int(rng.integers(1, 60)), 1, 100)
            model.embed(texts)
            model.embed_all(texts[:5])
            model.embed(texts[0])
    finally:
        counter.active = False
    assert counter.count == 0
    assert model.compile_count == compiled


def test_a_stopped_warmup_builds_no_shape_it_had_not_started():
    """A server stopped while warming up exits without compiling the remaining shapes."""
    folder = tm.make_model("bert", "base", seed=3)
    tm.write_pooling(folder, "mean")
    model = tei_jax.load(str(folder), max_batch_tokens=128)
    stop = threading.Event()
    built = model.engine.warmup(workers=1, progress=lambda *_: stop.set(), stop=stop)
    # The first shape, then the one the single worker had started meanwhile.
    assert 1 <= built <= 2 < len(model.engine.policy.shapes()) * 2
    assert model.compile_count == built


def test_compile_counter_sees_a_new_shape(counter):
    """The witness above can fail: a shape outside the warmed set is counted."""
    folder = tm.make_model("bert", "base", seed=3)
    model = tei_jax.load(str(folder), pooling="cls", max_batch_tokens=512)
    counter.active = True
    try:
        model.embed("one new shape")
    finally:
        counter.active = False
    assert counter.count >= 1 and model.compile_count == 1


def test_concurrent_requests_for_one_shape_compile_it_once():
    from concurrent.futures import ThreadPoolExecutor

    folder = tm.make_model("bert", "base", seed=4)
    model = tei_jax.load(str(folder), pooling="mean", max_batch_tokens=256)
    items = [model.tokenizer.encode("same shape", truncate=True)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: model.engine.run(EMBED, items)[0], range(8)))
    assert model.compile_count == 1
    assert all(np.array_equal(results[0], r) for r in results)
    assert model.engine.tasks == (EMBED, EMBED_ALL)
