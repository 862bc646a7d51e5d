"""Where the device time of one compiled shape goes, op by op: a `jax.profiler` trace of a few
runs, each XLA op's time summed and put in a category (projections, MLP matmuls, attention,
GELU, norms, transposes, ...) from the op's source location in the optimised HLO, and the
matmuls' rate against the machine's measured peak.

    python -m tei_jax.bench.op_profile --rows 4 --width 256 --runs 8

On XLA's CPU backend each op runs on one thread of the executor (helped by the others inside
it), so ops can overlap: the summed op time can exceed the wall time; shares are of the
summed time. Each category's busy time (the union of its ops' intervals, whatever thread ran
them) is given beside it, and the matmul rates by both: the three q/k/v dots run at once, so
their summed op time counts the shared cores three times and their rate by busy time is the
one to compare with the other matmuls.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

# Category of an op, from its HLO metadata op_name (first match wins).
CATEGORIES = (
    ("qkv projections", r"attention/(q|k|v|qkv)/"),
    ("attention out projection", r"attention/out/"),
    ("mlp up matmul", r"mlp/(up|gate)/dot_general"),
    ("mlp down matmul", r"mlp/down/dot_general"),
    ("gelu / activation", r"gelu|erf|tanh|mlp/(mul|add|div|integer_pow|up/add|gate/add)"),
    ("attention scores, softmax, values", r"/attention/"),
    ("layer norms", r"norm/"),
    ("embeddings", r"embeddings/"),
    ("pooling", r"."),
)
MATMULS = ("qkv projections", "attention out projection", "mlp up matmul", "mlp down matmul")
CONTAINERS = ("while", "conditional", "call")
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = ')
_OP_NAME = re.compile(r'metadata=\{[^}]*op_name="([^"]*)"')


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the op_name of its source (empty when it has none)."""
    names = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            source = _OP_NAME.search(line)
            names[match.group(1)] = source.group(1) if source else ""
    return names


def category(op_name: str, instruction: str) -> str:
    if "transpose" in instruction or "copy" in instruction:
        return "transposes / copies"
    if "slice" in instruction:  # a layer's weights copied out of the stack: dynamic in the
        return "scan slicing"      # scan, static ("slice_bitcast_fusion") in an unrolled stack
    for name, pattern in CATEGORIES:
        if re.search(pattern, op_name):
            return name
    return "other"


def matmul_flops(hidden: int, heads: int, head_dim: int, kv_heads: int, mlp: int, gated: bool,
                 layers: int, tokens: int) -> dict[str, float]:
    """FLOPs per category of the four matmul groups for `tokens` tokens."""
    per = {"qkv projections": 2 * hidden * (heads + 2 * kv_heads) * head_dim,
           "attention out projection": 2 * heads * head_dim * hidden,
           "mlp up matmul": 2 * hidden * mlp * (2 if gated else 1),
           "mlp down matmul": 2 * mlp * hidden}
    return {k: float(v * layers * tokens) for k, v in per.items()}


def union_seconds(intervals: list[tuple[int, int]]) -> float:
    """Seconds covered by at least one of the [start_ns, end_ns) intervals."""
    covered, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            covered += end - start
            reach = end
        elif end > reach:
            covered += end - reach
            reach = end
    return covered / 1e9


def profile_shape(model, rows: int, width: int, runs: int = 8, trace_dir: Path | None = None) -> dict:
    """Trace `runs` executions of the embed function compiled for [rows, width] (full rows of
    real tokens) and sum each op's time by category."""
    from jax.profiler import ProfileData

    from ..batching import BatchShape
    from ..tasks import Task

    engine = model.engine
    shape = next((s for s in engine.policy.shapes() if s.rows == rows and s.width == width), None)
    if shape is None:
        shape = BatchShape(rows, width, rows)
    compiled = engine._executable(Task.EMBED, shape)
    ids = np.full((rows, width), 2000, np.int32)
    types = np.zeros_like(ids)
    positions = np.tile(np.arange(width, dtype=np.int32), (rows, 1))
    segments = np.repeat(np.arange(1, rows + 1, dtype=np.int32)[:, None], width, axis=1)
    args = (engine.params, ids, types, positions, segments)
    jax.block_until_ready(compiled(*args))
    start = time.perf_counter()
    for _ in range(runs):
        out = compiled(*args)
    jax.block_until_ready(out)
    wall = time.perf_counter() - start
    folder = Path(trace_dir or tempfile.mkdtemp(prefix="tei-jax-trace-"))
    with jax.profiler.trace(str(folder)):
        for _ in range(runs):
            out = compiled(*args)
        jax.block_until_ready(out)
    names = op_names(compiled.as_text())
    spent: dict[str, float] = collections.Counter()
    ops: dict[str, float] = collections.Counter()
    intervals: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    path = sorted(glob.glob(str(folder / "**" / "*.xplane.pb"), recursive=True))[-1]
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            for event in line.events:
                name = event.name
                if name not in names or name.split(".")[0] in CONTAINERS:
                    continue
                seconds = event.duration_ns / 1e9 / runs
                kind = category(names[name], name)
                spent[kind] += seconds
                ops[name] += seconds
                intervals[kind].append((event.start_ns, event.end_ns))
    busy = {k: union_seconds(v) / runs for k, v in intervals.items()}
    total = sum(spent.values())
    spec = engine.spec.config
    hidden = spec["hidden_size"]
    heads = spec["num_attention_heads"]
    head_dim = spec.get("head_dim") or hidden // heads
    from .flops import GATED

    flops = matmul_flops(hidden, heads, head_dim, spec.get("num_key_value_heads") or heads,
                         spec["intermediate_size"], spec.get("model_type") in GATED,
                         spec["num_hidden_layers"], rows * width)
    rates = {k: flops[k] / spent[k] for k in MATMULS if spent.get(k)}
    busy_rates = {k: flops[k] / busy[k] for k in MATMULS if busy.get(k)}
    return {
        "shape": [rows, width], "runs": runs, "wall_seconds_per_run": wall / runs,
        "tokens_per_s": rows * width * runs / wall,
        "op_seconds_per_run": dict(sorted(spent.items(), key=lambda kv: -kv[1])),
        "share_of_op_time": {k: v / total for k, v in sorted(spent.items(), key=lambda kv: -kv[1])},
        "op_time_over_wall": total / (wall / runs),
        "busy_seconds_per_run": dict(sorted(busy.items(), key=lambda kv: -kv[1])),
        "busy_over_wall": union_seconds([i for v in intervals.values() for i in v]) / runs / (wall / runs),
        "matmul_flops_per_s": rates,
        "matmul_flops_per_s_busy": busy_rates,
        "matmul_seconds_share": sum(spent.get(k, 0.0) for k in MATMULS) / total,
        "top_ops": dict(sorted(((k, v) for k, v in ops.items()), key=lambda kv: -kv[1])[:15]),
        "trace_dir": str(folder),
    }


def main(argv: list[str] | None = None) -> int:
    import tei_jax

    from . import machine

    p = argparse.ArgumentParser(prog="python -m tei_jax.bench.op_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a model folder (default: the bundled MiniLM)")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--output", type=Path, default=None, help="write the result JSON here")
    args = p.parse_args(argv)
    model = tei_jax.load(args.model) if args.model else tei_jax.load()
    result = profile_shape(model, args.rows, args.width, args.runs)
    peak = machine.peak_matmul_flops()
    result["peak_matmul"] = peak
    result["matmul_fraction_of_peak"] = {k: v / peak["flops_per_s"] for k, v in result["matmul_flops_per_s"].items()}
    result["machine"] = machine.describe()
    result["matmul_fraction_of_peak_busy"] = {k: v / peak["flops_per_s"]
                                              for k, v in result["matmul_flops_per_s_busy"].items()}
    print(f"shape {args.rows}x{args.width}: {result['tokens_per_s']:.0f} tokens/s, "
          f"op time / wall {result['op_time_over_wall']:.2f}, busy / wall {result['busy_over_wall']:.2f}")
    print(f"  {'category':36s} {'op time':>6s}  {'op ms':>7s}  {'busy ms':>7s}  matmul rate by op time, by busy time")
    for name, share in result["share_of_op_time"].items():
        rate, busy_rate = result["matmul_flops_per_s"].get(name), result["matmul_flops_per_s_busy"].get(name)
        extra = (f"  {rate / 1e9:6.1f} GFLOP/s ({rate / peak['flops_per_s']:.0%}), "
                 f"{busy_rate / 1e9:6.1f} GFLOP/s ({busy_rate / peak['flops_per_s']:.0%}) of peak") if rate else ""
        print(f"  {name:36s} {share:6.1%}  {result['op_seconds_per_run'][name] * 1e3:7.2f}  "
              f"{result['busy_seconds_per_run'].get(name, 0.0) * 1e3:7.2f}{extra}")
    print(f"peak (jnp float32 {peak['size']}^2 matmul): {peak['flops_per_s'] / 1e9:.1f} GFLOP/s")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
