"""A family's weight table: our parameter paths -> the checkpoint's tensors, with axis names.

Each `Tensor` entry says where one parameter of ours comes from (one or more checkpoint names),
how the host arrays become our layout (transpose, a split of a fused matrix into its heads),
and the logical name of every axis (`Axis`), so a later mesh can place each parameter by name
and tensor parallelism can split heads and MLP widths. Per-layer entries are templates over
the layer index `{i}`; the loader stacks them along a leading `layers` axis in the order the
scanned stack (`layers.scan_plan`) runs them.

Checkpoint names are relative to the encoder prefix the reader found ("bert.", "model.", ...);
a leading "/" names a root tensor (heads), and "a|b" means a, else b (legacy spellings, tied
decoders). `WeightTable.load` reads every entry, then checks that no tensor is missing and
that every checkpoint tensor was used, and raises one error listing both sets.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Sequence

import numpy as np

from ..errors import ModelLoadError
from ..weights import WeightReader
from .layers import LayerVariant, block_name, scan_plan

Convert = Callable[..., np.ndarray]


class Axis(str, enum.Enum):
    """Logical axis names (MaxText style) shared by every family."""

    LAYERS = "layers"  # the stacked (scanned) axis
    EMBED = "embed"
    HEADS = "heads"
    KV_HEADS = "kv_heads"
    HEAD_DIM = "head_dim"
    MLP = "mlp"
    VOCAB = "vocab"
    POSITIONS = "positions"
    TYPES = "types"
    EXPERTS = "experts"
    BUCKETS = "buckets"
    TAPS = "taps"  # a convolution's kernel positions
    LABELS = "labels"


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One parameter of ours: its path, its axes, its checkpoint tensor(s) and the conversion."""

    path: str  # "/"-separated inside the params tree, e.g. "attention/q/kernel"
    axes: tuple[Axis, ...]
    sources: tuple[str, ...]
    convert: Convert | None = None  # host arrays of `sources` -> ours; None: the one array as is


# Conversions ---------------------------------------------------------------------------------
def transposed(weight: np.ndarray) -> np.ndarray:
    """torch Linear [out, in] -> our kernel [in, out]."""
    return weight.T


def rows(start: int, stop: int, then: Convert = transposed) -> Convert:
    """A row range of a fused torch weight (or bias), then `then`."""
    return lambda array: then(array[start:stop])


def to_heads(heads: int, head_dim: int, start: int = 0) -> Convert:
    """torch [heads * head_dim (+ offset), embed] -> [embed, heads, head_dim] (rows from start)."""
    stop = start + heads * head_dim
    return lambda weight: weight[start:stop].T.reshape(weight.shape[1], heads, head_dim)


def bias_to_heads(heads: int, head_dim: int, start: int = 0) -> Convert:
    stop = start + heads * head_dim
    return lambda bias: bias[start:stop].reshape(heads, head_dim)


def from_heads(heads: int, head_dim: int) -> Convert:
    """torch [embed, heads * head_dim] (the output projection) -> [heads, head_dim, embed]."""
    return lambda weight: weight.T.reshape(heads, head_dim, weight.shape[0])


def reshaped(*shape: int) -> Convert:
    return lambda array: array.reshape(shape)


# Entry builders ------------------------------------------------------------------------------
def linear(path: str, name: str, axes: tuple[Axis, Axis], bias: bool = True) -> list[Tensor]:
    """A torch Linear `name` -> our Dense `path` {kernel [in, out], bias [out]}."""
    entries = [Tensor(f"{path}/kernel", axes, (f"{name}.weight",), transposed)]
    if bias:
        entries.append(Tensor(f"{path}/bias", axes[1:], (f"{name}.bias",)))
    return entries


def norm(path: str, name: str, width: Axis = Axis.EMBED, bias: bool = True) -> list[Tensor]:
    """A norm's scale (and bias); old TF-converted checkpoints call them gamma/beta."""
    entries = [Tensor(f"{path}/scale", (width,), (f"{name}.weight|{name}.gamma",))]
    if bias:
        entries.append(Tensor(f"{path}/bias", (width,), (f"{name}.bias|{name}.beta",)))
    return entries


def embedding(path: str, name: str, rows_axis: Axis) -> list[Tensor]:
    return [Tensor(f"{path}/embedding", (rows_axis, Axis.EMBED), (f"{name}.weight",))]


def attention_in(path: str, name: str, heads: int, head_dim: int, bias: bool, start: int = 0,
                 kv: bool = False) -> list[Tensor]:
    """q, k or v [embed, (kv_)heads, head_dim] from a torch Linear, or from rows start.. of a
    fused one (Wqkv)."""
    heads_axis = Axis.KV_HEADS if kv else Axis.HEADS
    entries = [Tensor(f"{path}/kernel", (Axis.EMBED, heads_axis, Axis.HEAD_DIM), (f"{name}.weight",),
                      to_heads(heads, head_dim, start))]
    if bias:
        entries.append(Tensor(f"{path}/bias", (heads_axis, Axis.HEAD_DIM), (f"{name}.bias",),
                              bias_to_heads(heads, head_dim, start)))
    return entries


def qkv(path: str, names: Sequence[str] | str, heads: int, kv_heads: int, head_dim: int, bias: bool) -> list[Tensor]:
    """q/k/v of `path`, from three torch Linears or one fused [q | k | v] Linear."""
    if isinstance(names, str):
        starts = (0, heads * head_dim, (heads + kv_heads) * head_dim)
        names = (names,) * 3
    else:
        starts = (0, 0, 0)
    return (attention_in(f"{path}/q", names[0], heads, head_dim, bias, starts[0])
            + attention_in(f"{path}/k", names[1], kv_heads, head_dim, bias, starts[1], kv=True)
            + attention_in(f"{path}/v", names[2], kv_heads, head_dim, bias, starts[2], kv=True))


def attention_out(path: str, name: str, heads: int, head_dim: int, bias: bool) -> list[Tensor]:
    entries = [Tensor(f"{path}/kernel", (Axis.HEADS, Axis.HEAD_DIM, Axis.EMBED), (f"{name}.weight",),
                      from_heads(heads, head_dim))]
    if bias:
        entries.append(Tensor(f"{path}/bias", (Axis.EMBED,), (f"{name}.bias",)))
    return entries


def gate_up(path: str, name: str, width: int, bias: bool, gate_first: bool = True) -> list[Tensor]:
    """Separate gate and up [embed, mlp] from a fused torch Linear whose rows are
    [gate | up] (gate_first) or [up | gate]."""
    gate, up = ((0, width), (width, 2 * width)) if gate_first else ((width, 2 * width), (0, width))
    entries = []
    for part, (start, stop) in (("gate", gate), ("up", up)):
        entries.append(Tensor(f"{path}/{part}/kernel", (Axis.EMBED, Axis.MLP), (f"{name}.weight",), rows(start, stop)))
        if bias:
            entries.append(Tensor(f"{path}/{part}/bias", (Axis.MLP,), (f"{name}.bias",), rows(start, stop, lambda b: b)))
    return entries


def learned_embeddings(positions: bool = True, token_types: bool = False) -> list[Tensor]:
    """BERT-layout embeddings (`embeddings.word_embeddings`, `.position_embeddings`,
    `.token_type_embeddings`, `.LayerNorm`: BERT, DistilBERT, MPNet, DeBERTa)."""
    entries = (embedding("encoder/embeddings/word", "embeddings.word_embeddings", Axis.VOCAB)
               + norm("encoder/embeddings/norm", "embeddings.LayerNorm"))
    if positions:
        entries += embedding("encoder/embeddings/position", "embeddings.position_embeddings", Axis.POSITIONS)
    if token_types:
        entries += embedding("encoder/embeddings/token_type", "embeddings.token_type_embeddings", Axis.TYPES)
    return entries


def post_norm_layer(q: str, k: str, v: str, out: str, attn_norm: str, up: str, down: str, mlp_norm: str,
                    heads: int, head_dim: int) -> list[Tensor]:
    """One BERT-style layer (biased q/k/v and output Linears, the attention norm, up/down
    Linears, the MLP norm) under the names a family gives them (BERT, DistilBERT, MPNet,
    DeBERTa)."""
    return (qkv("attention", [q, k, v], heads, heads, head_dim, True)
            + attention_out("attention/out", out, heads, head_dim, True)
            + norm("attn_norm", attn_norm)
            + linear("mlp/up", up, (Axis.EMBED, Axis.MLP))
            + linear("mlp/down", down, (Axis.MLP, Axis.EMBED))
            + norm("mlp_norm", mlp_norm))


def under(prefix: str, entries: Sequence[Tensor]) -> list[Tensor]:
    return [dataclasses.replace(e, path=f"{prefix}/{e.path}") for e in entries]


# The table and its loader --------------------------------------------------------------------
LayerTable = Callable[[LayerVariant], list[Tensor]]
Place = Callable[[tuple[str, ...], np.ndarray], object]  # (logical axes, host array) -> device array


@dataclasses.dataclass
class WeightTable:
    """Every parameter of a built family, and which checkpoint tensors a model kind may leave
    unread (heads and poolers of other kinds: `unused_ok` name prefixes, "/" for root names)."""

    entries: list[Tensor]
    layer: LayerTable | None = None  # per-layer templates over `{i}`
    variants: tuple[LayerVariant, ...] = ()
    stack_path: str = "encoder"  # where the layer blocks live in the params tree
    unused_ok: tuple[str, ...] = ()

    def expanded(self) -> list[tuple[Tensor, list[int] | None]]:
        """(entry, layer indices to stack or None) for every parameter."""
        out: list[tuple[Tensor, list[int] | None]] = [(e, None) for e in self.entries]
        if self.layer is None:
            return out
        for k, segment in enumerate(scan_plan(self.variants)):
            for j in range(segment.period):
                indices = [segment.layer(step, j) for step in range(segment.repeats)]
                prefix = f"{self.stack_path}/{block_name(k)}/layer_{j}"
                out += [(e, indices) for e in under(prefix, self.layer(self.variants[indices[0]]))]
        return out

    def axes(self) -> dict:
        """The logical axes of every parameter, as a tree shaped like the params."""
        tree: dict = {}
        for entry, stacked in self.expanded():
            axes = ((Axis.LAYERS,) if stacked is not None else ()) + entry.axes
            _put(tree, entry.path, tuple(a.value for a in axes))
        return tree

    def load(self, reader: WeightReader, place: Place | None = None) -> dict:
        """Read and convert every parameter; raise ModelLoadError if any checkpoint tensor is
        missing or left unused (listing both sets). `place(axes, host_array)` puts each one
        on its device(s) as soon as it is read (tei_jax/sharding.py), so the host holds one
        parameter at a time beyond the checkpoint's own memory map."""
        tree: dict = {}
        missing: list[str] = []
        for entry, stacked in self.expanded():
            value = _read(reader, entry, stacked, missing)
            if value is not None:
                expected = len(entry.axes) + (stacked is not None)
                if value.ndim != expected:  # a table bug, not a checkpoint problem
                    raise ModelLoadError(f"parameter {entry.path}: {value.ndim} axes, table names {expected}")
                if place is not None:
                    axes = ((Axis.LAYERS,) if stacked is not None else ()) + entry.axes
                    value = place(tuple(a.value for a in axes), value)
                _put(tree, entry.path, value)
        unused = [n for n in reader.unused() if not self._may_be_unused(n, reader.prefix)]
        if missing or unused:
            raise ModelLoadError(_mismatch(missing, unused))
        return tree

    def export(self, params: dict, reader: WeightReader) -> dict[str, np.ndarray]:
        """The inverse of `load`: the checkpoint's tensors (its own names, shapes and dtypes)
        with every parameter of `params` written back where `load` read it from. Tensors
        the model does not use are kept as the checkpoint has them.

        Each conversion is inverted by tracing it: applied to arrays of element indices, it
        says which checkpoint element every element of ours came from (transposes, row ranges
        of fused matrices and reshapes are all such gathers)."""
        out = {name: np.array(reader.raw(name, prefixed=False)) for name in reader.names()}
        for entry, stacked in self.expanded():
            value = np.asarray(_get(params, entry.path))
            for n, index in enumerate(stacked if stacked is not None else [None]):
                names = [s.format(i=index) if index is not None else s for s in entry.sources]
                resolved = [reader.resolve(s) for s in names]
                if any(r is None for r in resolved):
                    continue  # an optional tensor the checkpoint does not have
                ours = value[n] if stacked is not None else value
                _scatter(entry, [out[r] for r in resolved], ours)
        return out

    def _may_be_unused(self, name: str, prefix: str) -> bool:
        for allowed in self.unused_ok:
            if allowed.startswith("/"):
                if name.startswith(allowed[1:]):
                    return True
            elif name.startswith(prefix + allowed):
                return True
        return False


def _read(reader: WeightReader, entry: Tensor, stacked: list[int] | None, missing: list[str]) -> np.ndarray | None:
    """One parameter (stacked over `stacked` layers), or None with the absent names added to
    `missing` (every layer is still read, so one missing layer is not reported as the rest
    being unused)."""
    indices = stacked if stacked is not None else [None]
    out, complete = None, True
    for n, index in enumerate(indices):
        names = [s.format(i=index) if index is not None else s for s in entry.sources]
        resolved = [reader.resolve(s) for s in names]
        if any(r is None for r in resolved):
            complete = False
            missing.extend(reader.display(s) for s, r in zip(names, resolved) if r is None)
            continue
        arrays = [reader.get(r, prefixed=False) for r in resolved]
        if not complete:
            continue
        value = entry.convert(*arrays) if entry.convert is not None else arrays[0]
        if stacked is None:
            return np.ascontiguousarray(value)
        if out is None:
            out = np.empty((len(indices),) + value.shape, value.dtype)
        out[n] = value
    return out if complete else None


def _scatter(entry: Tensor, targets: list[np.ndarray], ours: np.ndarray) -> None:
    """Write `ours` into the checkpoint arrays `targets` (in place) through the inverse of
    `entry.convert`, found by converting arrays of flat element indices."""
    sizes = [t.size for t in targets]
    offsets = np.cumsum([0] + sizes)
    indices = [np.arange(o, o + t.size, dtype=np.int64).reshape(t.shape) for o, t in zip(offsets, targets)]
    where = np.asarray(entry.convert(*indices) if entry.convert is not None else indices[0])
    if where.shape != ours.shape or where.dtype != np.int64 or len(np.unique(where)) != where.size:
        raise ValueError(f"parameter {entry.path}: its conversion is not an invertible gather "
                         f"(shape {where.shape} for {ours.shape})")
    flat = ours.reshape(-1)
    order = where.reshape(-1)
    for k, target in enumerate(targets):
        inside = (order >= offsets[k]) & (order < offsets[k + 1])
        target.reshape(-1)[order[inside] - offsets[k]] = flat[inside].astype(target.dtype)


def _get(tree: dict, path: str):
    for part in path.split("/"):
        tree = tree[part]
    return tree


def _put(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _listed(names: list[str], limit: int = 12) -> str:
    names = sorted(set(names))
    return ", ".join(names[:limit]) + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")


def _mismatch(missing: list[str], unused: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(set(missing))} tensors missing from the checkpoint: {_listed(missing)}")
    if unused:
        parts.append(f"{len(unused)} checkpoint tensors not used by the model: {_listed(unused)}")
    return "the checkpoint does not match the model: " + "; ".join(parts)

