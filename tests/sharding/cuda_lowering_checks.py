"""The sharded forward lowered (and, with the CUDA plugin, compiled) for NVIDIA GPUs on a machine
without one, for the attention implementations xla, cudnn and pallas.

    python cuda_lowering_checks.py lower CASES.json OUT.json     (8 forced host devices)
    python cuda_lowering_checks.py compile CASES.json OUT.json   (jax-cuda12-plugin/-pjrt importable)

CASES.json lists {"model": folder, "attention": name, "mesh": [data, model]}. `lower` places the
model on a mesh of forced CPU devices and lowers with `lowering_platforms=("cuda",)`: StableHLO
with the shardings, the Triton call of the Pallas kernel inside its shard_map, and for cuDNN the
custom-partitioning call that XLA's partitioner later turns into the cuDNN fused attention on
each device's rows and heads. `compile` goes on to XLA's GPU compiler for a deviceless topology
of 8 H100s (the CUDA PJRT plugin describes it from TARGET_CONFIG), so the per-device cuDNN
and Triton calls and the collectives can be read from the compiled HLO. Each case's facts go
to OUT.json; tests/sharding/test_cuda_lowering.py asserts on them.
"""

from __future__ import annotations

import json
import re
import sys
from unittest import mock

import jax
from jax.extend.mlir import ir

import tei_jax
from tei_jax.batching import BatchShape
from tei_jax.kernels import flash_attention

ROWS, WIDTH = 8, 64
ATTENTION_TARGETS = ("__cudnn$", "__gpu$xla.gpu.triton", "CustomSPMDPartitioning")
# An H100 SXM as XLA's GPU compiler needs it described (a GpuTargetConfigProto, text format).
TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000 l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: 84942979072 shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 } registers_per_core_limit: 65536 registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 8 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""
ASSUMED_CUDNN = 90800  # the oldest cuDNN jax-cuda12-plugin 0.10.2 accepts (nvidia-cudnn-cu12>=9.8)


def cudnn_version_source() -> str:
    """JAX asks the CUDA plugin for cuDNN's version while tracing the cuDNN attention (and
    raises "cuDNN is not detected." without the plugin, "cuDNN not found." without libcudnn);
    the version is all it wants from it. Without one, answer the oldest version the plugin
    accepts. Returns where the version came from."""
    from jax._src.cudnn import fused_attention_stablehlo as fused  # no public form in jax 0.10.2

    try:
        fused.check_cudnn_version()
        return "installed"
    except RuntimeError:
        fused.check_cudnn_version = lambda: ASSUMED_CUDNN
        return "assumed"


def load(case: dict, on_mesh: bool = True):
    """The case's model in bfloat16 (cuDNN's dtype), on its mesh of host devices or on one."""
    mesh = dict(data_parallel_size=case["mesh"][0], tensor_parallel_size=case["mesh"][1]) if on_mesh else {}
    return tei_jax.load(case["model"], attention=case["attention"], dtype="bfloat16",
                        max_batch_tokens=4 * WIDTH, compile_cache="none", **mesh)


def lowered_facts(case: dict) -> dict:
    """Lower for CUDA on forced host devices; read the StableHLO module."""
    model = load(case)
    engine = model.engine
    shape = BatchShape(ROWS, WIDTH, engine.policy.slots_for(WIDTH))
    lowered = engine.lower(model.tasks[0], shape, platforms=("cuda",))
    module = lowered.compiler_ir("stablehlo")
    calls, manual, args, results = [], [], [], []

    def visit(op):
        name = op.name
        if name == "stablehlo.custom_call":
            target = ir.StringAttr(op.attributes["call_target_name"]).value
            if target.startswith(ATTENTION_TARGETS):
                calls.append({"target": target, "operands": [str(o.type) for o in op.operands],
                              "operand_shardings": [_constraint(o) for o in op.operands[:3]],
                              "result": str(op.results[0].type), "partitioner": _partitioner(op)})
        elif name == "sdy.manual_computation":
            manual.append({"in_shardings": str(op.attributes["in_shardings"]),
                           "manual_axes": str(op.attributes["manual_axes"])})
        elif name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == "main":
            types = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value).inputs
            args.extend(zip(map(str, types), map(str, ir.ArrayAttr(op.attributes["arg_attrs"]))))
            results.extend(str(a) for a in ir.ArrayAttr(op.attributes["res_attrs"]))
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    batch_type = f"tensor<{ROWS}x{WIDTH}xi32>"  # ids, token types, positions, segments (unused ones are pruned)
    return {"attention_calls": calls, "manual_computations": manual,
            "params_over_model": sum('"model"' in attrs for kind, attrs in args if kind != batch_type),
            "batch_args": [attrs for kind, attrs in args if kind == batch_type], "result_sharding": results}


def _partitioner(op) -> str | None:
    """For a CustomSPMDPartitioning call, the partition function JAX registered for it (the
    call holds only its key): cuDNN's fused attention, or someone else's."""
    if ir.StringAttr(op.attributes["call_target_name"]).value != "CustomSPMDPartitioning":
        return None
    from jax._src import custom_partitioning  # no public form in jax 0.10.2 (the registry is private)

    key = ir.StringAttr(op.attributes["backend_config"]).value.encode()
    partition = custom_partitioning._sharding_callbacks[key].partition
    return f"{partition.__module__}.{partition.__qualname__}"


def _constraint(value) -> str | None:
    """The sharding a value was pinned to (sdy.sharding_constraint), else None."""
    owner = value.owner
    if isinstance(owner, ir.Operation) or hasattr(owner, "operation"):
        op = owner.operation if hasattr(owner, "operation") else owner
        if op.name == "sdy.sharding_constraint":
            return str(op.attributes["sharding"])
    return None


def compiled_facts(case: dict, devices) -> dict:
    """Compile for the deviceless GPU topology; read the optimized HLO."""
    import dataclasses

    from tei_jax.engine import Engine
    from tei_jax.sharding import Placement

    cpu = load(case, on_mesh=False).engine  # read on the CPU, placed on the topology
    placement = Placement.on(devices[: case["mesh"][0] * case["mesh"][1]], *case["mesh"]).for_architecture(cpu.arch)
    params = placement.abstract(cpu.arch.param_axes(), cpu.params)
    policy = dataclasses.replace(cpu.policy, row_multiple=placement.data_size)
    engine = Engine(cpu.spec, cpu.arch, params, policy, placement=placement)
    shape = BatchShape(ROWS, WIDTH, engine.policy.slots_for(WIDTH))
    hlo = engine.lower(engine.tasks[0], shape).compile().as_text()
    calls = []
    for line in hlo.splitlines():
        target = re.search(r'custom_call_target="([^"]+)"', line)
        if target and target.group(1).startswith(ATTENTION_TARGETS):
            operands = re.search(r"operand_layout_constraints=\{(.*?)\}, api_version", line)
            shapes = re.findall(r"[a-z0-9]+\[[0-9,]*\]", operands.group(1)) if operands else []
            calls.append({"target": target.group(1), "operands": shapes})
    collectives = re.findall(r" (all-reduce|all-gather|all-to-all|reduce-scatter|collective-permute)(?:-start)?\(", hlo)
    return {"attention_calls": calls, "collectives": sorted(set(collectives)),
            "device_kind": devices[0].device_kind, "platform": devices[0].platform}


def main() -> None:
    mode, cases_path, out_path = sys.argv[1:4]
    cases = json.loads(open(cases_path).read())
    source = cudnn_version_source()
    devices = None
    if mode == "compile":
        from jax.experimental import topologies

        devices = topologies.get_topology_desc(platform="cuda", topology="1x1x8",
                                               target_config=TARGET_CONFIG).devices
    records = []
    # On a GPU jax.default_backend() is "gpu" and the kernel compiles through Triton; here the
    # default backend is the CPU, where it would run interpreted, so say which one is meant.
    with mock.patch.object(flash_attention, "_default_interpret", lambda: False):
        for case in cases:
            facts = lowered_facts(case) if mode == "lower" else compiled_facts(case, devices)
            records.append(dict(case, cudnn_version=source, **facts))
    with open(out_path, "w") as out:
        json.dump(records, out, indent=1)


if __name__ == "__main__":
    main()
