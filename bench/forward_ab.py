"""A/B the wall time of compiled forms of the real engine's embed forward, in one process.

    python bench/forward_ab.py scan unrolled unrolled-distinct --rows 4 --width 256

Each variant is compiled for the same [rows, width] batch (full rows, one text per row, or
`--packed` texts of 16-48 tokens), checked against the first one (max abs difference of the
pooled vectors), then called alternately: `--rounds` rounds of `--calls` blocking calls each,
the variant order reversed every other round. It prints per variant the median and 10th
percentile ms per forward and the speed against the first variant (median, p10, and the
median of per-round ratios). On a shared box only the ratios mean anything; run it under
the quiet-box wrapper to quote figures.

Built-in variants (the last two need one scanned segment of plain layers, as BERT/MiniLM):
  scan               the engine's forward (layers scanned over weights stacked on `layers`)
  unrolled           the layers unrolled, each layer's weights a separate argument (no slicing)
  unrolled-distinct  as `unrolled`, with each layer's mask built from a segment-id value of its
                     own and the softmax scale applied to q, so no broadcast is shared by layers
`--variants-file F.py` adds the dict returned by F's `variants(context)` (name -> function
returning (forward, params)); `context` holds the model, engine, spec and this module.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import tei_jax
from tei_jax.models import layers
from tei_jax.models.attention import attend
from tei_jax.pooling import pool
from tei_jax.tasks import Task


@contextlib.contextmanager
def patched_attend(fn):
    """Trace with `fn` in place of the layers' attention entry point."""
    old = layers.attend
    layers.attend = fn
    try:
        yield
    finally:
        layers.attend = old


def traced_with(forward, attention):
    def wrapped(*args):
        with patched_attend(attention):
            return forward(*args)
    return wrapped


def distinct_attend(q, k, v, segment_ids, *, scale=None, **kw):
    """The engine's attention with the softmax scale applied to q, not to the logits, and the
    mask built from segment ids passed through an optimization barrier with q: a value of
    each layer's own, so XLA's CSE cannot merge the layers' [b, heads, q, k] broadcasts."""
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    q, segment_ids = jax.lax.optimization_barrier((q, segment_ids))
    return attend(q * jnp.asarray(scale, q.dtype), k, v, segment_ids, scale=1.0, **kw)


def plain_stack(spec) -> None:
    if (len(layers.scan_plan(spec.variants)) != 1 or spec.rotary is not None or spec.score_bias is not None
            or spec.positions not in (layers.PositionKind.ABSOLUTE, layers.PositionKind.NONE) or spec.final_norm):
        raise SystemExit("the unrolled variants handle one scanned segment of plain layers (BERT/MiniLM)")


def unrolled(ctx, distinct: bool):
    """Layers unrolled over per-layer weight arrays (split on the host: no slicing in the graph)."""
    model, spec = ctx["model"], ctx["spec"]
    plain_stack(spec)
    encoder = model.engine.params["encoder"]
    stacked = encoder[layers.block_name(0)]["layer_0"]
    params = {"embeddings": encoder["embeddings"],
              "layers": [jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)[i]), stacked)
                         for i in range(spec.num_layers)]}

    def forward(params, input_ids, type_ids, position_ids, segment_ids, slots):
        x = layers.Embeddings(spec).apply({"params": params["embeddings"]}, input_ids, type_ids, position_ids)
        for weights in params["layers"]:
            x = layers.Layer(spec).apply({"params": weights}, x, segment_ids)
        return pool(x, segment_ids, slots, model.spec.pooling)

    return (traced_with(forward, distinct_attend) if distinct else forward), params


def builtin_variants(ctx) -> dict:
    engine = ctx["model"].engine
    return {
        "scan": lambda: (engine.forward(Task.EMBED), engine.params),
        "unrolled": lambda: unrolled(ctx, distinct=False),
        "unrolled-distinct": lambda: unrolled(ctx, distinct=True),
    }


def batch(rows: int, width: int, slots: int, packed: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 20000, (rows, width)).astype(np.int32)
    if not packed:
        positions = np.tile(np.arange(width, dtype=np.int32), (rows, 1))
        segments = np.repeat(np.arange(1, rows + 1, dtype=np.int32)[:, None], width, axis=1)
        return ids, np.zeros_like(ids), positions, segments
    segments, positions, slot = np.zeros((rows, width), np.int32), np.zeros((rows, width), np.int32), 1
    for r in range(rows):
        t = 0
        while t < width and slot <= slots:
            n = min(int(rng.integers(16, 48)), width - t)
            segments[r, t:t + n], positions[r, t:t + n] = slot, np.arange(n)
            t, slot = t + n, slot + 1
    return ids, np.zeros_like(ids), positions, segments


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+")
    p.add_argument("--model", default=None, help="a model folder (default: the bundled MiniLM)")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--packed", action="store_true", help="rows of several 16-48-token texts")
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--variants-file", type=Path, default=None)
    p.add_argument("--hlo-prefix", default=None, help="write each variant's optimised HLO to PREFIX_NAME.txt")
    args = p.parse_args(argv)

    model = tei_jax.load(args.model, compile_cache="none") if args.model else tei_jax.load(compile_cache="none")
    engine = model.engine
    shape = next((s for s in engine.policy.shapes() if s.rows == args.rows and s.width == args.width), None)
    slots = shape.slots if shape else args.rows
    ctx = {"model": model, "engine": engine, "spec": engine.arch.encoder.spec, "module": sys.modules[__name__]}
    known = builtin_variants(ctx)
    if args.variants_file:
        spec = importlib.util.spec_from_file_location("forward_ab_variants", args.variants_file)
        extra = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(extra)
        known.update(extra.variants(ctx))
    arrays = batch(args.rows, args.width, slots, args.packed)

    compiled = {}
    for name in args.variants:
        forward, params = known[name]()
        start = time.perf_counter()
        fn = jax.jit(forward, static_argnums=5).lower(params, *arrays, slots).compile()
        compiled[name] = functools.partial(fn, params)
        if args.hlo_prefix:
            Path(f"{args.hlo_prefix}_{name}.txt").write_text(fn.as_text())
        print(f"compiled {name} in {time.perf_counter() - start:.1f} s", flush=True)
    reference = None
    for name, fn in compiled.items():
        out = np.asarray(fn(*arrays))
        reference = out if reference is None else reference
        print(f"{name}: max abs difference from {args.variants[0]}: {np.max(np.abs(out - reference)):.1e}")
        for _ in range(3):
            jax.block_until_ready(fn(*arrays))

    names = list(compiled)
    times = {n: [] for n in names}
    rounds = {n: [] for n in names}
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            spans = []
            for _ in range(args.calls):
                start = time.perf_counter()
                jax.block_until_ready(compiled[name](*arrays))
                spans.append(time.perf_counter() - start)
            times[name] += spans
            rounds[name].append(statistics.median(spans))
    first = names[0]
    for name in names:
        med, p10 = statistics.median(times[name]), float(np.percentile(times[name], 10))
        paired = statistics.median(a / b for a, b in zip(rounds[first], rounds[name]))
        print(f"{name:20s} median {med * 1e3:7.2f} ms  p10 {p10 * 1e3:7.2f} ms  speed vs {first}: "
              f"{statistics.median(times[first]) / med:.3f}x (p10 {np.percentile(times[first], 10) / p10:.3f}x, "
              f"paired rounds {paired:.3f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
