"""Lengths -> compiled shapes: the shape ladders and the packing batch planner.

Every batch the engine runs has a shape (rows, width, slots) from a closed set, so all of it
can be compiled ahead of time and nothing compiles while serving. Several sequences may share
a row (packing): each sits in its own slot, with its own positions and a segment id that keeps
attention inside it, so computed tokens stay close to real tokens whatever the length mix.

- widths climb a ladder of multiples of 16 growing about 1.4x (16, 32, 48, 64, 96, 128, 176,
  240, ...) up to the model's max input length; packed batches start at `min_width`;
- row counts climb 1, 2, 3, 4, 6, 8, 12, 16, ... under the token budget;
- slots per row are width // 4 when packing (a row can hold that many sequences), else 1.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

SEQ_MULTIPLE = 16
MAX_ROWS = 256  # beyond this, bigger batches buy nothing on any device we serve
MIN_TOKENS_PER_SLOT = 4


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


def row_ladder(max_rows: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, 24, ... up to max_rows (about 1.5x steps)."""
    ladder, power = [], 1
    while power <= max_rows:
        ladder.append(power)
        if power >= 4 and power + power // 2 <= max_rows:
            ladder.append(power + power // 2)
        power *= 2
    if 3 <= max_rows and 3 not in ladder:
        ladder.append(3)
    return sorted(set(ladder))


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

    def __post_init__(self):
        if self.max_batch_tokens < SEQ_MULTIPLE:
            raise ValueError(f"max_batch_tokens must be at least {SEQ_MULTIPLE}")
        if self.batch_tokens is not None and self.batch_tokens < SEQ_MULTIPLE:
            raise ValueError(f"batch_tokens must be at least {SEQ_MULTIPLE}")

    @property
    def token_budget(self) -> int:
        """Most tokens (padding included) one batch computes."""
        return min(self.max_batch_tokens, self.batch_tokens or self.max_batch_tokens)

    @property
    def widths(self) -> list[int]:
        ladder = seq_ladder(self.max_input_length)
        if not self.packing:
            return ladder
        floor = min(self.min_width, ladder[-1])
        return [w for w in ladder if w >= floor] or [ladder[-1]]

    def width_for(self, length: int) -> int:
        """The narrowest width that holds a sequence of this length."""
        for width in self.widths:
            if length <= width:
                return width
        raise ValueError(f"length {length} exceeds the largest width {self.widths[-1]}")

    seq_bucket = width_for

    def slots_for(self, width: int) -> int:
        return max(1, width // MIN_TOKENS_PER_SLOT) if self.packing else 1

    def max_rows(self, width: int) -> int:
        """Most rows a batch of this width may have: token budget, request cap, MAX_ROWS."""
        rows = max(1, self.token_budget // width)
        if self.max_batch_requests:
            rows = min(rows, self.max_batch_requests)
        return row_ladder(min(rows, MAX_ROWS))[-1]  # a compiled row count

    def rows_bucket(self, rows: int, width: int) -> int:
        """The smallest compiled row count >= rows."""
        for candidate in row_ladder(self.max_rows(width)):
            if candidate >= rows:
                return candidate
        raise ValueError(f"{rows} rows exceed the maximum {self.max_rows(width)} at width {width}")

    def shapes(self) -> list[BatchShape]:
        """Every shape the planner can produce, smallest first."""
        return [BatchShape(rows, width, self.slots_for(width))
                for width in self.widths for rows in row_ladder(self.max_rows(width))]

    def packer(self, width: int) -> RowPacker:
        return RowPacker(width, self.max_rows(width), self.slots_for(width), self.max_batch_requests)

    def finish(self, packer: RowPacker, indices: list[int]) -> PackedBatch:
        shape = BatchShape(self.rows_bucket(packer.rows_used, packer.width), packer.width, packer.slots)
        return PackedBatch(list(indices), list(packer.placements), shape, packer.tokens_used)

    def plan(self, lengths: Sequence[int]) -> list[PackedBatch]:
        """Place all items into batches, longest first.

        Each batch takes its width from its longest item; items that would prefer a narrower
        width only fill holes left in rows already open, so short items are never spread over
        wide rows of their own.
        """
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        pending = list(order)
        batches = []
        while pending:
            width = self.width_for(lengths[pending[0]])
            packer = self.packer(width)
            taken, rest = [], []
            for index in pending:
                own_width = self.width_for(lengths[index])
                if packer.add(lengths[index], new_row=own_width == width) is not None:
                    taken.append(index)
                else:
                    rest.append(index)
            batches.append(self.finish(packer, taken))
            pending = rest
        return batches


def padding_efficiency(batches: Sequence[PackedBatch]) -> float:
    """Real tokens / computed tokens over a set of batches."""
    computed = sum(b.shape.tokens for b in batches)
    return sum(b.real_tokens for b in batches) / computed if computed else 1.0
