"""Engine mode: `tei_jax` against its peers on the same weights and inputs.

The peers are sentence-transformers (torch) and ONNX Runtime on a torch.onnx export of the same
weights (`onnx_peer.py`: what TEI's own CPU backend runs); `peers` picks any of them. All load
the same folder in this process, get the same texts in the same client batches, are warmed up
on the whole workload first, and then run alternating rounds (forward order on even rounds,
reversed on odd ones) so background noise falls on all. Ratios are against the best peer
(highest median tokens/s) of the run.

A round is one pass over the workload, or with `round_seconds` as many whole passes as fill
that much wall time: on a shared machine a 1.5 s pass catches a load spike whole, while
passes repeated for a few seconds average it out. The same rule applies to every system, so
a fast system runs more passes in a round, never a different workload.

Several attention implementations can run side by side (`attention="xla,cudnn,pallas"`): each
is its own system `tei-jax[xla]`, ..., measured in the same rounds against the same peer. One
that fails to load or to warm up is recorded under `failed_systems` and the others go on, so a
broken kernel costs its own numbers only.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..batching import padding_efficiency
from . import flops, onnx_peer, presets, workloads
from .profile import profile_embed
from .progress import Progress, Silent
from .stats import percentiles_ms, summarize_rounds

OURS, PEER = "tei-jax", "sentence-transformers"
ONNX = onnx_peer.NAME
PEERS = (PEER, ONNX)


@dataclasses.dataclass
class EngineOptions:
    preset: str = "minilm"
    workload: str = "mixed"
    count: int = 512
    batch_size: int = 32
    rounds: int = 3
    round_seconds: float = 0.0  # each round repeats whole workload passes for at least this long
    dtype: str | None = None  # ours; default float32 on CPU, bfloat16 on accelerators
    peers: tuple[str, ...] = (PEER,)  # any of PEERS, in this order in the table; () for none
    peer_dtype: str | None = None  # default float32 on CPU, float16 on GPU
    peer_batch_size: int = 32  # sentence-transformers' own encode batch size (its default)
    seed: int = 0
    attention: str = "auto"  # one implementation, or several separated by commas
    max_batch_tokens: int | None = None  # tei_jax.load's cap (its default 16384 when None)
    work_dir: Path | None = None
    allow_cpu: bool = False
    status_file: Path | None = None  # the current phase is written here (read after a hang)
    trace_dir: Path | None = None  # one more round of each tei-jax system under jax.profiler
    # Device counts: data-parallel sizes separated by commas ("1,2,4,8"; "" = tei_jax.load's
    # default, every device), each measured as its own system; tensor parallelism for all.
    data_parallel_size: str = ""
    tensor_parallel_size: int = 1

    @property
    def attentions(self) -> list[str]:
        names = [a.strip() for a in self.attention.split(",") if a.strip()]
        return names or ["auto"]

    @property
    def data_parallel_sizes(self) -> list[int | None]:
        sizes = [int(n) for n in str(self.data_parallel_size).split(",") if n.strip()]
        return sizes or [None]

    @property
    def variants(self) -> list[tuple[str, int | None]]:
        """(attention, data-parallel size) of every tei-jax system."""
        return [(a, dp) for a in self.attentions for dp in self.data_parallel_sizes]


@dataclasses.dataclass
class System:
    """One library under test: embeds a list of texts and says how much padding it computed."""

    name: str
    dtype: str
    embed: Callable[[list[str]], np.ndarray]
    padding_efficiency: float
    compile_count: Callable[[], int] | None = None
    details: dict | None = None  # how a peer was set up (e.g. the ONNX export's fusions)


def chunks(items: Sequence, size: int) -> list[list]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def system_name(attention: str, options: EngineOptions, data_parallel_size: int | None = None) -> str:
    """`tei-jax` for a single system (as before); among several `tei-jax[pallas]`,
    `tei-jax[dp=4]` or `tei-jax[pallas,dp=4]`, naming what differs."""
    parts = []
    if len(options.attentions) > 1:
        parts.append(attention)
    if len(options.data_parallel_sizes) > 1:
        parts.append(f"dp={data_parallel_size}")
    return f"{OURS}[{','.join(parts)}]" if parts else OURS


def load_ours(folder: Path, options: EngineOptions, attention: str | None = None,
              data_parallel_size: int | None = None):
    """tei_jax's Model for the folder, with the bench's dtype, attention, batch cap and devices."""
    import tei_jax

    kwargs = {} if options.max_batch_tokens is None else {"max_batch_tokens": options.max_batch_tokens}
    return tei_jax.load(str(folder), dtype=options.dtype, attention=attention or options.attentions[0],
                        data_parallel_size=data_parallel_size, tensor_parallel_size=options.tensor_parallel_size,
                        **kwargs)


def ours_system(model, options: EngineOptions, texts: list[str], name: str = OURS) -> tuple[System, list[int]]:
    """tei_jax as a System, and its exact token lengths for the texts; padding efficiency is
    over the same client batches (the engine plans each embed call on its own)."""
    lengths = [len(model.tokenizer.encode(t, truncate=model.auto_truncate)) for t in texts]
    plans = [batch for group in chunks(lengths, options.batch_size) for batch in model.engine.policy.plan(group)]
    system = System(name, model.dtype, lambda batch: model.embed(batch), padding_efficiency(plans),
                    lambda: model.compile_count)
    return system, lengths


def write_status(options: EngineOptions, phase: str) -> None:
    """Record the phase in progress, so whoever kills a hung run can tell where it hung."""
    if options.status_file is not None:
        path = Path(options.status_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"phase": phase, "time": time.time()}) + "\n")


def agreement(ours: np.ndarray, peer: np.ndarray) -> dict:
    """How close two systems' (normalised) vectors are: max abs difference, least cosine."""
    a, b = np.asarray(ours, np.float64), np.asarray(peer, np.float64)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    return {"max_abs_diff": float(np.max(np.abs(a - b))), "min_cosine": float(np.min(cos))}


def _short_error(error: BaseException) -> str:
    lines = traceback.format_exception_only(type(error), error)
    return "".join(lines).strip()[-2000:]


def peer_padding_efficiency(texts: list[str], lengths: list[int], client_batch: int, peer_batch: int,
                            by_tokens: bool = False) -> float:
    """Real / computed tokens for a sort-and-pad peer: within each call it sorts texts by
    character length (sentence-transformers) or token count (`by_tokens`, the ONNX peer),
    longest first, splits them into forwards of `peer_batch` and pads each forward to its
    longest member."""
    computed = 0
    for start in range(0, len(texts), client_batch):
        call = list(range(start, min(start + client_batch, len(texts))))
        order = sorted(call, key=(lambda i: -lengths[i]) if by_tokens else (lambda i: -len(texts[i])))
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


def load_onnx_peer(folder: Path, options: EngineOptions, max_length: int, texts: list[str],
                   lengths: list[int]) -> System:
    """ONNX Runtime on a torch.onnx export of the same folder, float32, every core, sorted
    forwards of `peer_batch_size` inside each client call (its padding counted like the other peer's,
    by token length)."""
    embed, details = onnx_peer.load(folder, max_length, options.peer_batch_size, options.work_dir)
    efficiency = peer_padding_efficiency(texts, lengths, options.batch_size, options.peer_batch_size,
                                         by_tokens=True)
    return System(ONNX, "float32", embed, efficiency, details=details)


def time_round(system: System, batches: list[list[str]], min_seconds: float = 0.0) -> tuple[float, list[float], int]:
    """Wall seconds, per-call latencies and whole passes over `batches`: one pass, or as many
    as it takes to fill `min_seconds`."""
    latencies = []
    passes = 0
    start = time.perf_counter()
    while True:
        for batch in batches:
            t0 = time.perf_counter()
            system.embed(batch)
            latencies.append(time.perf_counter() - t0)
        passes += 1
        wall = time.perf_counter() - start
        if wall >= min_seconds:
            return wall, latencies, passes


def trace_round(system: System, batches: list[list[str]], root: Path) -> Path:
    """One more (untimed) round under jax.profiler, for TensorBoard / Perfetto; returns its folder."""
    import jax

    folder = root / system.name.replace("[", "-").replace("]", "")
    folder.mkdir(parents=True, exist_ok=True)
    with jax.profiler.trace(str(folder)):
        time_round(system, batches)
    return folder


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
    best = best_peer(results)
    if best is not None:
        peer = results[best]
        for name, entry in results.items():
            entry["ratio_to_peer"] = entry["tokens_per_s"] / peer["tokens_per_s"]
            entry["ratio_to_peer_best"] = entry["tokens_per_s_best"] / peer["tokens_per_s_best"]
            if name not in PEERS:
                entry["ratio_to_peers"] = {p: entry["tokens_per_s"] / results[p]["tokens_per_s"]
                                           for p in PEERS if p in results}
        peer["ratio_to_peer"] = peer["ratio_to_peer_best"] = 1.0
    return results


def best_peer(results: dict) -> str | None:
    """The peer with the highest median tokens/s: the one every ratio is taken against."""
    peers = [name for name in PEERS if name in results]
    return max(peers, key=lambda name: results[name]["tokens_per_s"]) if peers else None


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
    write_status(options, "preset")
    folder = presets.materialize(preset, options.work_dir, options.seed)
    failed: dict[str, str] = {}
    loaded = []  # (system name, attention, model)
    for attention, data_parallel_size in options.variants:
        name = system_name(attention, options, data_parallel_size)
        say(f"loading {name}")
        write_status(options, f"load:{name}")
        try:
            loaded.append((name, attention, load_ours(folder, options, attention, data_parallel_size)))
        except Exception as error:  # noqa: BLE001 - recorded; the other implementations go on
            failed[name] = f"load: {_short_error(error)}"
            say(f"{name} failed to load: {failed[name]}")
    if not loaded:
        raise RuntimeError(f"no tei-jax system could be loaded: {failed}")
    first_model = loaded[0][2]
    max_length = first_model.max_input_length
    work = workloads.make_workload(options.workload, options.count, folder, max_length, options.seed)
    systems, models, lengths = [], {}, None
    for name, _, model in loaded:
        system, lengths = ours_system(model, options, work.texts, name)
        systems.append(system)
        models[name] = model
    for peer_name in options.peers:
        say(f"loading {peer_name}")
        write_status(options, f"load:{peer_name}")
        try:
            if peer_name == PEER:
                systems.append(load_peer(folder, options, max_length, work.texts, lengths))
            else:
                systems.append(load_onnx_peer(folder, options, max_length, work.texts, lengths))
        except Exception as error:  # noqa: BLE001 - ours are still measured
            failed[peer_name] = f"load: {_short_error(error)}"
            say(f"{peer_name} failed to load: {failed[peer_name]}")
    batches = chunks(work.texts, options.batch_size)
    tokens = int(sum(lengths))
    useful_flops = flops.workload_flops(folder, lengths)

    say("warming up (whole workload once on each system)")
    first, ready = {}, []
    for system in systems:
        write_status(options, f"warmup:{system.name}")
        try:
            first[system.name] = system.embed(batches[0])
            time_round(system, batches)
            ready.append(system)
        except Exception as error:  # noqa: BLE001 - e.g. a kernel that does not compile here
            failed[system.name] = f"warmup: {_short_error(error)}"
            say(f"{system.name} failed while warming up: {failed[system.name]}")
    systems = ready
    ours_systems = [s for s in systems if s.name not in PEERS]
    if not ours_systems:
        raise RuntimeError(f"no tei-jax system survived warmup: {failed}")
    agreements = {s.name: {p: agreement(first[s.name], first[p]) for p in PEERS if p in first}
                  for s in ours_systems}
    agreements = {name: by_peer for name, by_peer in agreements.items() if by_peer}
    compiles_before = {s.name: s.compile_count() for s in ours_systems}

    per_system = {s.name: {"rounds": [], "latencies": []} for s in systems}
    for index in range(options.rounds):
        order = systems if index % 2 == 0 else systems[::-1]
        for system in order:
            progress.step(f"round {index + 1}/{options.rounds}: {system.name}")
            write_status(options, f"round{index + 1}:{system.name}")
            wall, latencies, passes = time_round(system, batches, options.round_seconds)
            per_system[system.name]["latencies"].extend(latencies)
            per_system[system.name]["rounds"].append({
                "seconds": wall, "passes": passes, "tokens_per_s": tokens * passes / wall,
                "sequences_per_s": len(work.texts) * passes / wall})

    phase_profile = None
    if profile:
        say("profiling tei-jax phase by phase")
        write_status(options, "profile")
        phase_profile = profile_embed(models[ours_systems[0].name], batches, repeats=max(1, min(options.rounds, 3)))

    traces = {}
    if options.trace_dir is not None:
        for system in ours_systems:
            write_status(options, f"trace:{system.name}")
            traces[system.name] = str(trace_round(system, batches, Path(options.trace_dir)))

    results = summarize(systems, per_system, len(work.texts), useful_flops, peak)
    for name, entry in results.items():
        if name in agreements:
            entry["agreement_vs_peer"] = agreements[name].get(PEER) or next(iter(agreements[name].values()))
            entry["agreement_vs_peers"] = agreements[name]
        details = next((s.details for s in systems if s.name == name), None)
        if details:
            entry["setup"] = details
        if name in models:
            entry["attention"] = next(a for n, a, _ in loaded if n == name)
            entry["compiled_shapes"] = models[name].compile_count
            mesh = models[name].placement
            entry.update(devices=mesh.data_size * mesh.model_size, data_parallel_size=mesh.data_size,
                         tensor_parallel_size=mesh.model_size)
    compiles = {s.name: s.compile_count() - compiles_before[s.name] for s in ours_systems}
    write_status(options, "done")
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
        "max_batch_tokens": options.max_batch_tokens,
        "rounds": options.rounds,
        "round_seconds": options.round_seconds,
        "headline": "median over alternating rounds (best round also given)"
                    + (f", each round at least {options.round_seconds:g} s of whole passes per system"
                       if options.round_seconds else ""),
        "backend": jax.default_backend(),
        "attention": options.attention,
        "data_parallel_size": options.data_parallel_size,
        "tensor_parallel_size": options.tensor_parallel_size,
        "compiles_during_timing": sum(compiles.values()),
        "compiles_during_timing_by_system": compiles,
        "max_abs_diff_vs_peer": max((a["max_abs_diff"] for by_peer in agreements.values()
                                     for a in by_peer.values()), default=None),
        "min_cosine_vs_peer": min((a["min_cosine"] for by_peer in agreements.values()
                                   for a in by_peer.values()), default=None),
        "peers": [name for name in PEERS if name in results],
        "best_peer": best_peer(results),
        "failed_systems": failed,
        "model_flops": useful_flops,
        "systems": results,
        "profile": phase_profile,
        "traces": traces,
    }
