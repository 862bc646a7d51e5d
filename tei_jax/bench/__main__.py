"""`python -m tei_jax.bench`: see `--help` and bench/README.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import corpus_mode, engine_mode, machine, presets, report, server_mode, startup_mode, workloads
from .progress import Progress


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tei_jax.bench", description=(
        "Throughput and latency of tei-jax against sentence-transformers (engine mode) or "
        "infinity-emb (server mode) on the same weights and inputs, in one run."))
    p.add_argument("--mode", choices=("engine", "server", "corpus", "startup"), default="engine",
                   help="corpus: the tei_jax.embed corpus job (and on Ray) against sentence-transformers' encode; "
                        "startup: seconds to /health 200 and to a first embed, cold and warm, against "
                        "sentence-transformers' import + load + first encode")
    p.add_argument("--parts", nargs="+", choices=startup_mode.PARTS, default=list(startup_mode.PARTS),
                   help="startup: what to start (server, library, peer)")
    p.add_argument("--preset", choices=sorted(presets.PRESETS), default="minilm")
    p.add_argument("--workload", choices=workloads.WORKLOADS, default="mixed")
    p.add_argument("--count", type=int, default=None,
                   help="texts in the workload (engine default 512, 64 for fixed512; server default 1024; "
                        "corpus default 20000)")
    p.add_argument("--no-ray", action="store_true", help="corpus: skip the Ray Data row")
    p.add_argument("--batch-size", type=int, default=None,
                   help="texts per embed call (engine, default 32) or per HTTP request (server, default 1)")
    p.add_argument("--rounds", type=int, default=3, help="alternating measured rounds per system")
    p.add_argument("--round-seconds", type=float, default=0.0,
                   help="engine: each round repeats whole passes over the workload for at least this many "
                        "seconds per system (default 0: one pass), so a load spike is averaged, not caught whole")
    p.add_argument("--duration", type=float, default=None, help="server: seconds per round (default 20)")
    p.add_argument("--requests", type=int, default=None, help="server: requests per round instead of a duration")
    p.add_argument("--concurrency", type=int, default=32, help="server: concurrent clients")
    p.add_argument("--warmup-seconds", type=float, default=5.0, help="server: load before measuring")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="tei-jax dtype (default float32 on CPU, bfloat16 on GPU)")
    p.add_argument("--peak-size", type=int, default=None,
                   help="side of the square matmul timed for peak FLOP/s (default 8192 on accelerators, 2048 on CPU)")
    p.add_argument("--peer-dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="sentence-transformers dtype (default float32 on CPU, float16 on GPU)")
    p.add_argument("--peer-batch-size", type=int, default=32,
                   help="engine: sentence-transformers' encode batch_size inside each call (its default 32)")
    p.add_argument("--attention", default="auto",
                   help="tei-jax attention implementation (engine mode); several separated by commas "
                        "(e.g. xla,cudnn,pallas) are measured side by side against one peer")
    p.add_argument("--data-parallel-size", default="",
                   help="engine: devices a batch is split over; several separated by commas (e.g. 1,2,4,8) are "
                        "measured side by side, giving throughput per device count (default: every device)")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="JAX CPU devices for tei-jax (default: one per core, as tei_jax.load gives; 1 keeps one; "
                        "set before JAX starts, the peers' threads are not affected)")
    p.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="engine: devices each layer's heads and MLP are split over (default 1)")
    p.add_argument("--max-batch-tokens", type=int, default=None,
                   help="engine: tei_jax.load's max_batch_tokens (default 16384)")
    p.add_argument("--status-file", type=Path, default=None,
                   help="engine: write the phase in progress here (to tell where a killed run hung)")
    p.add_argument("--trace-dir", type=Path, default=None,
                   help="engine: after the timed rounds, one more round per tei-jax system under jax.profiler")
    p.add_argument("--peer", dest="peers", nargs="*", choices=engine_mode.PEERS, default=None, metavar="NAME",
                   help="measure the peer too (default). Engine mode: which peers, any of "
                        f"{', '.join(engine_mode.PEERS)} (default {engine_mode.PEER}); ratios are against the best")
    p.add_argument("--no-peer", action="store_true", help="measure tei-jax alone")
    p.add_argument("--profile", action="store_true", help="engine: also time tei-jax's phases one by one")
    p.add_argument("--no-peak", action="store_true", help="skip measuring peak matmul FLOP/s")
    p.add_argument("--router", default="", help="server: command that starts our server "
                   "(default: python -m app.cli from a checkout, else text-embeddings-router)")
    p.add_argument("--server-args", default="", help="server: extra arguments for text-embeddings-router")
    p.add_argument("--protocol", nargs="+", choices=server_mode.PROTOCOLS, default=["http"],
                   help="server: what to measure on our server, in the same run: http (and the peer), grpc "
                        "(tei.v1 Embed unary and EmbedStream, on --grpc-port of the same process), or both")
    p.add_argument("--peer-engine", choices=("torch", "optimum"), default="torch",
                   help="server: infinity-emb's --engine (optimum: ONNX Runtime on an export of the same folder)")
    p.add_argument("--batch-size-max", type=int, default=None,
                   help="server: each request carries --batch-size..--batch-size-max texts (seeded), e.g. 8 and 32")
    p.add_argument("--peer-args", default="", help="server: extra arguments for infinity_emb v2")
    p.add_argument("--startup-timeout", type=float, default=900.0, help="server: seconds to wait for readiness")
    p.add_argument("--allow-cpu", action="store_true", help="run a GPU-sized preset on CPU anyway")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, default=None, help="where random presets are written (default: temp)")
    p.add_argument("--output-dir", type=Path, default=Path("bench/results"))
    p.add_argument("--name", default=None, help="result file name without extension (default: derived)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--table", nargs="+", type=Path, metavar="JSON",
                   help="print the tables of earlier result files and exit (nothing is measured)")
    return p


def run(args: argparse.Namespace) -> dict:
    """Run one benchmark from parsed arguments; returns the result written to JSON."""
    import jax

    from ..cpu_devices import ENV, configure

    if getattr(args, "cpu_devices", None) is not None:
        os.environ[ENV] = str(args.cpu_devices)  # the servers and startups it launches inherit it
    configure()  # before anything starts JAX's backend

    args.peer = not args.no_peer
    engine_peers = () if args.no_peer else tuple(dict.fromkeys(args.peers or [engine_mode.PEER]))

    on_gpu = jax.default_backend() != "cpu"
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    peak = None if args.no_peak or args.mode == "startup" else machine.peak_matmul_flops(size=args.peak_size)
    if args.mode == "startup":
        options = startup_mode.StartupOptions(
            preset=args.preset, rounds=args.rounds, parts=tuple(args.parts), dtype=args.dtype,
            server_args=tuple(args.server_args.split()), router=tuple(args.router.split()),
            timeout=args.startup_timeout, seed=args.seed, work_dir=args.work_dir)
        progress = Progress(startup_mode.steps(options), enabled=not args.quiet)
        try:
            result = startup_mode.run(options, progress)
        finally:
            progress.close()
    elif args.mode == "corpus":
        options = corpus_mode.CorpusOptions(preset=args.preset, documents=args.count or 20_000, seed=args.seed,
                                            dtype=args.dtype, peer=args.peer, peer_batch_size=args.peer_batch_size,
                                            ray=not args.no_ray, work_dir=args.work_dir)
        progress = Progress(2 + args.peer + (not args.no_ray), enabled=not args.quiet)
        try:
            result = corpus_mode.run(options, progress)
        finally:
            progress.close()
    elif args.mode == "engine":
        count = args.count or (64 if args.workload == "fixed512" else 512)
        options = engine_mode.EngineOptions(
            preset=args.preset, workload=args.workload, count=count, batch_size=args.batch_size or 32,
            rounds=args.rounds, round_seconds=args.round_seconds, dtype=args.dtype, peers=engine_peers,
            peer_dtype=args.peer_dtype, seed=args.seed, peer_batch_size=args.peer_batch_size,
            attention=args.attention, max_batch_tokens=args.max_batch_tokens, work_dir=args.work_dir,
            data_parallel_size=args.data_parallel_size, tensor_parallel_size=args.tensor_parallel_size,
            allow_cpu=args.allow_cpu, status_file=args.status_file, trace_dir=args.trace_dir)
        progress = Progress(args.rounds * (1 + len(engine_peers)), enabled=not args.quiet)
        try:
            result = engine_mode.run(options, progress, peak, profile=args.profile)
        finally:
            progress.close()
    else:
        duration = args.duration if args.duration is not None or args.requests is not None else 20.0
        options = server_mode.ServerOptions(
            preset=args.preset, workload=args.workload, count=args.count or 1024,
            batch_size=args.batch_size or 1, concurrency=args.concurrency, duration=duration,
            requests=args.requests, rounds=args.rounds, warmup_seconds=args.warmup_seconds, dtype=args.dtype,
            peer=args.peer, seed=args.seed, startup_timeout=args.startup_timeout,
            ours_args=tuple(args.server_args.split()), peer_args=tuple(args.peer_args.split()),
            work_dir=args.work_dir, allow_cpu=args.allow_cpu, router=tuple(args.router.split()),
            batch_size_max=args.batch_size_max, peer_engine=args.peer_engine,
            protocols=tuple(dict.fromkeys(args.protocol)))
        targets = ("http" in args.protocol) * (2 if args.peer else 1) + ("grpc" in args.protocol) * 2
        progress = Progress(args.rounds * targets, enabled=not args.quiet)
        try:
            result = server_mode.run(options, progress)
        finally:
            progress.close()
    result["machine"] = machine.describe()
    result["machine"]["load_average_at_start"] = load_at_start
    result["jax_devices"] = len(jax.devices())
    result["peak_matmul"] = peak
    result["show_peak"] = on_gpu
    return result


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.table:
        for path in args.table:
            print(f"{path}:\n{report.table(report.with_ratios(json.loads(path.read_text())))}\n")
        return 0
    # Modes with their own table and no peer ratios: (table, default name before the backend).
    own_table = {"startup": (startup_mode.table, f"startup-{args.preset}"),
                 "corpus": (corpus_mode.table, f"corpus-{args.preset}-mixed")}
    if args.mode in own_table:
        table, stem = own_table[args.mode]
        result = run(args)
        print(table(result))
        name = args.name or f"{stem}-{result['machine']['jax_backend']}"
        print(f"wrote {report.write_json(result, args.output_dir, name)}")
        return 0
    result = report.with_ratios(run(args))
    name = args.name or report.default_name(result)
    print(report.table(result, show_peak=result["show_peak"]))
    if result.get("profile"):
        shares = ", ".join(f"{k} {v:.0%}" for k, v in result["profile"]["share"].items())
        print(f"tei-jax time by phase (un-overlapped): {shares}")
    path = report.write_json(result, args.output_dir, name)
    print(f"wrote {path}")
    if not args.no_plot:
        plot = report.write_plot(result, args.output_dir, name)
        if plot is not None:
            print(f"wrote {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
