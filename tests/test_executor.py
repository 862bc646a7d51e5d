"""The executor seam: the direct executor reports a call's sizes and timings, a model handed
another executor runs every operation through it, and the scheduler's planner runs outside
its lock."""

import threading
import time

import numpy as np
import pytest
import tiny_models as tm
from fake_engine import FakeEngine

from tei_jax.executor import Call, DirectExecutor, Job
from tei_jax.scheduler import Scheduler
from tei_jax.tasks import Task
from tei_jax.tokenization import Encoded


@pytest.fixture(scope="module")
def model():
    folder = tm.make_model("bert", "base")
    tm.write_pooling(folder, "mean")
    return tm.load_cached(folder)


class Recording:
    """An executor that answers without a device and remembers what it was given."""

    def __init__(self, width: int):
        self.width, self.jobs = width, []

    def run(self, job, call=None):
        items = job.encode()
        self.jobs.append((job.task, items))
        if job.task is Task.EMBED_ALL:
            return [np.ones((len(i), self.width), np.float32) for i in items]
        return [np.full(self.width, float(len(i)), np.float32) for i in items]


def test_direct_executor_fills_in_the_call(model):
    assert isinstance(model.executor, DirectExecutor)
    call = Call()
    vectors = model.embed(["hello world", "a"], call=call)
    assert vectors.shape == (2, 32)
    assert call.tokens == 4 + 3 and call.chars == len("hello world") + 1 and call.input_lengths == [4, 3]
    assert call.ran and call.inference > 0 and call.tokenization > 0


def test_with_executor_runs_every_operation_through_it(model):
    fake = Recording(32)
    served = model.with_executor(fake)
    assert model.executor is not fake and served.engine is model.engine  # shared, not copied
    assert np.allclose(np.linalg.norm(served.embed(["a b", "c"]), axis=1), 1)
    assert [a.shape for a in served.embed_all("a b")] == [(4, 32)]
    assert len(served.similarity("a", ["b", "c"])) == 2
    assert [task for task, _ in fake.jobs] == [Task.EMBED, Task.EMBED_ALL, Task.EMBED]
    assert [len(items) for _, items in fake.jobs] == [2, 1, 3]
    served.check_health()
    assert fake.jobs[-1][1] == [model.engine.probe()]


class SlowPolicy:
    """A shape policy whose `pack` waits until released, to catch planning under the lock."""

    def __init__(self, policy):
        self._policy, self.packing, self.release = policy, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def pack(self, *args, **kwargs):
        self.packing.set()
        assert self.release.wait(10)
        return self._policy.pack(*args, **kwargs)


def test_submit_never_waits_for_the_planner():
    engine = FakeEngine()
    engine.policy = policy = SlowPolicy(engine.policy)
    scheduler = Scheduler(engine)
    first = scheduler.submit(Task.EMBED, [Encoded((5, 6), (0, 0), 2)])
    scheduler.start(warmup=False)
    try:
        assert policy.packing.wait(10)  # the batching thread is inside pack()
        started = time.perf_counter()
        second = scheduler.submit(Task.EMBED, [Encoded((8, 9, 9), (0, 0, 0), 3)])
        assert time.perf_counter() - started < 1.0  # did not wait for the held planner
        policy.release.set()
        assert first[0].result(timeout=10).output[0] == 5
        assert second[0].result(timeout=10).output[0] == 8
    finally:
        policy.release.set()
        assert scheduler.stop(timeout=10)


def test_scheduler_run_is_an_executor():
    scheduler = Scheduler(FakeEngine(), tokenization_workers=1)
    items = [Encoded((i + 1, 7, 7), (0, 0, 0), 3) for i in range(5)]
    scheduler.start(warmup=False)
    try:
        call = Call()
        outputs = scheduler.run(Job(Task.EMBED, lambda: items), call)
    finally:
        assert scheduler.stop(timeout=10)
    assert [int(o[0]) for o in outputs] == [1, 2, 3, 4, 5]
    assert call.tokens == 15 and call.queue >= 0 and call.inference >= 0
