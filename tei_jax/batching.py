"""Lengths -> compiled shapes: the shape ladders and the packing batch planner.

Every batch the engine runs has a shape (rows, width, slots) from a closed set, so all of it
can be compiled ahead of time and nothing compiles while serving. Several sequences may share
a row (packing): each sits in its own slot, with its own positions and a segment id that keeps
attention inside it, so computed tokens stay close to real tokens whatever the length mix.

- widths climb a ladder of multiples of 16 growing about 1.4x (16, 32, 48, 64, 96, 128, 176,
  240, ...) up to the model's max input length; when packing, widths under `min_width` exist
  only as single-row shapes (one short query runs at 16 or 32 tokens, not 64); with several
  data-parallel devices 80 and 112 join them (`ShapePolicy.widths`);
- row counts climb one by one to `exact_rows` (8; 16 on CPU), then four steps per doubling (10,
  12, 14, 16, 20, 24, 28, 32, 40, ...) under the token budget, so rounding up to a compiled row
  count wastes little;
- slots per row are width // 4 when packing (a row can hold that many sequences), else 1.

A packed batch may run wider than its longest item: `ShapePolicy.pack` tries the few widths
above it and keeps the one with the lowest cost per real token (computed tokens, the
attention's share, which grows with the width, and a fixed overhead per batch), so three items
of 40 tokens may run as one row of 128 rather than three rows of 64.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from typing import NamedTuple, Sequence

SEQ_MULTIPLE = 16
MAX_ROWS = 256  # beyond this, bigger batches buy nothing on any device we serve
MIN_TOKENS_PER_SLOT = 4
EXACT_ROWS = 8  # default: every row count up to this one is compiled; above it, four steps per doubling
WIDTH_CHOICES = 4  # how many ladder widths, from the narrowest that fits, `pack` tries


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def seq_ladder(max_len: int, growth: float = 1.4) -> list[int]:
    """Sequence buckets from 16 up to (at least) max_len."""
    ladder, current = [], SEQ_MULTIPLE
    while current < max_len:
        ladder.append(current)
        current = max(current + SEQ_MULTIPLE, round(current * growth / SEQ_MULTIPLE) * SEQ_MULTIPLE)
    ladder.append(round_up(max_len, SEQ_MULTIPLE) if max_len > SEQ_MULTIPLE else SEQ_MULTIPLE)
    return ladder


def row_ladder(max_rows: int, exact: int = EXACT_ROWS) -> list[int]:
    """1, 2, ..., exact, then four steps per doubling (with exact 8: 10, 12, 14, 16, 20, 24, 28,
    32, 40, ...) up to max_rows (inclusive)."""
    ladder, rows = [], 1
    while rows <= max_rows:
        ladder.append(rows)
        rows += 1 if rows < exact else max(1, (1 << (rows.bit_length() - 1)) // 4)  # 4 steps per doubling
    return ladder


class BatchShape(NamedTuple):
    rows: int
    width: int
    slots: int

    @property
    def tokens(self) -> int:
        return self.rows * self.width


class Placement(NamedTuple):
    row: int
    start: int
    slot: int  # 0-based; the segment id is slot + 1


@dataclasses.dataclass
class PackedBatch:
    """Items (by index into the caller's list) placed in a batch shape."""

    indices: list[int]
    placements: list[Placement]
    shape: BatchShape
    real_tokens: int

    @property
    def efficiency(self) -> float:
        return self.real_tokens / self.shape.tokens


class RowPacker:
    """First-fit packing of sequences into rows of one width (used by planners and the
    scheduler alike)."""

    def __init__(self, width: int, max_rows: int, slots: int, max_items: int | None = None):
        self.width, self.max_rows, self.slots, self.max_items = width, max_rows, slots, max_items
        self.fill: list[int] = []
        self.count: list[int] = []
        self.placements: list[Placement] = []

    def add(self, length: int, new_row: bool = True) -> Placement | None:
        """Place a sequence; None if it does not fit (in open rows, or a new one if allowed)."""
        if length > self.width or (self.max_items is not None and len(self.placements) >= self.max_items):
            return None
        for row, used in enumerate(self.fill):
            if used + length <= self.width and self.count[row] < self.slots:
                return self._place(row, length)
        if new_row and len(self.fill) < self.max_rows:
            self.fill.append(0)
            self.count.append(0)
            return self._place(len(self.fill) - 1, length)
        return None

    def _place(self, row: int, length: int) -> Placement:
        placement = Placement(row, self.fill[row], self.count[row])
        self.fill[row] += length
        self.count[row] += 1
        self.placements.append(placement)
        return placement

    @property
    def rows_used(self) -> int:
        return len(self.fill)

    @property
    def tokens_used(self) -> int:
        return sum(self.fill)


@dataclasses.dataclass(frozen=True)
class ShapePolicy:
    """The closed set of batch shapes a model runs with, and how items are placed in them."""

    max_input_length: int
    max_batch_tokens: int = 16384
    max_batch_requests: int | None = None
    packing: bool = True
    min_width: int = 64
    # Tokens a batch aims at, below the max_batch_tokens cap: on CPU, activations of a few
    # thousand tokens stay in cache and run faster per token than one huge batch.
    batch_tokens: int | None = None
    # What one more key position costs a token, relative to the token's other work: attention
    # does ~4*width*hidden FLOPs per token beside ~24*hidden^2 in the dense layers, so about
    # 1 / (6 * hidden). Zero treats every width alike.
    attention_cost: float = 0.0
    # A batch's fixed cost (dispatch, weights read once, a few small ops), in tokens: keeps
    # `pack` from leaving items behind for a tidier but smaller batch.
    batch_overhead: float = 64.0
    # Every row count is a multiple of this: the data-parallel size, so a batch's rows split
    # evenly over the mesh's `data` axis (tei_jax/sharding.py). A batch has at least this many
    # rows (one per device) even where the token budget would allow fewer.
    row_multiple: int = 1
    # Every row count up to this one is compiled (above it, four steps per doubling). On CPU a
    # call of 32 short queries fills about 10.3 rows of 64: with 11 compiled it runs 11 rows,
    # not 12 (tei_jax.load sets 16 there: five more MiniLM shapes, padding 93.8% -> 95.5% on
    # the bench's short workload).
    exact_rows: int = EXACT_ROWS

    def __post_init__(self):
        if self.row_multiple < 1:
            raise ValueError("row_multiple must be at least 1")
        if self.exact_rows < 1:
            raise ValueError("exact_rows must be at least 1")
        if self.max_batch_tokens < SEQ_MULTIPLE:
            raise ValueError(f"max_batch_tokens must be at least {SEQ_MULTIPLE}")
        if self.batch_tokens is not None and self.batch_tokens < SEQ_MULTIPLE:
            raise ValueError(f"batch_tokens must be at least {SEQ_MULTIPLE}")

    @staticmethod
    def attention_cost_for(hidden_size: int, backend: str = "gpu") -> float:
        """FLOP count says 1 / (6 * hidden); on CPU, where XLA materialises the scores and
        soft-maxes them in memory-bound passes, MiniLM's shapes cost about 3x that."""
        return 1.0 / (2.0 * hidden_size) if backend == "cpu" else 1.0 / (6.0 * hidden_size)

    @property
    def token_budget(self) -> int:
        """Most tokens (padding included) one batch computes."""
        return min(self.max_batch_tokens, self.batch_tokens or self.max_batch_tokens)

    @functools.cached_property
    def widths(self) -> list[int]:
        """The width ladder; with a data axis (`row_multiple` > 1) and packing, also every
        multiple of 16 from `min_width` to twice it (80 and 112 beside 64, 96, 128). Rows come
        in multiples of the data size there, so a call of short inputs rounds up by a whole row
        per device; the finer widths let its items fill an even row count instead (MiniLM's
        short workload at data size 2: padding 87.3% -> 94.1%, one device 95.5%; the shapes
        stay fewer than one device's, whose row ladder is twice as fine)."""
        ladder = seq_ladder(self.max_input_length)
        if self.packing and self.row_multiple > 1:
            low = round_up(self.min_width, SEQ_MULTIPLE)
            top = min(2 * low, ladder[-1])
            ladder = sorted(set(ladder) | set(range(low, top + 1, SEQ_MULTIPLE)))
        return ladder

    @functools.cached_property
    def regular_width(self) -> int:
        """The narrowest width that runs more than one row when packing."""
        return next((w for w in self.widths if w >= self.min_width), self.widths[-1])

    def width_for(self, length: int) -> int:
        """The narrowest width that holds a sequence of this length."""
        index = bisect.bisect_left(self.widths, length)
        if index == len(self.widths):
            raise ValueError(f"length {length} exceeds the largest width {self.widths[-1]}")
        return self.widths[index]


    def slots_for(self, width: int) -> int:
        return max(1, width // MIN_TOKENS_PER_SLOT) if self.packing else 1

    def max_rows(self, width: int) -> int:
        """Most rows a batch of this width may have: token budget, request cap, MAX_ROWS; a
        packed width under min_width only ever runs one row (per data-parallel device)."""
        return self.row_counts(width)[-1]

    def row_counts(self, width: int) -> list[int]:
        """The compiled row counts of a width: the row ladder in units of `row_multiple`."""
        unit = self.row_multiple
        if self.packing and width < self.regular_width:
            return [unit]
        rows = max(1, self.token_budget // width)
        if self.max_batch_requests:
            rows = min(rows, self.max_batch_requests)
        return [n * unit for n in row_ladder(max(1, min(rows, MAX_ROWS) // unit), self.exact_rows)]

    def rows_bucket(self, rows: int, width: int) -> int:
        """The smallest compiled row count >= rows."""
        for candidate in self.row_counts(width):
            if candidate >= rows:
                return candidate
        raise ValueError(f"{rows} rows exceed the maximum {self.max_rows(width)} at width {width}")

    def shapes(self) -> list[BatchShape]:
        """Every shape the planner can produce, smallest first."""
        return [BatchShape(rows, width, self.slots_for(width))
                for width in self.widths for rows in self.row_counts(width)]

    def packer(self, width: int) -> RowPacker:
        return RowPacker(width, self.max_rows(width), self.slots_for(width), self.max_batch_requests)

    def cost(self, shape: BatchShape) -> float:
        """Relative compute of a shape: its tokens, weighted up by the attention's share."""
        return shape.tokens * (1.0 + self.attention_cost * shape.width)

    def finish(self, packer: RowPacker, indices: list[int]) -> PackedBatch:
        shape = BatchShape(self.rows_bucket(packer.rows_used, packer.width), packer.width, packer.slots)
        return PackedBatch(list(indices), list(packer.placements), shape, packer.tokens_used)

    def pack(self, lengths: Sequence[int], first: int | None = None,
             narrow_fill_holes_only: bool = False) -> PackedBatch:
        """One batch from candidate items; those left out are for a later batch.

        Items go in longest first (first-fit decreasing), except `first`, placed before all
        others so the item that waited longest is always taken. With
        `narrow_fill_holes_only`, items that fit a narrower width than the longest one only
        fill space in rows already open (a planner that will batch them anyway keeps them
        out of wide rows, where attention costs more). Without packing the width is
        the longest item's; with it, the few widths above that are tried too, and the batch
        with the lowest cost per real token wins, its fixed overhead counted (so a batch does
        not leave items behind just to look tidy).
        """
        if not lengths:
            raise ValueError("nothing to pack")
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        if first is not None:
            order.remove(first)
            order.insert(0, first)
        base = self.width_for(max(lengths))
        fits = [w for w in self.widths if w >= base]
        bucket = max(base, self.regular_width)
        if narrow_fill_holes_only:
            opener = {n: max(self.width_for(n), self.regular_width) >= bucket for n in set(lengths)}
            opens_rows = [opener[n] for n in lengths]
        else:
            opens_rows = [True] * len(lengths)
        single_row = [w for w in fits if w < self.regular_width]
        regular = fits[len(single_row):len(single_row) + WIDTH_CHOICES]
        choices = single_row + regular if self.packing else fits[:1]
        best, best_key = None, None
        for width in choices:
            packer = self.packer(width)
            taken = self._fill(packer, order, lengths, opens_rows)
            if first is not None and (not taken or taken[0] != first):
                continue  # cannot happen for the narrowest width, which holds every item
            batch = self.finish(packer, taken)
            key = ((self.cost(batch.shape) + self.batch_overhead) / batch.real_tokens, width)
            if best_key is None or key < best_key:
                best, best_key = batch, key
        return best

    @staticmethod
    def _fill(packer: RowPacker, order: list[int], lengths: Sequence[int], opens_rows: list[bool]) -> list[int]:
        """Offer items to the packer in order and return those it took.

        Rows only fill up, so once an item of some length found no room, a later one at least
        as long cannot either (until a new row opens): those are skipped without a scan,
        which keeps planning hundreds of items to a few milliseconds."""
        taken: list[int] = []
        no_room_from = None  # the shortest length that found no room since the last new row
        rows = 0
        for i in order:
            length = lengths[i]
            if no_room_from is not None and length >= no_room_from:
                continue
            if packer.add(length, new_row=opens_rows[i]) is None:
                no_room_from = length
                continue
            taken.append(i)
            if packer.rows_used != rows:
                rows, no_room_from = packer.rows_used, None
        return taken

    def plan(self, lengths: Sequence[int]) -> list[PackedBatch]:
        """Place all items into batches: each batch starts from the longest item left, opens
        rows for the items of its width bucket and fills their holes with shorter items
        (`pack`), until every item is placed."""
        pending = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches = []
        while pending:
            batch = self.pack([lengths[i] for i in pending], first=0, narrow_fill_holes_only=True)
            taken = set(batch.indices)
            batches.append(PackedBatch([pending[j] for j in batch.indices], batch.placements,
                                       batch.shape, batch.real_tokens))
            pending = [index for j, index in enumerate(pending) if j not in taken]
        return batches



def padding_efficiency(batches: Sequence[PackedBatch]) -> float:
    """Real tokens / computed tokens over a set of batches."""
    computed = sum(b.shape.tokens for b in batches)
    return sum(b.real_tokens for b in batches) / computed if computed else 1.0
