"""Where tei-jax's embed time goes: tokenization, batch planning, host arrays, device compute
(dispatch + wait) and reading results back, timed phase by phase without overlap.

It drives the engine's public pieces in the order `Model.embed` and its executor do, one client batch
at a time, so the phases add up to about one un-overlapped embed call.
"""

from __future__ import annotations

import time
from typing import Sequence

import jax
import numpy as np

from ..pooling import truncate_and_normalize
from ..tasks import Task

EMBED = Task.EMBED

PHASES = ("tokenize", "plan", "host_arrays", "device", "collect", "finish")


def profile_embed(model, batches: Sequence[list[str]], repeats: int = 1) -> dict:
    """Seconds per phase over all batches (best of `repeats` passes), and their shares."""
    best: dict[str, float] | None = None
    engine = model.engine
    for _ in range(repeats):
        spent = dict.fromkeys(PHASES, 0.0)
        for texts in batches:
            t0 = time.perf_counter()
            items = model.tokenizer.encode_many(texts, truncate=model.auto_truncate)
            t1 = time.perf_counter()
            plans = engine.policy.plan([len(i) for i in items])
            t2 = time.perf_counter()
            outputs = []
            for batch in plans:
                members = [items[i] for i in batch.indices]
                a0 = time.perf_counter()
                engine.arrays(members, batch)
                a1 = time.perf_counter()
                out = engine.dispatch(EMBED, members, batch)  # builds the arrays again
                jax.block_until_ready(out)
                a2 = time.perf_counter()
                outputs.extend(engine.collect(EMBED, members, batch, out))
                a3 = time.perf_counter()
                spent["host_arrays"] += a1 - a0
                spent["device"] += (a2 - a1) - (a1 - a0)
                spent["collect"] += a3 - a2
            t3 = time.perf_counter()
            truncate_and_normalize(np.stack(outputs), None, True)
            t4 = time.perf_counter()
            spent["tokenize"] += t1 - t0
            spent["plan"] += t2 - t1
            spent["finish"] += t4 - t3
        total = sum(spent.values())
        if best is None or total < sum(best.values()):
            best = spent
    assert best is not None
    total = sum(best.values())
    return {"seconds": best, "share": {k: v / total for k, v in best.items()}, "total_seconds": total}
