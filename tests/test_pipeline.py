"""The one plan -> dispatch -> collect path: one batch in flight ahead, errors per batch."""

import pytest
from fake_engine import FakeEngine

from tei_jax.pipeline import Pipeline, Planned, run_planned
from tei_jax.tasks import Task
from tei_jax.tokenization import Encoded


def item(first: int, length: int = 3) -> Encoded:
    return Encoded((first,) + (7,) * (length - 1), (0,) * length, length)


def planned(engine, items, tag=None):
    return Planned(Task.EMBED, items, engine.policy.pack([len(i) for i in items]), tag)


def test_push_dispatches_before_it_collects_the_previous_batch():
    engine = FakeEngine()
    pipeline = Pipeline(engine)
    assert pipeline.push(planned(engine, [item(1)], "a")) == []  # in flight, nothing done yet
    assert pipeline.busy
    [done] = pipeline.push(planned(engine, [item(2)], "b"))
    assert done.planned.tag == "a" and engine.dispatched == [[1], [2]]  # b went out before a came back
    assert done.outputs[0][0] == 1 and done.error is None and done.device_time >= 0
    [last] = pipeline.drain()
    assert last.planned.tag == "b" and not pipeline.busy and pipeline.drain() == []


def test_a_failed_dispatch_finishes_at_once_and_keeps_the_other_in_flight():
    engine = FakeEngine(fail_on=9)
    pipeline = Pipeline(engine)
    pipeline.push(planned(engine, [item(1)], "ok"))
    finished = pipeline.push(planned(engine, [item(9)], "bad"))
    assert [f.planned.tag for f in finished] == ["ok", "bad"]
    assert finished[0].error is None and "on fire" in str(finished[1].error)


def test_run_planned_returns_outputs_in_input_order():
    engine = FakeEngine()
    items = [item(i, length) for i, length in enumerate([5, 90, 3, 60, 12, 120], start=1)]
    outputs, device_time = run_planned(engine, Task.EMBED, items)
    assert [int(o[0]) for o in outputs] == [1, 2, 3, 4, 5, 6]
    assert len(engine.dispatched) > 1 and device_time >= 0
    with pytest.raises(RuntimeError, match="on fire"):
        run_planned(FakeEngine(fail_on=3), Task.EMBED, items)
