"""The Flask app in-process over a tiny model whose executor is fake: no gunicorn, no
subprocess, no compilation. The model's operations (validation, tokenization, TEI's rules,
scoring) are the real ones; only the device work is replaced by `FakeExecutor`, whose outputs
are a deterministic function of each input's token ids (same input, same answer)."""

from __future__ import annotations

import numpy as np
import tiny_models as tm

from app.server import create_app
from app.service import Service
from app.settings import parse_settings
from tei_jax.tasks import Task

HIDDEN = 32  # the tiny models' hidden size


class FakeExecutor:
    """Answers a Job like the engine would, in shape: pooled vectors, token states, logits."""

    def __init__(self, model):
        self.width = model.embedding_dim
        self.labels = max(1, len(model.spec.id2label))
        self.sparse = model.spec.pooling == "splade"
        self.jobs = 0

    def run(self, job, call=None):
        items = job.encode()
        if call is not None:
            call.record_tokenized(items, 0.0)
        self.jobs += 1
        return [self._output(job.task, item) for item in items]

    def _output(self, task, item):
        rng = np.random.default_rng(list(item.input_ids))
        if task is Task.EMBED_ALL:
            return rng.standard_normal((len(item), HIDDEN)).astype(np.float32)
        if task is Task.PREDICT:
            return rng.standard_normal(self.labels).astype(np.float32)
        if self.sparse:
            vector = np.zeros(self.width, np.float32)
            vector[list(item.input_ids)] = rng.random(len(item)).astype(np.float32) + 0.1
            return vector
        return rng.standard_normal(self.width).astype(np.float32)


def make_client(folder, *flags, pooling: str | None = None):
    """A Flask test client of the server over `folder`'s model with a FakeExecutor."""
    settings = parse_settings(["--hostname", "127.0.0.1", "--model-id", str(folder), *flags])
    options = {"pooling": pooling} if pooling else {}
    loaded = tm.load_cached(folder, **options)
    service = Service(settings)
    service.serve(loaded.with_executor(FakeExecutor(loaded)))
    return create_app(settings, service=service, start=False).test_client()
