"""Where a model lives: a device mesh (`data` x `model`) and the sharding of every array.

Data parallelism splits a batch's rows across the `data` axis; tensor parallelism splits the
parameters' head and MLP widths (Megatron style: q/k/v and gate/up by columns, the output and
down projections by rows) across the `model` axis. Both are plain `jax.sharding`: parameters
get a `NamedSharding` from their logical axis names (tei_jax/models/table.py `Axis`), batches
are laid out row-sharded, and XLA's partitioner (GSPMD) inserts the collectives. Only the
Pallas attention kernel needs `shard_map` (tei_jax/models/attention.py).

Logical axes -> mesh axes: heads, kv_heads, mlp, vocab -> `model`; every other axis is
replicated. Heads and MLP widths must divide by the tensor-parallel size (a `ModelLoadError`
names the config field). KV heads that are fewer than the tensor-parallel size are replicated
when the size is a multiple of them (as vLLM does); vocabularies that do not divide
(BERT's 30522 over 4) are replicated, since a gather from a replicated table costs nothing extra.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from .errors import ModelLoadError
from .models.table import Axis

log = logging.getLogger(__name__)


class MeshAxis(str, enum.Enum):
    """The two axes of every mesh."""

    DATA = "data"  # batch rows
    MODEL = "model"  # heads, kv heads, MLP width, vocabulary


# Which logical parameter axes are split over the `model` axis.
TENSOR_PARALLEL_AXES = frozenset({Axis.HEADS.value, Axis.KV_HEADS.value, Axis.MLP.value, Axis.VOCAB.value})
# Axes that must divide; the others are replicated when they do not.
_MUST_DIVIDE = {Axis.HEADS.value: "num_heads", Axis.MLP.value: "intermediate_size"}


@dataclasses.dataclass(frozen=True)
class Placement:
    """A mesh of `data_parallel_size` x `tensor_parallel_size` devices and the shardings of a
    model's parameters and batches on it. One device is the 1 x 1 case of the same path."""

    mesh: Mesh
    replicated_axes: frozenset[str] = frozenset()  # tensor-parallel axes left whole (kv_heads, vocab)

    @classmethod
    def build(cls, data_parallel_size: int | None = None, tensor_parallel_size: int = 1,
              devices: Sequence[Any] | None = None) -> "Placement":
        """The mesh for these sizes. `devices` defaults to every local device of the default
        backend; `data_parallel_size` None uses all of them (devices // tensor_parallel_size).
        The sizes' product must equal the number of devices used."""
        devices = list(devices) if devices is not None else jax.local_devices()
        tp = _positive("tensor_parallel_size", tensor_parallel_size)
        if data_parallel_size is None:
            if len(devices) % tp:
                raise ModelLoadError(f"tensor_parallel_size {tp} does not divide the {len(devices)} devices")
            dp = len(devices) // tp
        else:
            dp = _positive("data_parallel_size", data_parallel_size)
        if dp * tp > len(devices):
            raise ModelLoadError(f"data_parallel_size {dp} x tensor_parallel_size {tp} = {dp * tp} devices, "
                                 f"but only {len(devices)} are available ({_kinds(devices)})")
        return cls.on(devices[: dp * tp], dp, tp)

    @classmethod
    def on(cls, devices: Sequence[Any], data_parallel_size: int, tensor_parallel_size: int) -> "Placement":
        """The mesh over exactly these devices (any platform, attached or a topology's)."""
        grid = np.array(list(devices), dtype=object).reshape(data_parallel_size, tensor_parallel_size)
        return cls(Mesh(grid, (MeshAxis.DATA.value, MeshAxis.MODEL.value), axis_types=(AxisType.Auto,) * 2))

    # Facts ---------------------------------------------------------------------------------
    @property
    def data_size(self) -> int:
        return self.mesh.shape[MeshAxis.DATA.value]

    @property
    def model_size(self) -> int:
        return self.mesh.shape[MeshAxis.MODEL.value]

    @property
    def devices(self) -> list:
        return list(self.mesh.devices.flat)

    def describe(self) -> dict:
        """A stable, JSON-ready description of the placement: mesh shape and axis names, the
        device kind, platform and ids in mesh order. Equal descriptions mean an executable
        compiled for one runs on the other (the on-disk executable store keys on it)."""
        first = self.devices[0]
        return {
            "mesh": {name: int(size) for name, size in self.mesh.shape.items()},
            "axis_names": list(self.mesh.axis_names),
            "platform": first.platform,
            "device_kind": first.device_kind,
            "device_ids": [int(d.id) for d in self.devices],
            "replicated_axes": sorted(self.replicated_axes),
        }

    def key(self) -> str:
        """`describe()` as one canonical JSON string."""
        return json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))

    # Shardings -----------------------------------------------------------------------------
    def named(self, *spec) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(*spec))

    @property
    def rows(self) -> NamedSharding:
        """Batch arrays and outputs: leading (row) axis split over `data`."""
        return self.named(MeshAxis.DATA.value)

    @property
    def replicated(self) -> NamedSharding:
        return self.named()

    def spec_for(self, axes: Sequence[str], shape: Sequence[int]) -> PartitionSpec:
        """The partition spec of a parameter with these logical axes and shape: the first
        tensor-parallel axis that divides goes to `model` (one mesh axis shards one array axis)."""
        if self.model_size == 1:
            return PartitionSpec()
        spec: list[str | None] = [None] * len(axes)
        for i, (axis, size) in enumerate(zip(axes, shape)):
            if axis in TENSOR_PARALLEL_AXES and axis not in self.replicated_axes and size % self.model_size == 0:
                spec[i] = MeshAxis.MODEL.value
                break
        return PartitionSpec(*spec)

    def sharding_for(self, axes: Sequence[str], shape: Sequence[int]) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec_for(axes, shape))

    def place(self, axes: Sequence[str], host: np.ndarray) -> jax.Array:
        """One host parameter straight onto its sharding: each device receives only its own
        slice (never a full copy on one device)."""
        return jax.device_put(host, self.sharding_for(axes, host.shape))

    def abstract(self, axes_tree: dict, params: dict) -> dict:
        """`params` as jax.ShapeDtypeStructs carrying this placement's shardings: what
        `Engine.lower` needs to compile ahead of time for devices that are not attached (a
        TPU topology from jax.experimental.topologies)."""
        shardings = self.param_shardings(axes_tree, params)
        return jax.tree.map(lambda p, s: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=s), params, shardings)

    def param_shardings(self, axes_tree: dict, params: dict) -> dict:
        """Shardings shaped like `params` ({"encoder", "head"?, "dense"?}); parameters without
        axis names (sentence-transformers Dense modules) are replicated."""
        def walk(axes, values):
            if isinstance(values, dict):
                return {k: walk(axes.get(k) if isinstance(axes, dict) else None, v) for k, v in values.items()}
            if isinstance(axes, tuple):
                return self.sharding_for(axes, values.shape)
            return self.replicated

        return walk(axes_tree, params)

    def info(self, params: dict, shardings: dict) -> dict:
        """`describe()` plus how the parameters are laid out: how many are split over the
        `model` axis, and the parameter bytes each device holds."""
        leaves = jax.tree.leaves(params)
        specs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
        split = sum(1 for sh in specs if any(p is not None for p in sh.spec))
        per_device = _bytes_per_device(leaves)
        return dict(self.describe(), data_parallel_size=self.data_size, tensor_parallel_size=self.model_size,
                    parameters=len(leaves), parameters_split=split, parameter_bytes_per_device=per_device)

    def summary(self, params: dict, shardings: dict) -> str:
        """One line for the startup log."""
        info = self.info(params, shardings)
        sizes = sorted(set(info["parameter_bytes_per_device"].values()))
        return (f"{info['parameters_split']} of {info['parameters']} split over 'model', "
                f"{'/'.join(f'{b / 2**20:.1f}' for b in sizes)} MiB per device")

    # Validation ----------------------------------------------------------------------------
    def for_architecture(self, arch: Any) -> "Placement":
        """`for_model` with a built family's head and MLP widths (tei_jax/models Architecture)."""
        config = arch.config
        heads = getattr(config, "num_heads", None)
        if heads is None:
            if self.model_size > 1:
                raise ModelLoadError("tensor parallelism needs the family's num_heads; this model has none")
            return self
        kv_heads = getattr(config, "num_kv_heads", None) or heads
        return self.for_model(config, heads, kv_heads, getattr(config, "intermediate_size", self.model_size))

    def for_model(self, config: Any, heads: int, kv_heads: int, mlp: int) -> "Placement":
        """This placement checked against a model's widths: raises ModelLoadError naming the
        config field when heads or the MLP width do not divide by the tensor-parallel size;
        returns it with the axes to replicate (kv heads fewer than the size, a vocabulary
        that does not divide is handled per tensor by `spec_for`)."""
        tp = self.model_size
        if tp == 1:
            return self
        for axis, size in ((Axis.HEADS.value, heads), (Axis.MLP.value, mlp)):
            if size % tp:
                raise ModelLoadError(f"tensor_parallel_size {tp} does not divide config.json field "
                                     f"'{_json_name(config, _MUST_DIVIDE[axis])}' ({size})")
        replicated = set()
        if kv_heads % tp:
            if tp % kv_heads:
                raise ModelLoadError(
                    f"tensor_parallel_size {tp} does not divide config.json field "
                    f"'{_json_name(config, 'num_kv_heads')}' ({kv_heads}), nor is it a multiple of it")
            replicated.add(Axis.KV_HEADS.value)
        return dataclasses.replace(self, replicated_axes=frozenset(replicated))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelLoadError(f"{name} must be a positive integer, got {value!r}")
    return value


def _kinds(devices: Sequence[Any]) -> str:
    kinds = sorted({f"{d.platform}:{d.device_kind}" for d in devices})
    return ", ".join(kinds) or "none"


def _json_name(config: Any, field: str) -> str:
    """The config.json spelling of a family config field (num_heads -> num_attention_heads)."""
    if config is not None and dataclasses.is_dataclass(config):
        for f in dataclasses.fields(config):
            if f.name == field and f.metadata.get("names"):
                return f.metadata["names"][0]
        if field == "num_kv_heads":
            return _json_name(config, "num_heads")
    return field


def live_bytes_per_device() -> dict[str, int]:
    """Bytes of live device buffers per device (jax.live_arrays, shard by shard). A buffer
    seen through several arrays (a shard's own array aliases its parent's) counts once."""
    return _bytes_per_device(jax.live_arrays())


def _bytes_per_device(arrays) -> dict[str, int]:
    totals: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    for array in arrays:
        for shard in array.addressable_shards:
            device, data = str(shard.device), shard.data
            key = (device, data.unsafe_buffer_pointer())
            if key in seen:
                continue
            seen.add(key)
            totals[device] = totals.get(device, 0) + data.nbytes
    return totals


def total_params(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))
