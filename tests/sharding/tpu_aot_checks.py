"""Ahead-of-time compilation of the sharded forward for a TPU v5e 2x2 topology, without a TPU.

    python tpu_aot_checks.py MODELS.json OUT.json      (libtpu importable)

`jax.experimental.topologies.get_topology_desc` describes the four chips through libtpu; the
model is loaded on the CPU as usual, then an Engine with the same arch and shape policy is
placed on a data 2 x tensor 2 mesh of the topology's devices with abstract parameters
(`Placement.abstract`), and `Engine.lower(...).compile()` runs XLA's TPU compiler.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import jax
from jax.experimental import topologies

import tei_jax
from tei_jax.batching import BatchShape
from tei_jax.engine import Engine
from tei_jax.sharding import Placement

TOPOLOGY = "v5e:2x2"


def compile_for_tpu(path: str, devices) -> dict:
    model = tei_jax.load(path, max_batch_tokens=256, compile_cache="none")  # no TPU entries in the cache
    cpu = model.engine
    placement = Placement.on(devices, 2, 2).for_architecture(cpu.arch)
    params = placement.abstract(cpu.arch.param_axes(), cpu.params)
    policy = dataclasses.replace(cpu.policy, row_multiple=placement.data_size)
    engine = Engine(cpu.spec, cpu.arch, params, policy, placement=placement)
    shape = BatchShape(4, 64, engine.policy.slots_for(64))
    compiled = engine.lower(model.tasks[0], shape).compile()
    hlo = compiled.as_text()
    return {"model": path, "platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "task": str(model.tasks[0].value), "shape": list(shape), "all_reduce": "all-reduce" in hlo,
            "output_sharding": str(compiled.output_shardings)}


def main() -> None:
    paths = json.loads(open(sys.argv[1]).read())
    topology = topologies.get_topology_desc(platform="tpu", topology_name=TOPOLOGY)
    records = [compile_for_tpu(path, topology.devices) for path in paths]
    with open(sys.argv[2], "w") as out:
        json.dump(records, out, indent=1)


if __name__ == "__main__":
    main()
