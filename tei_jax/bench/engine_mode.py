"""Engine mode: `tei_jax` against sentence-transformers on the same weights and inputs.

Both load the same folder in this process, get the same texts in the same client batches,
are warmed up on the whole workload first, and then run alternating rounds (ours first on
even rounds, the peer first on odd ones) so background noise falls on both.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..batching import padding_efficiency
from . import flops, presets, workloads
from .profile import profile_embed
from .progress import Progress, Silent
from .stats import percentiles_ms, summarize_rounds

OURS, PEER = "tei-jax", "sentence-transformers"


@dataclasses.dataclass
class EngineOptions:
    preset: str = "minilm"
    workload: str = "mixed"
    count: int = 512
    batch_size: int = 32
    rounds: int = 3
    dtype: str | None = None  # ours; default float32 on CPU, bfloat16 on accelerators
    peer: bool = True
    peer_dtype: str | None = None  # default float32 on CPU, float16 on GPU
    peer_batch_size: int = 32  # sentence-transformers' own encode batch size (its default)
    seed: int = 0
    attention: str = "auto"
    work_dir: Path | None = None
    allow_cpu: bool = False


@dataclasses.dataclass
class System:
    """One library under test: embeds a list of texts and says how much padding it computed."""

    name: str
    dtype: str
    embed: Callable[[list[str]], np.ndarray]
    padding_efficiency: float
    compile_count: Callable[[], int] | None = None


def chunks(items: Sequence, size: int) -> list[list]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def load_ours(folder: Path, options: EngineOptions):
    """tei_jax's Model for the folder, with the bench's dtype and attention choice."""
    import tei_jax

    return tei_jax.load(str(folder), dtype=options.dtype, attention=options.attention)


def ours_system(model, options: EngineOptions, texts: list[str]) -> tuple[System, list[int]]:
    """tei_jax as a System, and its exact token lengths for the texts; padding efficiency is
    over the same client batches (the engine plans each embed call on its own)."""
    lengths = [len(model.tokenizer.encode(t, truncate=model.auto_truncate)) for t in texts]
    plans = [batch for group in chunks(lengths, options.batch_size) for batch in model.engine.policy.plan(group)]
    system = System(OURS, model.dtype, lambda batch: model.embed(batch), padding_efficiency(plans),
                    lambda: model.compile_count)
    return system, lengths


def peer_padding_efficiency(texts: list[str], lengths: list[int], client_batch: int, peer_batch: int) -> float:
    """Real / computed tokens for sentence-transformers: within each call it sorts texts by
    character length (longest first), splits them into forwards of `peer_batch` and pads each
    forward to its longest member."""
    computed = 0
    for start in range(0, len(texts), client_batch):
        call = list(range(start, min(start + client_batch, len(texts))))
        order = sorted(call, key=lambda i: -len(texts[i]))
        for group in chunks(order, peer_batch):
            computed += len(group) * max(lengths[i] for i in group)
    return sum(lengths) / computed


def _use_wordpiece(model, folder: Path) -> None:
    """Random decoder presets carry MiniLM's WordPiece tokenizer, but transformers picks a
    tokenizer class from config.json's model type (Qwen2's byte-level BPE); hand
    sentence-transformers the tokenizer we wrote so both systems see the same ids."""
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(str(folder))
    module = model[0]
    if hasattr(type(module), "processor") or hasattr(module, "processor"):
        module.processor = tokenizer  # sentence-transformers >= 6
    else:
        module.tokenizer = tokenizer


def load_peer(folder: Path, options: EngineOptions, max_length: int, texts: list[str], lengths: list[int]) -> System:
    """sentence-transformers on the same folder, truncating where we do, called with the same
    client batches and its own encode batch size."""
    import torch
    from sentence_transformers import SentenceTransformer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = options.peer_dtype or ("float16" if device == "cuda" else "float32")
    model = SentenceTransformer(str(folder), device=device)
    model = model.to(getattr(torch, dtype))
    if presets.PRESETS[options.preset].family == "qwen2":
        _use_wordpiece(model, folder)
    model.max_seq_length = max_length

    def embed(batch: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return model.encode(batch, batch_size=options.peer_batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)

    efficiency = peer_padding_efficiency(texts, lengths, options.batch_size, options.peer_batch_size)
    return System(PEER, dtype, embed, efficiency)


def time_round(system: System, batches: list[list[str]]) -> tuple[float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        system.embed(batch)
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - start, latencies


def summarize(systems: list[System], per_system: dict, sequences: int, useful_flops: float,
              peak: dict | None) -> dict:
    """Per-system figures: median and best rates, latency percentiles, padding, model FLOP/s
    (and fraction of peak), and the ratio to the peer."""
    results = {}
    for system in systems:
        data = per_system[system.name]
        tokens_per_s = summarize_rounds(data["rounds"], "tokens_per_s")
        seqs_per_s = summarize_rounds(data["rounds"], "sequences_per_s")
        entry = {
            "system": system.name,
            "dtype": system.dtype,
            "tokens_per_s": tokens_per_s["median"],
            "sequences_per_s": seqs_per_s["median"],
            "tokens_per_s_best": tokens_per_s["best"],
            "rounds": data["rounds"],
            "padding_efficiency": system.padding_efficiency,
            **percentiles_ms(data["latencies"]),
        }
        entry["model_flops_per_s"] = useful_flops * entry["sequences_per_s"] / sequences
        if peak:
            entry["fraction_of_peak"] = entry["model_flops_per_s"] / peak["flops_per_s"]
        results[system.name] = entry
    if PEER in results:
        ours, peer = results[OURS], results[PEER]
        ours["ratio_to_peer"] = ours["tokens_per_s"] / peer["tokens_per_s"]
        ours["ratio_to_peer_best"] = ours["tokens_per_s_best"] / peer["tokens_per_s_best"]
        peer["ratio_to_peer"] = peer["ratio_to_peer_best"] = 1.0
    return results


def run(options: EngineOptions, progress: Progress | None = None, peak: dict | None = None,
        profile: bool = False) -> dict:
    """Measure; return a JSON-ready result (see report.py for the table)."""
    import jax

    preset = presets.PRESETS[options.preset]
    progress = progress or Silent()
    say = progress.note
    warning = presets.check_device(preset, jax.default_backend(), options.allow_cpu)
    if warning:
        say(warning)
    say(f"preparing preset {preset.name}")
    folder = presets.materialize(preset, options.work_dir, options.seed)
    say("loading tei-jax")
    model = load_ours(folder, options)
    max_length = model.max_input_length
    work = workloads.make_workload(options.workload, options.count, folder, max_length, options.seed)
    ours, lengths = ours_system(model, options, work.texts)
    systems = [ours]
    if options.peer:
        say("loading sentence-transformers")
        systems.append(load_peer(folder, options, max_length, work.texts, lengths))
    batches = chunks(work.texts, options.batch_size)
    tokens = int(sum(lengths))
    useful_flops = flops.workload_flops(folder, lengths)

    say("warming up (whole workload once on each system)")
    agreement = None
    first = [s.embed(batches[0]) for s in systems]
    for system in systems:
        time_round(system, batches)
    if len(first) == 2:
        agreement = float(np.max(np.abs(first[0] - first[1])))
    compiles_before = ours.compile_count()

    per_system = {s.name: {"rounds": [], "latencies": []} for s in systems}
    for index in range(options.rounds):
        order = systems if index % 2 == 0 else systems[::-1]
        for system in order:
            progress.step(f"round {index + 1}/{options.rounds}: {system.name}")
            wall, latencies = time_round(system, batches)
            per_system[system.name]["latencies"].extend(latencies)
            per_system[system.name]["rounds"].append({
                "seconds": wall, "tokens_per_s": tokens / wall, "sequences_per_s": len(work.texts) / wall})

    phase_profile = None
    if profile:
        say("profiling tei-jax phase by phase")
        phase_profile = profile_embed(model, batches, repeats=max(1, min(options.rounds, 3)))

    results = summarize(systems, per_system, len(work.texts), useful_flops, peak)
    return {
        "mode": "engine",
        "preset": preset.name,
        "preset_description": preset.description,
        "model_dir": str(folder),
        "workload": {"name": work.name, "count": len(work.texts), "tokens": tokens,
                     "mean_tokens": tokens / len(work.texts), "max_tokens": max(lengths),
                     "min_tokens": min(lengths), "note": work.note, "seed": options.seed},
        "batch_size": options.batch_size,
        "peer_batch_size": options.peer_batch_size,
        "rounds": options.rounds,
        "headline": "median over alternating rounds (best round also given)",
        "backend": jax.default_backend(),
        "attention": options.attention,
        "compiles_during_timing": ours.compile_count() - compiles_before,
        "max_abs_diff_vs_peer": agreement,
        "model_flops": useful_flops,
        "systems": results,
        "profile": phase_profile,
    }
