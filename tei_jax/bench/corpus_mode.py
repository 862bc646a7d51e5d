"""Corpus mode: `tei_jax.embed` over a corpus file against sentence-transformers' `encode`
over the same list of documents, and the same job on Ray Data, in one run.

The documents are the `mixed` workload (lognormal lengths, median 28 tokens) written as a
JSON Lines file. tei-jax runs the corpus job end to end (read, tokenize, embed, write Parquet
shards) after a warm-up job on a sample has compiled its shapes; sentence-transformers gets
the documents as one Python list (its best case: it sorts the whole list by length) and
writes nothing. The Ray row runs the same job on a local cluster with one engine; its
overhead is its time over the local job's, with and without starting the cluster.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from . import presets, workloads
from .engine_mode import agreement
from .progress import Progress, Silent

LOCAL, RAY, PEER = "tei-jax corpus job", "tei-jax corpus job on Ray", "sentence-transformers encode"


@dataclasses.dataclass
class CorpusOptions:
    preset: str = "minilm"
    documents: int = 20_000
    warmup_documents: int = 2_000
    seed: int = 0
    dtype: str | None = None
    peer: bool = True
    peer_batch_size: int = 32
    ray: bool = True
    ray_cpus: int = 2
    shard_size: int = 5_000
    batch_docs: int = 1024
    work_dir: Path | None = None


def _row(name: str, seconds: float, documents: int, tokens: int, efficiency: float | None, **extra) -> dict:
    return {"system": name, "seconds": round(seconds, 2), "documents": documents, "tokens": tokens,
            "documents_per_s": documents / seconds, "tokens_per_s": tokens / seconds,
            "padding_efficiency": efficiency, **extra}


def run(options: CorpusOptions, progress: Progress | None = None) -> dict:
    import tei_jax
    from ..corpus import CorpusJob, run_local

    progress = progress or Silent()
    folder = presets.materialize(presets.PRESETS[options.preset], root=options.work_dir, seed=options.seed)
    model = tei_jax.load(str(folder), dtype=options.dtype)
    work = workloads.make_workload("mixed", options.documents, folder, model.max_input_length, options.seed)
    root = Path(tempfile.mkdtemp(prefix="tei-jax-corpus-bench-", dir=options.work_dir))
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in work.texts))
    sample = root / "sample.jsonl"
    sample.write_text("".join(json.dumps({"text": t}) + "\n" for t in work.texts[:options.warmup_documents]))
    load = {"dtype": options.dtype} if options.dtype else {}

    def job(input: Path, output: str) -> CorpusJob:
        return CorpusJob(model_id=str(folder), input=str(input), output=str(root / output), load_options=load,
                         shard_size=options.shard_size, batch_docs=options.batch_docs)

    systems: dict[str, dict] = {}
    try:
        progress.note(f"warm-up: a corpus job on {options.warmup_documents} documents compiles the shapes")
        run_local(job(sample, "warmup"), model=model, progress=False)
        progress.step("tei-jax warm")
        summary = run_local(job(corpus, "local"), model=model, progress=False)
        systems[LOCAL] = _row(LOCAL, summary.embed_seconds, summary.counts.documents, summary.counts.tokens,
                              summary.counts.padding_efficiency, output_bytes=summary.output_bytes,
                              compiles_total=model.compile_count)
        progress.step("tei-jax corpus job")
        ours = _vectors(root / "local")
        if options.peer:
            vectors, seconds, efficiency = _peer(folder, work, model.max_input_length, options)
            systems[PEER] = _row(PEER, seconds, len(work.texts), work.tokens, efficiency,
                                 agreement_with_ours=agreement(ours, vectors))
            progress.step("sentence-transformers")
        if options.ray:
            systems[RAY] = _ray(job(corpus, "ray"), options, systems[LOCAL])
            progress.step("ray")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    local = systems[LOCAL]
    if PEER in systems:
        local["ratio_to_peer"] = local["tokens_per_s"] / systems[PEER]["tokens_per_s"]
    return {"mode": "corpus", "preset": options.preset, "options": {k: str(v) for k, v in
                                                                   dataclasses.asdict(options).items()},
            "workload": {"name": "mixed", "count": len(work.texts), "tokens": work.tokens,
                         "mean_tokens": work.tokens / len(work.texts), "note": work.note},
            "model": {"max_input_length": model.max_input_length, "dtype": model.dtype},
            "systems": systems}


def _vectors(folder: Path) -> np.ndarray:
    import pyarrow.dataset as pads

    table = pads.dataset(folder).to_table().sort_by("id")
    width = table.schema.field("embedding").type.list_size
    return table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, width)


def _peer(folder: Path, work, max_length: int, options: CorpusOptions) -> tuple[np.ndarray, float, float]:
    import torch
    from sentence_transformers import SentenceTransformer

    from .engine_mode import peer_padding_efficiency

    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = max_length
    with torch.inference_mode():
        model.encode(work.texts[:64], batch_size=options.peer_batch_size)  # warm-up
        start = time.perf_counter()
        vectors = model.encode(work.texts, batch_size=options.peer_batch_size, convert_to_numpy=True,
                               normalize_embeddings=True, show_progress_bar=False)
        seconds = time.perf_counter() - start
    efficiency = peer_padding_efficiency(work.texts, work.lengths, len(work.texts), options.peer_batch_size)
    return vectors, seconds, efficiency


def _ray(job, options: CorpusOptions, local: dict) -> dict:
    import ray

    from ..corpus.ray_runner import RayOptions, run_ray

    start = time.perf_counter()
    ray.init(num_cpus=options.ray_cpus, include_dashboard=False, logging_level="ERROR")
    started = time.perf_counter() - start
    try:
        summary = run_ray(job, RayOptions(), progress=False)
    finally:
        ray.shutdown()
    job_seconds = summary.seconds
    row = _row(RAY, job_seconds, summary.counts.documents, summary.counts.tokens,
               summary.counts.padding_efficiency, cluster_start_seconds=round(started, 2),
               overhead_vs_local=job_seconds / local["seconds"],
               overhead_vs_local_with_cluster_start=(job_seconds + started) / local["seconds"])
    return row


def table(result: dict) -> str:
    work = result["workload"]
    lines = [f"corpus mode: preset {result['preset']}, {work['count']:,} mixed documents "
             f"(mean {work['mean_tokens']:.1f} tokens, {work['tokens']:,} tokens)",
             f"{'system':32} {'seconds':>8} {'docs/s':>8} {'tokens/s':>9} {'pad eff':>8}  notes"]
    for row in result["systems"].values():
        notes = []
        if "ratio_to_peer" in row:
            notes.append(f"{row['ratio_to_peer']:.2f}x sentence-transformers")
        if "overhead_vs_local" in row:
            notes.append(f"{row['overhead_vs_local']:.2f}x the local job's time "
                         f"({row['overhead_vs_local_with_cluster_start']:.2f}x with the cluster start)")
        if "agreement_with_ours" in row:
            notes.append(f"min cosine with ours {row['agreement_with_ours']['min_cosine']:.6f}")
        efficiency = "-" if row["padding_efficiency"] is None else f"{row['padding_efficiency']:.1%}"
        lines.append(f"{row['system']:32} {row['seconds']:8.1f} {row['documents_per_s']:8.1f} "
                     f"{row['tokens_per_s']:9.0f} {efficiency:>8}  {'; '.join(notes)}")
    return "\n".join(lines)
