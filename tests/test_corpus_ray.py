"""The corpus job on Ray Data: a local 2-CPU cluster, one engine, the same vectors as
`model.embed` row by row, the same bad-row rules as the local runner."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pyarrow.dataset as pads
import pytest

from corpus_data import LOAD, cosines, documents, embed_model_dir, write_jsonl
from tei_jax.corpus import CorpusJob, run_ray
from tei_jax.corpus.ray_runner import INSTALL_HINT, import_ray
from tei_jax.corpus.writer import BAD_ROWS
from tiny_models import load_cached

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'tei-jax[ray]'")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_ray_run_matches_model_embed(tmp_path, cluster):
    folder = embed_model_dir()
    model = load_cached(folder, **{k: v for k, v in LOAD.items() if k != "max_batch_tokens"})
    texts = documents(300, 2, seed=5)
    records = [{"text": t} for t in texts]
    records[10:10] = [{"text": None}, "{broken"]  # rows 10 and 11
    write_jsonl(tmp_path / "c.jsonl", records)
    job = CorpusJob(model_id=str(folder), input=str(tmp_path / "c.jsonl"), output=str(tmp_path / "out"),
                    load_options=dict(LOAD), batch_docs=128)
    summary = run_ray(job, progress=False)
    table = pads.dataset(tmp_path / "out").to_table().sort_by("id")
    ids = table.column("id").to_pylist()
    assert ids == [i for i in range(len(records)) if i not in (10, 11)]
    vectors = np.array(table.column("embedding").to_pylist(), np.float32)
    assert np.all(cosines(vectors, model.embed(texts)) > 0.99999)
    bad = [json.loads(line) for line in (tmp_path / "out" / BAD_ROWS).read_text().splitlines()]
    assert [(b["row"], b["reason"][:12]) for b in bad] == [(10, "missing text"), (11, "invalid JSON")]
    assert summary.counts.documents == len(texts) and summary.bad_rows == 2 and summary.runner == "ray"
    assert not list((tmp_path / "out").glob(".ray-parts"))
    again = run_ray(job, progress=False)  # complete: not redone
    assert again.shards_written == 0 and again.counts.documents == len(texts)


def test_missing_ray_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'tei-jax\[ray\]'"):
        import_ray()
    assert "tei-jax[ray]" in INSTALL_HINT


def test_strict_errors_from_actors_are_unwrapped():
    from tei_jax.corpus.readers import CorpusError
    from tei_jax.corpus.ray_runner import _corpus_error

    class Wrapped(Exception):  # what Ray raises on the driver: the actor's traceback as text
        pass

    message = "bad row 3 (id 3): missing text (--strict)"
    assert _corpus_error(Wrapped(f"UDF failed\ntei_jax.corpus.readers.CorpusError: {message}\n")) == message
    try:
        try:
            raise CorpusError(message)
        except CorpusError as inner:
            raise Wrapped("UDF failed") from inner
    except Wrapped as outer:
        assert _corpus_error(outer) == message
    assert _corpus_error(Wrapped("a real bug")) is None
