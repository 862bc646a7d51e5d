"""Server mode: HTTP load at our server and at infinity-emb serving the same model folder,
and with `protocols` including "grpc", tei.v1 load at our server's gRPC port (unary Embed
calls, and one EmbedStream per client) from the same process, model and queue.

The servers run side by side (started once, warmed up), and the measured rounds rotate
through every target (each round starts one later). Each request carries `batch_size` texts
from the workload; clients are closed-loop (see loadgen.py and grpc_loadgen.py).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from ..config import load_spec
from . import grpc_loadgen, loadgen, presets, servers, workloads
from .progress import Progress, Silent
from .stats import percentiles_ms, summarize_rounds

OURS, PEER = "tei-jax", "infinity-emb"
PROTOCOLS = ("http", "grpc")
GRPC_UNARY, GRPC_STREAM = f"{OURS} grpc", f"{OURS} grpc-stream"


@dataclasses.dataclass
class ServerOptions:
    preset: str = "minilm"
    workload: str = "short"
    count: int = 1024  # distinct texts cycled through by the clients
    batch_size: int = 1  # texts per request
    batch_size_max: int | None = None  # if set, each request carries batch_size..batch_size_max texts (seeded)
    concurrency: int = 32
    duration: float | None = 20.0
    requests: int | None = None
    rounds: int = 3
    warmup_seconds: float = 5.0
    dtype: str | None = None
    peer: bool = True
    seed: int = 0
    startup_timeout: float = 900.0
    ours_args: tuple[str, ...] = ()
    peer_args: tuple[str, ...] = ()
    peer_engine: str = "torch"  # infinity-emb's --engine: torch, or optimum (ONNX Runtime on an export we write)
    router: tuple[str, ...] = ()  # command that starts our server (default: servers.router_command())
    work_dir: Path | None = None
    allow_cpu: bool = False
    protocols: tuple[str, ...] = ("http",)  # "grpc": also (or only) our gRPC port, unary and stream


def drive(target, bodies, concurrency: int, duration: float | None = None, requests: int | None = None) -> dict:
    """Closed-loop load at one target, over HTTP or gRPC."""
    if isinstance(target, grpc_loadgen.GrpcTarget):
        return grpc_loadgen.drive(target, bodies, concurrency, duration=duration, requests=requests)
    return loadgen.drive(target.port, target.path, bodies, concurrency, duration=duration, requests=requests)


def _device() -> str:
    import jax

    return "cpu" if jax.default_backend() == "cpu" else "cuda"


def request_bounds(count: int, size: int, size_max: int | None, seed: int = 0) -> list[tuple[int, int]]:
    """[start, end) of each request's texts: `size` each, or sizes drawn uniformly from
    size..size_max (the same for every server, from the seed)."""
    if size_max is None or size_max <= size:
        return [(i, min(i + size, count)) for i in range(0, count, size)]
    rng = np.random.default_rng(seed + 7)
    bounds, start = [], 0
    while start < count:
        end = min(count, start + int(rng.integers(size, size_max + 1)))
        bounds.append((start, end))
        start = end
    return bounds


def run(options: ServerOptions, progress: Progress | None = None) -> dict:
    progress = progress or Silent()
    say = progress.note
    preset = presets.PRESETS[options.preset]
    warning = presets.check_device(preset, _device(), options.allow_cpu)
    if warning:
        say(warning)
    folder = presets.materialize(preset, options.work_dir, options.seed)
    max_length = load_spec(folder).max_input_length
    work = workloads.make_workload(options.workload, options.count, folder, max_length, options.seed)
    bounds = request_bounds(len(work.texts), options.batch_size, options.batch_size_max, options.seed)
    groups = [work.texts[a:b] for a, b in bounds]
    group_tokens = [sum(work.lengths[a:b]) for a, b in bounds]
    group_sizes = [b - a for a, b in bounds]
    log_dir = Path(tempfile.mkdtemp(prefix="tei-jax-bench-logs-"))

    started: list[servers.ServerProcess] = []
    targets: list[servers.Target] = []
    startup: dict[str, float] = {}
    unknown = set(options.protocols) - set(PROTOCOLS)
    if unknown or not options.protocols:
        raise ValueError(f"protocols must be among {PROTOCOLS}, got {options.protocols}")
    grpc_port = servers.free_port() if "grpc" in options.protocols else None
    ours_args = [*options.ours_args, *(["--grpc-port", str(grpc_port)] if grpc_port else [])]
    try:
        say("starting tei-jax server (it compiles its shapes before answering)")
        process, target = servers.start_ours(folder, servers.free_port(), log_dir, options.dtype,
                                             ours_args, options.router or None)
        started.append(process)
        startup[OURS] = process.wait_ready(target, options.startup_timeout)
        http_target = target
        if "http" in options.protocols:
            targets.append(target)
        if grpc_port:
            targets += [grpc_loadgen.GrpcTarget(GRPC_UNARY, grpc_port, grpc_loadgen.UNARY),
                        grpc_loadgen.GrpcTarget(GRPC_STREAM, grpc_port, grpc_loadgen.STREAM)]
        if options.peer and "http" in options.protocols:
            if servers.find_infinity() is None:
                say("infinity-emb is not installed: measuring tei-jax alone")
            else:
                say("starting infinity-emb")
                peer_folder = folder
                if options.peer_engine == "optimum":
                    say("exporting the model to ONNX for infinity-emb's optimum engine")
                    peer_folder = servers.folder_with_onnx(folder, log_dir / "onnx-model")
                process, target = servers.start_infinity(peer_folder, servers.free_port(), log_dir, _device(),
                                                         options.peer_args, engine=options.peer_engine)
                started.append(process)
                startup[PEER] = process.wait_ready(target, options.startup_timeout)
                targets.append(target)

        bodies = {t.name: [t.body(g) for g in groups] for t in targets}
        for target in targets:
            say(f"warming up {target.name} under load ({options.warmup_seconds:.0f}s)")
            drive(target, bodies[target.name], options.concurrency, duration=options.warmup_seconds)

        per_system = {t.name: {"rounds": [], "latencies": []} for t in targets}
        for index in range(options.rounds):
            shift = index % len(targets)
            order = targets[shift:] + targets[:shift]  # each target leads a round in turn
            for target in order:
                progress.step(f"round {index + 1}/{options.rounds}: {target.name}")
                outcome = drive(target, bodies[target.name], options.concurrency,
                                duration=options.duration, requests=options.requests)
                if outcome["failed"]:
                    say(f"{target.name}: {outcome['failed']} failed requests ({', '.join(outcome['failure_kinds'])})")
                done = outcome["completed"]
                tokens = sum(group_tokens[i % len(group_tokens)] for i in range(done))
                per_system[target.name]["latencies"].extend(outcome["latencies"])
                per_system[target.name]["rounds"].append({
                    "seconds": outcome["seconds"], "completed": done, "failed": outcome["failed"],
                    "requests_per_s": done / outcome["seconds"],
                    "sequences_per_s": sum(group_sizes[i % len(group_sizes)] for i in range(done)) / outcome["seconds"],
                    "tokens_per_s": tokens / outcome["seconds"]})
        padding = servers.scrape_metric(http_target.port, "padding_efficiency")
    finally:
        for process in reversed(started):
            process.stop()

    results = {}
    for target in targets:
        data = per_system[target.name]
        rate = summarize_rounds(data["rounds"], "requests_per_s")
        results[target.name] = {
            "system": target.name,
            "requests_per_s": rate["median"],
            "requests_per_s_best": rate["best"],
            "sequences_per_s": summarize_rounds(data["rounds"], "sequences_per_s")["median"],
            "tokens_per_s": summarize_rounds(data["rounds"], "tokens_per_s")["median"],
            "failed": sum(r["failed"] for r in data["rounds"]),
            "startup_seconds": startup.get(target.name),
            "rounds": data["rounds"],
            **percentiles_ms(data["latencies"]),
            "protocol": "grpc" if isinstance(target, grpc_loadgen.GrpcTarget) else "http",
        }
    if OURS in results:
        results[OURS]["padding_efficiency"] = padding
        for name in (GRPC_UNARY, GRPC_STREAM):
            if name in results:
                results[name]["ratio_to_http"] = results[name]["requests_per_s"] / results[OURS]["requests_per_s"]
    if PEER in results and OURS in results:
        results[OURS]["ratio_to_peer"] = results[OURS]["requests_per_s"] / results[PEER]["requests_per_s"]
        results[PEER]["ratio_to_peer"] = 1.0
        results[OURS]["ratio_to_peer_best"] = results[OURS]["requests_per_s_best"] / results[PEER]["requests_per_s_best"]
        results[PEER]["ratio_to_peer_best"] = 1.0
    return {
        "mode": "server",
        "preset": preset.name,
        "preset_description": preset.description,
        "model_dir": str(folder),
        "workload": {"name": work.name, "count": len(work.texts), "tokens": work.tokens,
                     "mean_tokens": work.tokens / len(work.texts), "note": work.note, "seed": options.seed},
        "batch_size": options.batch_size,
        "batch_size_max": options.batch_size_max,
        "concurrency": options.concurrency,
        "duration_s": options.duration,
        "requests": options.requests,
        "rounds": options.rounds,
        "protocols": list(options.protocols),
        "headline": "median over rounds in rotating order (best round also given)",
        "server_logs": str(log_dir),
        "commands": {p.name: p.command for p in started},
        "peer_version": servers.infinity_version(servers.find_infinity()) if PEER in results else None,
        "peer_engine": options.peer_engine if PEER in results else None,
        "systems": results,
    }
