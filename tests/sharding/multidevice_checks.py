"""Multi-device parity checks, run in a subprocess with JAX forced to 8 host devices.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python multidevice_checks.py MODELS.json OUT.json

MODELS.json maps a name to {"path", "tp"} (tests/sharding/sharded_models.py). For every model
the outputs at data-parallel 8, data 4 x tensor 2 (and tensor 8 where listed) are compared
with the single-device outputs; a few models repeat it with the Pallas kernel (under
shard_map). Writes one JSON record per check, so one process (one JAX start) serves them all.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np

import tei_jax
from tei_jax.errors import ModelLoadError

TEXTS = ["short", "a query about jax", "the quick brown fox jumps over the lazy dog " * 3,
         "naïve café in Zürich", "embeddings are vectors that capture meaning " * 6, "x",
         "packing puts several sequences in one row", "données et modèle", "1 2 3 4 5 6 7 8 9",
         "the cat sat on the mat", "a longer passage " * 12, "end"]
QUERY = "what is jax?"
PALLAS = ("bert", "mpnet", "jina", "qwen3", "deberta")  # padded, relative bias, ALiBi, causal + GQA, score bias


def outputs(model, name: str) -> list[np.ndarray]:
    if name == "reranker":
        ranks = model.rerank(QUERY, TEXTS, raw_scores=True)
        return [np.array([r["score"] for r in sorted(ranks, key=lambda r: r["index"])], np.float32)]
    vectors = [model.embed(TEXTS, normalize=False)]
    if name == "bert":
        vectors += model.embed_all(TEXTS[:4])
    return vectors


def sharded_check(name: str, path: str, dp: int, tp: int, attention: str, reference) -> dict:
    start = time.perf_counter()
    model = tei_jax.load(path, max_batch_tokens=256, attention=attention,
                         data_parallel_size=dp, tensor_parallel_size=tp)
    got = outputs(model, name)
    error = max(float(np.max(np.abs(a - b))) for a, b in zip(got, reference))
    split = model.sharding_info["parameters_split"]
    shapes_ok = all(s.rows % dp == 0 for (_, s) in model.engine._compiled)
    return {"model": name, "dp": dp, "tp": tp, "attention": attention, "max_abs": error,
            "params_split": split, "rows_divide": shapes_ok, "mesh": model.placement.describe()["mesh"],
            "seconds": round(time.perf_counter() - start, 2)}


def error_checks(models: dict) -> list[dict]:
    """Sizes that cannot work fail at load with the field and sizes named."""
    records = []
    for name, dp, tp in (("bert", 1, 8), ("bert", 4, 4), ("bert", 2, 3)):
        try:
            tei_jax.load(models[name]["path"], data_parallel_size=dp, tensor_parallel_size=tp)
            message = None
        except ModelLoadError as exc:
            message = str(exc)
        records.append({"error_for": f"{name} dp{dp} tp{tp}", "message": message})
    return records


def bench_check() -> dict:
    """`python -m tei_jax.bench --data-parallel-size 1,8` measures one system per device count."""
    import tempfile

    from tei_jax.bench import __main__ as bench

    with tempfile.TemporaryDirectory() as work:
        code = bench.main(["--mode", "engine", "--preset", "tiny", "--count", "8", "--batch-size", "8",
                           "--rounds", "1", "--no-peer", "--no-peak", "--no-plot", "--quiet",
                           "--data-parallel-size", "1,8", "--work-dir", f"{work}/models",
                           "--output-dir", f"{work}/out", "--name", "dp"])
        result = json.loads(open(f"{work}/out/dp.json").read())
    systems = {name: {k: entry.get(k) for k in ("devices", "data_parallel_size", "tokens_per_s")}
               for name, entry in result["systems"].items()}
    return {"bench": systems, "exit": code, "compiles_during_timing": result["compiles_during_timing"]}


def main() -> None:
    models = json.loads(open(sys.argv[1]).read())
    only = sys.argv[3].split(",") if len(sys.argv) > 3 else None
    records = [{"devices": len(jax.devices())}]
    for name, entry in models.items():
        if only and name not in only:
            continue
        single = tei_jax.load(entry["path"], max_batch_tokens=256, data_parallel_size=1,
                              devices=jax.devices()[:1])
        reference = outputs(single, name)
        configs = [(8, 1, "xla"), (4, 2, "xla")] + [(8 // tp, tp, "xla") for tp in entry["tp"] if tp not in (1, 2)]
        if name in PALLAS:
            configs.append((4, 2, "pallas"))
        for dp, tp, attention in configs:
            try:
                records.append(sharded_check(name, entry["path"], dp, tp, attention, reference))
            except Exception as exc:  # reported, and failed, by the test
                records.append({"model": name, "dp": dp, "tp": tp, "attention": attention,
                                "error": f"{type(exc).__name__}: {exc}"})
    records += error_checks(models) if not only or "bert" in only else []
    if not only:
        records.append(bench_check())
    with open(sys.argv[2], "w") as out:
        json.dump(records, out, indent=1)


if __name__ == "__main__":
    main()
