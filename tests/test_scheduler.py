"""The batching scheduler on a tiny model: budget, no head-of-line blocking, cancellation,
error routing, per-item equality with single runs, and the recompilation witness."""

import threading

import numpy as np
import pytest
import tiny_models as tm

from tei_jax.engine import EMBED, EMBED_ALL
from tei_jax.errors import BackendError, UnhealthyError
from tei_jax.scheduler import Scheduler


@pytest.fixture(scope="module")
def model():
    folder = tm.make_model("bert", "base")
    tm.write_pooling(folder, "mean")
    return tm.load_cached(folder)  # max_batch_tokens=256, max_input_length=128


def encode(model, text):
    return model.tokenizer.encode(text, truncate=True)


def long_text(words: int) -> str:
    return " ".join(f"w{i}" for i in range(words))


class Recorder:
    """Collects BatchStats from the scheduler's callback."""

    def __init__(self):
        self.batches = []
        self.dropped = 0

    def on_batch(self, stats):
        self.batches.append(stats)

    def on_drop(self, count):
        self.dropped += count


def started(model, recorder=None, queue_first=()):
    """A scheduler whose queue already holds `queue_first` [(task, items)] when the batching
    thread starts, so the batches it cuts are deterministic."""
    recorder = recorder or Recorder()
    scheduler = Scheduler(model.engine, on_batch=recorder.on_batch, on_drop=recorder.on_drop)
    futures = [scheduler.submit(task, items) for task, items in queue_first]
    scheduler.start(warmup=False)
    return scheduler, futures


def test_batch_gives_what_each_item_gives_alone(model):
    rng = np.random.default_rng(0)
    texts = tm.random_texts(rng, 40, 1, 60)
    items = [encode(model, t) for t in texts]
    scheduler, [futures] = started(model, queue_first=[(EMBED, items)])
    try:
        together = [f.result(timeout=60).output for f in futures]
        alone = [model.engine.run(EMBED, [item])[0] for item in items]
        for a, b in zip(together, alone):
            assert np.allclose(a, b, atol=1e-5)
        rows = scheduler.submit(EMBED_ALL, items[:5])
        for future, item in zip(rows, items[:5]):
            states = future.result(timeout=60).output
            assert states.shape == (len(item), 32)
            assert np.allclose(states, model.engine.run(EMBED_ALL, [item])[0], atol=1e-5)
    finally:
        assert scheduler.stop(timeout=30)


def test_batches_respect_the_budget_and_the_compiled_shapes(model):
    policy = model.engine.policy
    recorder = Recorder()
    rng = np.random.default_rng(1)
    items = [encode(model, t) for t in tm.random_texts(rng, 120, 1, 90)]
    scheduler, [futures] = started(model, recorder, [(EMBED, items)])
    try:
        for f in futures:
            f.result(timeout=60)
    finally:
        scheduler.stop(timeout=30)
    shapes = set(policy.shapes())
    assert sum(b.size for b in recorder.batches) == len(items)
    assert len(recorder.batches) > 1
    for stats in recorder.batches:
        assert stats.computed_tokens <= policy.max_batch_tokens  # rows x width, padding included
        assert stats.shape in shapes
        assert stats.real_tokens <= stats.computed_tokens
    assert scheduler.real_tokens == sum(len(i) for i in items)
    assert 0 < scheduler.padding_efficiency <= 1


def test_max_batch_requests_caps_items_per_batch():
    folder = tm.make_model("bert", "base")
    tm.write_pooling(folder, "mean")
    capped = tm.load_cached(folder, max_batch_requests=3)
    recorder = Recorder()
    items = [encode(capped, "a few words") for _ in range(10)]
    scheduler, [futures] = started(capped, recorder, [(EMBED, items)])
    try:
        for f in futures:
            f.result(timeout=60)
    finally:
        scheduler.stop(timeout=30)
    assert [b.size for b in recorder.batches] == [3, 3, 3, 1]


def test_a_long_input_does_not_hold_short_ones_back(model):
    short = [encode(model, "short one") for _ in range(10)]
    long_item = encode(model, long_text(110))
    assert model.engine.policy.width_for(len(long_item)) > model.engine.policy.width_for(len(short[0]))
    recorder = Recorder()
    # Queue order: one short, the long one, then more short ones. FIFO batching would leave
    # the later short items behind the long one; here the first batch is short items only
    # (as many as its best shape holds: 8 of 4 tokens fill a one-row width of 32).
    scheduler, futures = started(model, recorder, [(EMBED, short[:1]), (EMBED, [long_item]), (EMBED, short[1:])])
    try:
        for group in futures:
            for f in group:
                f.result(timeout=60)
    finally:
        scheduler.stop(timeout=30)
    first, *rest = recorder.batches
    assert first.size >= 8 and first.real_tokens == first.size * len(short[0])
    assert first.shape.width < model.engine.policy.width_for(len(long_item))
    assert first.size + sum(b.size for b in rest) == 11


def test_short_items_fill_a_long_items_batch(model):
    long_item = encode(model, long_text(110))
    short = [encode(model, "short one") for _ in range(8)]
    recorder = Recorder()
    scheduler, futures = started(model, recorder, [(EMBED, [long_item]), (EMBED, short)])
    try:
        for group in futures:
            for f in group:
                f.result(timeout=60)
    finally:
        scheduler.stop(timeout=30)
    # The long item is oldest, so its width is chosen and the short ones ride along.
    assert [b.size for b in recorder.batches] == [9]


def test_cancelled_items_are_dropped_before_running(model):
    items = [encode(model, f"item number {i}") for i in range(12)]
    recorder = Recorder()
    scheduler = Scheduler(model.engine, on_batch=recorder.on_batch, on_drop=recorder.on_drop)
    futures = scheduler.submit(EMBED, items)
    for f in futures[::3]:
        assert f.cancel()
    assert scheduler.queue_size == 12
    scheduler.start(warmup=False)
    try:
        for f in futures:
            if not f.cancelled():
                f.result(timeout=60)
    finally:
        scheduler.stop(timeout=30)
    assert recorder.dropped == 4
    assert sum(b.size for b in recorder.batches) == 8
    assert scheduler.queue_size == 0


class FailingEngine:
    """Wraps an engine; dispatch fails for one task, so we can see where errors go."""

    def __init__(self, engine, failing_task):
        self._engine, self.failing_task = engine, failing_task

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def dispatch(self, task, items, batch):
        if task == self.failing_task:
            raise RuntimeError("device on fire")
        return self._engine.dispatch(task, items, batch)


def test_errors_reach_only_the_futures_of_the_failing_batch(model):
    scheduler = Scheduler(FailingEngine(model.engine, EMBED_ALL))
    good = scheduler.submit(EMBED, [encode(model, "fine"), encode(model, "also fine")])
    bad = scheduler.submit(EMBED_ALL, [encode(model, "doomed")])
    too_long = model.tokenizer._plain.encode(long_text(200))  # past the widest shape
    from tei_jax.tokenization import Encoded

    oversized = Encoded(tuple(too_long.ids), tuple(too_long.type_ids), 10)
    mixed = scheduler.submit(EMBED, [encode(model, "ok"), oversized])
    scheduler.start(warmup=False)
    try:
        assert all(f.result(timeout=60).output.shape == (32,) for f in good)
        with pytest.raises(BackendError, match="device on fire"):
            bad[0].result(timeout=60)
        assert mixed[0].result(timeout=60).output.shape == (32,)
        with pytest.raises(ValueError, match="exceeds the largest width"):
            mixed[1].result(timeout=60)
        assert scheduler.submit(EMBED, [encode(model, "after")])[0].result(timeout=60)
        assert scheduler.healthy  # a good batch after the failure restores health
    finally:
        scheduler.stop(timeout=30)


def test_timings_are_reported_per_item(model):
    scheduler, [futures] = started(model, queue_first=[(EMBED, [encode(model, "timing")] * 3)])
    try:
        results = [f.result(timeout=60) for f in futures]
    finally:
        scheduler.stop(timeout=30)
    assert all(r.inference_time > 0 and r.queue_time >= 0 for r in results)
    assert len({r.inference_time for r in results}) == 1  # one batch, one device time


def test_stop_drains_then_refuses(model):
    scheduler = Scheduler(model.engine)
    futures = scheduler.submit(EMBED, [encode(model, f"drain {i}") for i in range(6)])
    scheduler.start(warmup=False)
    assert scheduler.stop(drain=True, timeout=60)
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(UnhealthyError):
        scheduler.submit(EMBED, [encode(model, "late")])


def test_stop_without_drain_fails_queued_items(model):
    scheduler = Scheduler(model.engine)
    futures = scheduler.submit(EMBED, [encode(model, "never run")])
    scheduler.stop(drain=False)
    with pytest.raises(UnhealthyError, match="shutting down"):
        futures[0].result(timeout=1)


def test_warmup_then_no_compilation_after_it_completes(model):
    progress = []
    scheduler = Scheduler(model.engine)
    scheduler.start(warmup=True, progress=lambda done, total, task, shape: progress.append((done, total)))
    assert scheduler.ready.wait(300) and scheduler.warmed.wait(300)
    try:
        assert progress == [] or progress[-1][0] == progress[-1][1]
        expected = len(model.engine.tasks) * len(model.engine.policy.shapes())
        assert model.compile_count == expected
        rng = np.random.default_rng(7)
        texts = tm.random_texts(rng, 60, 1, 100)
        futures = []
        threads = [threading.Thread(target=lambda t=t: futures.extend(
            scheduler.submit(EMBED, [encode(model, x) for x in t]))) for t in np.array_split(texts, 6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for f in futures:
            f.result(timeout=60)
        assert scheduler.compiles_since_ready == 0
        assert model.compile_count == expected
    finally:
        scheduler.stop(timeout=30)


def test_a_stopped_scheduler_does_not_finish_its_warmup(caplog):
    """stop() reaches the warmup: a server told to stop while warming up exits without
    compiling every remaining shape (a fresh engine, so nothing is built yet)."""
    import tei_jax

    folder = tm.make_model("bert", "base", seed=3)
    tm.write_pooling(folder, "mean")
    model = tei_jax.load(str(folder), max_batch_tokens=128)
    total = len(model.engine.tasks) * len(model.engine.policy.shapes())
    scheduler = Scheduler(model.engine)
    assert scheduler.stop()  # before start: the warmup then builds only what it had started
    with caplog.at_level("INFO", logger="tei_jax.scheduler"):
        scheduler.start(warmup=True)
        scheduler._thread.join(300)
        for _ in range(600):
            if "warmup stopped by shutdown" in caplog.text:
                break
            threading.Event().wait(0.1)
    assert "warmup stopped by shutdown" in caplog.text
    assert not scheduler.warmed.is_set() and model.compile_count < total


def test_a_short_call_is_tokenized_while_a_huge_one_still_is(model, monkeypatch):
    # One client's 40 long inputs and another's one short query share one tokenizer thread:
    # the short one takes its turn after the piece that is running, not after all 40.
    from fake_engine import FakeEngine

    scheduler = Scheduler(FakeEngine(), tokenization_workers=1)
    served = model.with_executor(scheduler)
    order, big_started = [], threading.Event()
    real = model.tokenizer.encode

    def encode(text, **options):
        if text.startswith("big"):
            big_started.set()
            threading.Event().wait(0.01)  # a long input takes a while
        order.append(text.split(" ", 1)[0])
        return real(text, **options)

    monkeypatch.setattr(model.tokenizer, "encode", encode)
    monkeypatch.setattr(model.tokenizer, "encode_many", lambda texts, **options: [encode(t, **options) for t in texts])
    scheduler.start(warmup=False)
    try:
        big_texts = [f"big{i} " + "word " * 2000 for i in range(40)]
        big = threading.Thread(target=served.embed, args=(big_texts,))
        big.start()
        assert big_started.wait(30)
        assert served.embed("short query").shape[0] == 1
        big.join(60)
        assert len(order) == 41
        assert order.index("short") < 20, order  # before: 40, behind the whole big call
    finally:
        assert scheduler.stop(timeout=10)


class GatedEngine:
    """A FakeEngine whose first dispatch waits for `gate`, so a test can queue more while the
    first batch is on the device."""

    def __init__(self):
        from fake_engine import FakeEngine

        self._fake = FakeEngine()
        self.policy, self.tasks, self.compile_count = self._fake.policy, self._fake.tasks, 0
        self.dispatched = self._fake.dispatched
        self.first, self.gate = threading.Event(), threading.Event()

    def dispatch(self, task, items, batch):
        if not self.dispatched:
            self.first.set()
            assert self.gate.wait(30)
        return self._fake.dispatch(task, items, batch)

    def collect(self, task, items, batch, output):
        return self._fake.collect(task, items, batch, output)


def fake_items(first_id: int, count: int, length: int):
    from tei_jax.tokenization import Encoded

    return [Encoded((first_id,) + (5,) * (length - 1), (0,) * length, length) for _ in range(count)]


def test_a_short_call_behind_a_huge_one_rides_in_the_next_batch():
    # One call of 120 inputs (about 20 batches of 256 tokens), then, while its first batch
    # is on the device, a one-input call of the same width. Oldest-first served the short
    # one after all 120; with turns it leads the next batch, whose room the huge call fills.
    engine = GatedEngine()
    scheduler = Scheduler(engine)
    scheduler.start(warmup=False)
    try:
        huge = scheduler.submit(EMBED, fake_items(7, 120, 40))
        assert engine.first.wait(30)
        [short] = scheduler.submit(EMBED, fake_items(9, 1, 40))
        engine.gate.set()
        assert list(short.result(timeout=30).output) == [9, 40]
        for future in huge:
            future.result(timeout=30)
    finally:
        assert scheduler.stop(timeout=30)
    batches = engine.dispatched
    assert len(batches) > 10
    assert 9 in batches[1], [b.count(9) for b in batches]  # before: in the last batch
    assert batches[1].count(7) > 0  # the huge call filled the room the short one left
    assert sum(len(b) for b in batches) == 121


def test_two_huge_calls_take_turns():
    # Two calls of 60 inputs each, queued before the batcher starts: the batches alternate
    # between them (before: every batch of the first call, then the second's).
    engine = GatedEngine()
    engine.gate.set()
    scheduler = Scheduler(engine)
    first = scheduler.submit(EMBED, fake_items(7, 60, 40))
    second = scheduler.submit(EMBED, fake_items(8, 60, 40))
    scheduler.start(warmup=False)
    try:
        for future in first + second:
            future.result(timeout=30)
    finally:
        assert scheduler.stop(timeout=30)
    leaders = [batch[0] for batch in engine.dispatched]
    assert leaders[:6] == [7, 8, 7, 8, 7, 8], leaders
    assert all(len(set(batch)) == 1 for batch in engine.dispatched[:6])  # each led batch is full
