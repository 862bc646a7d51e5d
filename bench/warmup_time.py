"""Warmup of a whole shape set, cold (compiled) and warm (loaded from the executable store),
for models too large to start for real on a small machine.

    python bench/warmup_time.py --models bge-base,qwen2-1.5b --out bench/results/warmup-time-cpu.json

Why: a server start is imports + weight load + warmup, and warmup is the part that grows with
the model and the shape set. This builds the engine the server would (same ShapePolicy as
`tei_jax.load` on this backend: 16384-token cap, 1024-token CPU batches) on parameters that
exist only as shapes, so a 1.5B decoder needs no memory for weights, then runs
`Engine.warmup` twice in one process, each time on a fresh engine (new jitted functions, so
nothing is reused in memory): cold into an empty executable store, then warm from it. It
records when the covering shapes were done (the moment /health would turn 200) and when every
shape was. Models: those of bench/compile_time.py, plus bge-base (hidden 768, 12 layers).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import compile_time  # noqa: E402
from tei_jax import compile_cache, executables, models  # noqa: E402
from tei_jax.batching import ShapePolicy  # noqa: E402
from tei_jax.config import load_spec  # noqa: E402
from tei_jax.engine import Engine  # noqa: E402
from tei_jax.model import CPU_BATCH_TOKENS  # noqa: E402

compile_time.CONFIGS.setdefault("bge-base", (dict(compile_time._BGE_LARGE, hidden_size=768, num_hidden_layers=12,
                                                  num_attention_heads=12, intermediate_size=3072), "cls_token"))


def engine_for(name: str, scratch: Path, dtype, store_root: Path) -> Engine:
    folder = compile_time.model_folder(name, scratch)
    spec = load_spec(folder)
    spec.max_input_length = min(spec.max_input_length, 512)
    arch = models.build(spec, dtype, "xla")
    params = {"encoder": compile_time.abstract_params(arch.encoder)}
    backend = jax.default_backend()
    policy = ShapePolicy(spec.max_input_length, 16384, batch_tokens=CPU_BATCH_TOKENS if backend == "cpu" else None,
                         attention_cost=ShapePolicy.attention_cost_for(spec.hidden_size, backend))
    engine = Engine(spec, arch, params, policy)
    key = executables.engine_key(engine, folder, jnp.dtype(dtype).name, "xla")
    engine.store = executables.ExecutableStore(store_root, key)
    return engine


def timed_warmup(engine: Engine) -> dict:
    start = time.perf_counter()
    marks = {}
    built = engine.warmup(covered=lambda: marks.setdefault("covered_s", time.perf_counter() - start))
    done = time.perf_counter() - start
    stats = engine.store.stats
    return {"shapes": built, "covering_shapes": engine.warmup_order()[1], "covered_s": round(marks["covered_s"], 2),
            "complete_s": round(done, 2), "loaded": stats.loaded, "compiled": stats.built}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="minilm,bge-base,qwen2-1.5b")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    compile_cache.enable("none")  # JAX's own cache off, as with the store on
    dtype = jnp.float32 if args.dtype == "float32" else jnp.bfloat16
    results = {"machine": compile_time.machine(), "dtype": args.dtype, "models": []}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            store = Path(scratch) / f"store-{name}"
            cold = timed_warmup(engine_for(name, Path(scratch), dtype, store))
            warm = timed_warmup(engine_for(name, Path(scratch), dtype, store))
            row = {"model": name, "cold": cold, "warm": warm}
            print(json.dumps(row), flush=True)
            results["models"].append(row)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
