"""Corpus embedding on one machine: readers, shards, the writer, resume, bad rows, the CLI."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from corpus_data import LOAD, cosines, documents, embed_model_dir, write_jsonl
from tei_jax.corpus import CorpusError, CorpusJob, OutputError, Task, TaskOptions, run_local
from tei_jax.corpus import cli
from tei_jax.corpus.readers import Source, count_rows, discover, read_rows
from tei_jax.corpus.writer import BAD_ROWS, SUCCESS
from tiny_models import load_cached, make_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder():
    return embed_model_dir()


@pytest.fixture(scope="module")
def model(folder):
    return load_cached(folder, **{k: v for k, v in LOAD.items() if k != "max_batch_tokens"})


def read_output(path: Path) -> dict:
    table = pads.dataset(path).to_table()
    order = np.argsort(np.array(table.column("id").to_pylist(), dtype=object).astype(str)
                       if pa.types.is_string(table.schema.field("id").type) else table.column("id").to_numpy())
    return {name: [table.column(name).to_pylist()[i] for i in order] for name in table.column_names}


def job(folder, input, output, **kw) -> CorpusJob:
    return CorpusJob(model_id=str(folder), input=str(input), output=str(output), load_options=dict(LOAD), **kw)


@pytest.mark.slow  # keeps the default suite under 10 minutes on 2 cores
def test_local_run_matches_model_embed_row_by_row(tmp_path, folder, model):
    texts = documents(3000, 4)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_jsonl(corpus / "a.jsonl", [{"text": t} for t in texts[:1500]])
    pq.write_table(pa.table({"text": texts[1500:]}), corpus / "b.parquet")
    summary = run_local(job(folder, corpus, tmp_path / "out", shard_size=1000), model=model, progress=False)
    out = read_output(tmp_path / "out")
    assert out["id"] == list(range(len(texts)))
    vectors = np.array(out["embedding"], np.float32)
    assert np.all(cosines(vectors, model.embed(texts)) > 0.99999)
    assert summary.counts.documents == len(texts) and summary.bad_rows == 0
    assert summary.counts.tokens > len(texts) and 0.5 < summary.counts.padding_efficiency <= 1.0
    assert summary.shards_written == 4 and summary.output_bytes > 0
    assert pq.read_schema(tmp_path / "out" / "part-00000.parquet").field("embedding").type == pa.list_(pa.float32(), 32)
    text = summary.text()
    assert "3,004 embedded" in text and "padding efficiency" in text and "tokens/s" in text


def test_resume_after_kill_ends_with_one_row_per_input(tmp_path, folder, model):
    texts = documents(1500, 0, seed=1)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tei_jax.embed", "--model-id", str(folder), "--input", str(corpus),
               "--output", str(out), "--shard-size", "100", "--batch-docs", "50", "--max-batch-tokens", "256",
               "--chunk-long-inputs", "--chunk-overlap", "8", "--no-progress"]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = out / "part-00000.parquet"
    deadline = time.monotonic() + 240
    while not shard.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert shard.exists() and not (out / SUCCESS).exists(), "the kill should land mid-run"
    written = sorted(p.name for p in out.glob("part-*.parquet"))
    assert len(written) < 15
    stamp = shard.stat().st_mtime_ns
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"({len(written)} already written, skipped)" in second.stdout
    assert shard.stat().st_mtime_ns == stamp and (out / SUCCESS).exists()
    assert not list(out.glob(".*.tmp"))
    result = read_output(out)
    assert result["id"] == list(range(len(texts)))
    assert np.all(cosines(np.array(result["embedding"]), model.embed(texts)) > 0.99999)


def test_bad_rows_are_reported_with_ids_and_skipped(tmp_path, folder, capsys):
    records = [{"doc": "a", "text": "fine"}, {"doc": "b", "text": 7}, {"doc": "c"}, "{not json",
               {"doc": "d", "text": ""}, {"text": "no id"}, {"doc": 5, "text": "number id"}, ["a", "list"]]
    corpus = write_jsonl(tmp_path / "c.jsonl", records)
    args = ["--model-id", str(folder), "--input", str(corpus), "--id-field", "doc", "--max-batch-tokens", "256",
            "--no-progress"]
    assert cli.main([*args, "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr()
    assert "bad row 1 (id b): text is not a string (int)" in printed.err + printed.out
    bad = [json.loads(line) for line in (tmp_path / "out" / BAD_ROWS).read_text().splitlines()]
    assert [(b["row"], b["id"]) for b in bad] == [(1, "b"), (2, "c"), (3, None), (4, "d"), (5, None), (7, None)]
    reasons = [b["reason"] for b in bad]
    assert reasons[:2] == ["text is not a string (int)", "missing text"] and reasons[2].startswith("invalid JSON")
    assert reasons[3:] == ["empty text", "missing id", "not a JSON object"]
    assert read_output(tmp_path / "out")["id"] == ["5", "a"]  # strings, sorted
    assert cli.main([*args, "--output", str(tmp_path / "strict"), "--strict"]) == cli.EXIT_ERROR
    assert "bad row 1 (id b): text is not a string (int) (--strict)" in capsys.readouterr().err


def test_model_refusals_become_bad_rows(tmp_path, folder):
    long = " ".join(["embeddings"] * 200)
    corpus = tmp_path / "c.txt"
    corpus.write_text(f"short one\n{long}\nshort two\n")
    plain = dataclasses.replace(job(folder, corpus, tmp_path / "out", task_options=TaskOptions(truncate=False)),
                                load_options={"max_batch_tokens": 256})  # no chunking
    summary = run_local(plain, progress=False)
    assert summary.bad_rows == 1 and summary.counts.documents == 2
    bad = json.loads((tmp_path / "out" / BAD_ROWS).read_text())
    assert bad["row"] == 1 and bad["reason"].startswith("Validation: ") and "tokens" in bad["reason"]


def test_csv_and_text_readers_stream_rows(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "1.csv").write_text('id,text\n1,"a, quoted"\n2,\n3,plain\n')
    (tmp_path / "d" / "2.txt").write_text("line one\n\nline three")
    (tmp_path / "d" / "_skipped.txt").write_text("not read\n")
    source = Source(discover(tmp_path / "d"), id_field=None)
    rows = list(read_rows(source))
    assert [r.number for r in rows] == list(range(6))
    assert [r.text for r in rows][:1] == ["a, quoted"] and rows[3].text == "line one" and rows[4].text == ""
    assert count_rows(source) == 6
    with pytest.raises(CorpusError, match="no column 'body'"):
        list(read_rows(Source(discover(tmp_path / "d" / "1.csv"), text_field="body")))
    with pytest.raises(CorpusError, match="unknown format"):
        (tmp_path / "x.xml").write_text("<a/>")
        discover(tmp_path / "x.xml")


def test_sparse_and_predict_tasks(tmp_path):
    texts = documents(40, 0, seed=2)
    pq.write_table(pa.table({"body": texts, "key": list(range(100, 140))}), tmp_path / "c.parquet")
    splade_dir = make_model("bert", head="masked_lm")
    splade = load_cached(splade_dir, pooling="splade")
    options = dict(input=str(tmp_path / "c.parquet"), text_field="body", id_field="key",
                   load_options={"pooling": "splade", "max_batch_tokens": 256})
    run_local(CorpusJob(model_id=str(splade_dir), output=str(tmp_path / "s"), task=Task.SPARSE, **options),
              model=splade, progress=False)
    out = read_output(tmp_path / "s")
    assert out["id"][0] == "100"
    expected = splade.embed_sparse(texts)
    for indices, values, entries in zip(out["indices"], out["values"], expected):
        assert indices == [e["index"] for e in entries]
        np.testing.assert_allclose(values, [e["value"] for e in entries], rtol=1e-6)
    classifier_dir = make_model("bert", head="classification", num_labels=3)
    classifier = load_cached(classifier_dir)
    options["load_options"] = {"max_batch_tokens": 256}
    run_local(CorpusJob(model_id=str(classifier_dir), output=str(tmp_path / "p"), task=Task.PREDICT, **options),
              model=classifier, progress=False)
    out = read_output(tmp_path / "p")
    for labels, scores, ranked in zip(out["labels"], out["scores"], classifier.predict([[t] for t in texts])):
        assert labels == [r["label"] for r in ranked]
        np.testing.assert_allclose(scores, [r["score"] for r in ranked], rtol=1e-6)


def test_output_of_another_job_is_refused(tmp_path, folder, model):
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\ntwo\n")
    run_local(job(folder, corpus, tmp_path / "out"), model=model, progress=False)
    again = run_local(job(folder, corpus, tmp_path / "out"), model=model, progress=False)
    assert again.counts.documents == 2 and again.shards_written == 0  # complete: nothing redone
    with pytest.raises(OutputError, match="another job.*task_options"):
        run_local(job(folder, corpus, tmp_path / "out", task_options=TaskOptions(dimensions=8)), model=model,
                  progress=False)
    assert cli.main(["--model-id", str(folder), "--input", str(tmp_path / "nowhere"), "--output",
                     str(tmp_path / "o2")]) == cli.EXIT_ERROR


def test_cli_passes_every_option_through():
    args = cli.build_parser().parse_args(
        ["--input", "i", "--output", "o", "--dtype", "bfloat16", "--pooling", "cls", "--dimensions", "16",
         "--normalize", "false", "--prompt-name", "query", "--chunk-long-inputs", "--chunk-overlap", "4",
         "--task", "predict", "--raw-scores", "--id-field", "k", "--attention", "xla", "--packing", "false"])
    job = cli.job_from_args(args)
    assert job.load_options["dtype"] == "bfloat16" and job.load_options["pooling"] == "cls"
    assert job.load_options["chunk_long_inputs"] is True and job.load_options["chunk_overlap"] == 4
    assert job.load_options["packing"] is False and job.load_options["attention"] == "xla"
    assert job.task_options == TaskOptions(normalize=False, prompt_name="query", dimensions=16, raw_scores=True)
    assert job.task is Task.PREDICT and job.id_field == "k"
