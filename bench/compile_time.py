"""Trace, lower and compile time per batch shape of a model family's forward pass.

    python bench/compile_time.py --out bench/results/compile-time-after.json
    python bench/compile_time.py --models minilm --shapes 1x16,8x64

Why: every (task, shape) the server serves is compiled at warmup, so compile time per shape
times the number of shapes is the start-up cost, and a layer stack traced once per layer grows
with depth. This measures the encoder forward (plus a mean pooling, so the output is small)
through the engine's seam, `models.build(spec, ...)` and `encoder.apply`, on parameters that
exist only as shapes (jax.ShapeDtypeStruct): compile time does not depend on the weights'
values, so a 1.5B decoder needs no memory for its weights. Models:

  minilm      the bundled all-MiniLM-L6-v2 config (BERT, 6 layers, hidden 384)
  bge-large   a bge-large-en-v1.5-shaped BERT (24 layers, hidden 1024, 16 heads)
  qwen2-1.5b  a Qwen2-1.5B-shaped decoder (28 layers, hidden 1536, 12 heads, 2 kv heads)

The persistent compilation cache is off, so every figure is a real compilation. One shape is
compiled first and not recorded (JAX's one-time start-up). Each shape is timed `--rounds`
times (each a fresh trace and compilation) and the least disturbed round is kept; on a shared
machine, run the before and after checkouts alternately and say the machine was shared.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout this script sits in, not an installed copy

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tei_jax import models  # noqa: E402
from tei_jax.config import load_spec  # noqa: E402

_BGE_LARGE = dict(
    model_type="bert", architectures=["BertModel"], hidden_size=1024, num_hidden_layers=24,
    num_attention_heads=16, intermediate_size=4096, vocab_size=30522, max_position_embeddings=512,
    type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=0,
)
_QWEN2_1_5B = dict(
    model_type="qwen2", architectures=["Qwen2Model"], hidden_size=1536, num_hidden_layers=28,
    num_attention_heads=12, num_key_value_heads=2, intermediate_size=8960, vocab_size=151936,
    max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu",
    use_sliding_window=False, sliding_window=32768, max_window_layers=28, tie_word_embeddings=True,
)
CONFIGS = {"bge-large": (_BGE_LARGE, "cls_token"), "qwen2-1.5b": (_QWEN2_1_5B, "lasttoken")}
DEFAULT_SHAPES = "1x16,16x64,4x256"


def model_folder(name: str, scratch: Path) -> Path:
    """A folder load_spec can read: the bundled MiniLM, or a config.json with a pooling file."""
    if name == "minilm":
        from tei_jax.hub import bundled_model_dir

        return bundled_model_dir("sentence-transformers/all-MiniLM-L6-v2")
    config, pooling = CONFIGS[name]
    folder = scratch / name
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({f"pooling_mode_{pooling}": True}))
    return folder


def abstract_params(encoder, rows: int = 1, width: int = 16):
    """The encoder's parameters as shapes only (no memory, no initializer run)."""
    ints = jnp.zeros((rows, width), jnp.int32)
    return jax.eval_shape(lambda: encoder.init(jax.random.PRNGKey(0), ints, ints, ints, ints + 1))["params"]


def measure(name: str, shapes: list[tuple[int, int]], dtype, scratch: Path, rounds: int = 1) -> dict:
    spec = load_spec(model_folder(name, scratch))
    arch = models.build(spec, dtype, "xla")
    params = abstract_params(arch.encoder)
    layers = spec.config.get("num_hidden_layers")

    def timed(rows: int, width: int) -> dict:
        def forward(params, input_ids, type_ids, position_ids, segment_ids):  # a fresh function: no trace reused
            hidden = arch.encoder.apply({"params": params}, input_ids, type_ids, position_ids, segment_ids)
            mask = (segment_ids > 0).astype(jnp.float32)[..., None]
            return jnp.sum(hidden.astype(jnp.float32) * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)

        fn = jax.jit(forward)
        ints = jax.ShapeDtypeStruct((rows, width), jnp.int32)
        start = time.perf_counter()
        traced = fn.trace(params, ints, ints, ints, ints)
        traced_at = time.perf_counter()
        lowered = traced.lower()
        lowered_at = time.perf_counter()
        lowered.compile()
        done = time.perf_counter()
        return {"rows": rows, "width": width, "trace_s": round(traced_at - start, 4),
                "lower_s": round(lowered_at - traced_at, 4), "compile_s": round(done - lowered_at, 4),
                "total_s": round(done - start, 4)}

    timed(1, 8)  # JAX start-up and this model's first trace: not recorded
    runs = {shape: [] for shape in shapes}
    for _ in range(rounds):  # rounds go over all shapes, so a burst of load hits one round of each
        for rows, width in shapes:
            runs[(rows, width)].append(timed(rows, width))
    # Per shape, the least disturbed round (lowest total): the figure on a shared machine.
    per_shape = [dict(min(r, key=lambda t: t["total_s"]), rounds_total_s=[t["total_s"] for t in r])
                 for r in runs.values()]
    mean = lambda key: round(sum(s[key] for s in per_shape) / len(per_shape), 4)  # noqa: E731
    return {"model": name, "layers": layers, "hidden": spec.hidden_size, "dtype": jnp.dtype(dtype).name,
            "rounds": rounds, "shapes": per_shape,
            "mean_per_shape": {k: mean(k) for k in ("trace_s", "lower_s", "compile_s", "total_s")}}


def machine() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()), "platform": platform.platform(),
            "jax": jax.__version__, "backend": jax.default_backend()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="minilm,bge-large,qwen2-1.5b")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="rows x width, comma separated")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--rounds", type=int, default=3, help="timings per shape; the lowest is kept")
    parser.add_argument("--label", default="", help="a note stored in the JSON (e.g. before / after)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)
    shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    result = {"label": args.label, "machine": machine(), "models": []}
    with tempfile.TemporaryDirectory(prefix="tei-jax-compile-time-") as scratch:
        for name in args.models.split(","):
            entry = measure(name, shapes, jnp.dtype(args.dtype), Path(scratch), args.rounds)
            result["models"].append(entry)
            print(f"{name:12s} {entry['layers']:3d} layers  mean per shape: "
                  + "  ".join(f"{k} {v:.3f}" for k, v in entry["mean_per_shape"].items()), flush=True)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
