"""An engine without JAX for scheduler, pipeline and route tests: every output is a small
array that encodes its item's first token id and length, so tests can see where it went."""

from __future__ import annotations

import numpy as np

from tei_jax.batching import ShapePolicy
from tei_jax.tasks import Task


class FakeEngine:
    def __init__(self, tasks=(Task.EMBED, Task.EMBED_ALL), policy: ShapePolicy | None = None,
                 fail_on: int | None = None):
        self.tasks = tuple(tasks)
        self.policy = policy or ShapePolicy(128, max_batch_tokens=256)
        self.fail_on = fail_on  # a first token id whose batch fails at dispatch
        self.dispatched: list[list[int]] = []
        self.compile_count = 0

    def dispatch(self, task, items, batch):
        firsts = [item.input_ids[0] for item in items]
        if self.fail_on in firsts:
            raise RuntimeError("device on fire")
        self.dispatched.append(firsts)
        return [np.array([item.input_ids[0], len(item)], np.float32) for item in items]

    def collect(self, task, items, batch, output):
        return list(output)
