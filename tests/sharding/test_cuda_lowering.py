"""NVIDIA GPU lowering checked without a GPU, for every attention implementation under sharding.

The sharded forward of a tiny BERT (4 heads) and a tiny decoder (8 heads, 2 kv heads) is
lowered for CUDA at data 4 x tensor 2 and data 8 (and tensor 8 for the decoder, whose kv heads
are then replicated), with attention xla, cudnn and pallas (tests/sharding/cuda_lowering_checks.py,
one subprocess on 8 forced host devices). What must hold, read from the StableHLO:
  - batch arguments and outputs split by rows over `data`; weights over `model` when it is > 1;
  - cudnn: JAX's cuDNN fused attention (its custom-partitioning call, which XLA's partitioner
    turns into the per-device cuDNN call), with q, k and v pinned to one sharding, rows over
    `data` and heads over `model` (cuDNN's partitioner refuses them split differently);
  - pallas: the Triton call inside a shard_map over both axes, on each device's rows and heads;
  - xla: no custom call at all.
The slow test compiles the same cases with XLA's GPU compiler for a deviceless topology of 8
H100s (the CUDA PJRT plugin in a private folder: `make test-gpu-aot`) and reads the per-device
cuDNN and Triton calls and the collectives from the optimized HLO.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import sharded_models
from forced_devices import REPO, forced_devices_env, python_command
from private_site import Kind, installed_site

CHECKS = Path(__file__).parent / "cuda_lowering_checks.py"
ROWS, WIDTH = 8, 64  # the checks' batch shape
MESHES = {"bert": ([4, 2], [8, 1]), "qwen3": ([4, 2], [8, 1], [1, 8])}
QKV = '#sdy.sharding<@mesh, [{"data"}, {}, {"model"}, {}]>'
CUDNN_PARTITION = "jax._src.cudnn.fused_attention_stablehlo._dot_product_attention_fwd_partition"


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> tuple[Path, dict]:
    """The cases file for the check script, and each model's head counts."""
    folders = {name: sharded_models.MODELS[name][0]() for name in MESHES}
    cases = [{"model": str(folders[name]), "attention": attention, "mesh": mesh}
             for name, meshes in MESHES.items() for attention in ("xla", "cudnn", "pallas") for mesh in meshes
             if mesh[1] <= 2 or attention != "xla"]
    path = tmp_path_factory.mktemp("cuda-lowering") / "cases.json"
    path.write_text(json.dumps(cases))
    heads = {}
    for folder in folders.values():
        config = json.loads((folder / "config.json").read_text())
        heads[str(folder)] = (config["num_attention_heads"],
                              config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    return path, heads


def run_checks(mode: str, cases: Path, env: dict) -> list[dict]:
    out = cases.with_name(f"{mode}.json")
    done = subprocess.run(python_command(str(CHECKS), mode, str(cases), str(out)), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    records = json.loads(out.read_text())
    assert [(r["model"], r["attention"], r["mesh"]) for r in records] == \
        [(c["model"], c["attention"], c["mesh"]) for c in json.loads(cases.read_text())]
    return records


def dims(tensor_type: str) -> list[int]:
    """tensor<2x64x2x16xbf16> -> [2, 64, 2, 16]."""
    return [int(d) for d in re.match(r"tensor<([0-9x]+)x[a-z]", tensor_type).group(1).split("x")]


def test_sharded_forward_lowers_for_cuda(cases):
    path, heads = cases
    records = run_checks("lower", path, forced_devices_env(8))
    for r in records:
        (data, model), (num_heads, _) = r["mesh"], heads[r["model"]]
        where = (Path(r["model"]).name, r["attention"], r["mesh"])
        assert len(r["batch_args"]) >= 3 and all('@mesh, [{"data"}, {}]' in a for a in r["batch_args"]), where
        assert '@mesh, [{"data"}, {}' in r["result_sharding"][0], where
        assert (r["params_over_model"] > 0) == (model > 1), where
        calls = r["attention_calls"]
        if r["attention"] == "xla":
            assert calls == [] and r["manual_computations"] == [], where
        elif r["attention"] == "cudnn":
            assert calls and all(c["target"] == "CustomSPMDPartitioning" for c in calls), where
            assert all(c["partitioner"] == CUDNN_PARTITION for c in calls), where
            assert all(c["operand_shardings"] == [QKV] * 3 for c in calls), (where, calls)
        else:
            assert calls and all(c["target"] == "__gpu$xla.gpu.triton" for c in calls), where
            for call in calls:  # the kernel sees one device's rows and heads
                local = dims(call["result"])
                assert (local[0], local[1], local[2]) == (ROWS // data, WIDTH, num_heads // model), (where, call)
            assert r["manual_computations"], where
            for manual in r["manual_computations"]:
                assert '"data"' in manual["manual_axes"] and '"model"' in manual["manual_axes"], where
                assert manual["in_shardings"].count(QKV.removeprefix("#sdy.sharding")) >= 3, (where, manual)


CUDA_SITE = installed_site(Kind.CUDA)


@pytest.mark.slow  # ~30 s of XLA GPU compilation on 2 cores
@pytest.mark.skipif(CUDA_SITE is None, reason="the CUDA PJRT plugin is not installed: `make test-gpu-aot` puts "
                                              "jax-cuda12-plugin/-pjrt in .cache/cuda-site (or set TEI_JAX_CUDA_SITE)")
def test_sharded_forward_compiles_for_8_h100s(cases):
    path, heads = cases
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), str(CUDA_SITE), os.environ.get("PYTHONPATH")) if p))
    records = run_checks("compile", path, env)
    for r in records:
        (data, model), (num_heads, head_dim) = r["mesh"], heads[r["model"]]
        where = (Path(r["model"]).name, r["attention"], r["mesh"])
        assert r["platform"] == "gpu" and r["device_kind"].startswith("NVIDIA H100"), where
        # Tensor parallelism all-reduces the row-split projections; nothing is ever gathered.
        assert r["collectives"] == (["all-reduce"] if model > 1 else []), (where, r["collectives"])
        calls = r["attention_calls"]
        if r["attention"] == "xla":
            assert calls == [], where
            continue
        target = "__cudnn$fmha" if r["attention"] == "cudnn" else "__gpu$xla.gpu.triton"
        assert calls and all(c["target"].startswith(target) for c in calls), (where, calls)
        for call in calls:
            q = [int(d) for d in re.match(r"bf16\[([0-9,]+)\]", next(o for o in call["operands"] if o.startswith("bf16")))
                 .group(1).split(",")]
            assert (q[0], q[1], q[2]) == (ROWS // data, WIDTH, num_heads // model), (where, call)
            if r["attention"] == "cudnn":
                assert q[3] == head_dim, (where, call)
