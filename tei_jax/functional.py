"""The model as a pure JAX function, for research code: `Model.params`, `.batch`, `.apply`.

`embed`/`predict` hide the batch layout and hand back numpy. A notebook that wants its own
loss, gradients or probes needs the three pieces underneath: the parameter pytree, the batch
as arrays (the layout the engine computes on: rows of tokens with positions and segment ids,
several sequences per row when packed), and the forward pass as a function of those two.
`apply` is exactly the engine's traced forward (the one `embed` runs, compiled per shape), so
it agrees with `embed`/`embed_all`/`predict`; it holds no state, so `jax.jit`, `jax.grad` and
`jax.vmap` compose with it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .batching import SEQ_MULTIPLE, BatchShape, PackedBatch, Placement, RowPacker, round_up
from .tasks import Task
from .tokenization import Encoded

if TYPE_CHECKING:
    from .engine import Engine

MIN_TOKENS_PER_SLOT = 4  # a packed row of width w holds at most w // 4 sequences, as the engine's


@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch as the engine lays it out: int32 numpy arrays, and where each input sits.

    `input_ids`, `type_ids`, `position_ids`, `segment_ids` are [rows, width]; segment id s > 0
    marks the tokens of slot s - 1 of the row, 0 is padding. Input i sits in row `row[i]`,
    slot `slot[i]`, from column `start[i]`, `length[i]` tokens. A padded batch has one input
    per row (row[i] == i, start 0, slots 1). A jax pytree: the arrays are leaves, `slots` is
    static, so a Batch can be passed straight through `jax.jit` or `jax.vmap`.
    """

    input_ids: np.ndarray
    type_ids: np.ndarray
    position_ids: np.ndarray
    segment_ids: np.ndarray
    row: np.ndarray
    slot: np.ndarray
    start: np.ndarray
    length: np.ndarray
    slots: int = 1

    @property
    def mask(self):
        """[rows, width] True on real tokens."""
        return self.segment_ids > 0

    def __len__(self) -> int:
        return int(np.shape(self.row)[-1])


jax.tree_util.register_dataclass(
    Batch,
    data_fields=["input_ids", "type_ids", "position_ids", "segment_ids", "row", "slot", "start", "length"],
    meta_fields=["slots"],
)


def make_batch(engine: "Engine", items: Sequence[Encoded], packed: bool = False,
               width: int | None = None) -> Batch:
    """Lay tokenized inputs out as a `Batch`: one per row, padded to `width` (default: the
    longest, rounded up to a multiple of 16 so jitted code sees few shapes), or packed
    several per row (first fit, in order) when `packed`."""
    if not items:
        raise ValueError("a batch needs at least one input")
    longest = max(len(item) for item in items)
    width = width or round_up(longest, SEQ_MULTIPLE)
    if longest > width:
        raise ValueError(f"an input has {longest} tokens, more than the batch width {width}")
    if packed:
        slots = max(1, width // MIN_TOKENS_PER_SLOT)
        packer = RowPacker(width, len(items), slots)
        placements = [packer.add(len(item)) for item in items]
        rows = packer.rows_used
    else:
        slots, rows = 1, len(items)
        placements = [Placement(i, 0, 0) for i in range(len(items))]
    planned = PackedBatch(list(range(len(items))), placements, BatchShape(rows, width, slots),
                          sum(len(item) for item in items))
    input_ids, type_ids, position_ids, segment_ids = engine.arrays(list(items), planned)
    column = lambda values: np.asarray(values, np.int32)  # noqa: E731
    return Batch(input_ids, type_ids, position_ids, segment_ids,
                 row=column([p.row for p in placements]), slot=column([p.slot for p in placements]),
                 start=column([p.start for p in placements]), length=column([len(item) for item in items]),
                 slots=slots)


def apply(engine: "Engine", params: dict, batch: Batch, task: Task | str = Task.EMBED,
          normalize: bool = False) -> jax.Array:
    """The forward pass of `engine`'s model as a pure function of (params, batch).

    - "embed": float32 [n, d], one pooled vector per input (after Dense modules; SPLADE: the
      vocabulary weights); L2-normalised when `normalize` (what `embed()` returns by default);
    - "embed_all": float32 [rows, width, hidden] token states (padded batch: row i is input
      i; its first length[i] positions are `embed_all()[i]`);
    - "predict": float32 [n, labels] logits (`predict(raw_scores=True)` before sorting).
    """
    task = Task(task)
    if task not in engine.tasks:
        raise ValueError(f"task {task.value!r} is not available for this model "
                         f"({', '.join(t.value for t in engine.tasks)})")
    out = engine.forward(task)(params, batch.input_ids, batch.type_ids, batch.position_ids,
                               batch.segment_ids, batch.slots)
    if task is Task.EMBED_ALL:
        return out
    out = out[batch.row, batch.slot].astype(jnp.float32)
    if normalize:
        out = out / jnp.maximum(jnp.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out
