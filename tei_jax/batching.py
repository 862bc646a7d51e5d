"""Lengths -> compiled shapes: the bucket ladders and the batch planner.

Every batch the engine runs has a shape from a closed set, so everything can be compiled
ahead of time and nothing compiles while serving. Sequence lengths climb a ladder of
multiples of 16 growing by about 1.4x (16, 32, 48, 64, 96, 128, 176, 240, ...), which bounds
padding to about a third in the worst case and a sixth on average while keeping the number of
shapes small; row counts are powers of two under the token budget.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

SEQ_MULTIPLE = 16
MAX_ROWS = 256  # beyond this, bigger batches buy nothing on any device we serve


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


@dataclasses.dataclass(frozen=True)
class ShapePolicy:
    """The closed set of (rows, seq_len) shapes a model runs with."""

    max_input_length: int
    max_batch_tokens: int = 16384
    max_batch_requests: int | None = None

    def __post_init__(self):
        if self.max_batch_tokens < SEQ_MULTIPLE:
            raise ValueError(f"max_batch_tokens must be at least {SEQ_MULTIPLE}")

    @property
    def seq_buckets(self) -> list[int]:
        return seq_ladder(self.max_input_length)

    def seq_bucket(self, length: int) -> int:
        for bucket in self.seq_buckets:
            if length <= bucket:
                return bucket
        raise ValueError(f"length {length} exceeds the largest bucket {self.seq_buckets[-1]}")

    def max_rows(self, seq_len: int) -> int:
        """Most rows a batch of this length may have: token budget, request cap, MAX_ROWS."""
        rows = max(1, self.max_batch_tokens // seq_len)
        if self.max_batch_requests:
            rows = min(rows, self.max_batch_requests)
        rows = min(rows, MAX_ROWS)
        return 1 << int(math.floor(math.log2(rows)))

    def row_bucket(self, rows: int, seq_len: int) -> int:
        return min(1 << max(0, math.ceil(math.log2(max(rows, 1)))), self.max_rows(seq_len))

    def shapes(self) -> list[tuple[int, int]]:
        """Every (rows, seq_len) the planner can produce, smallest first."""
        out = []
        for seq in self.seq_buckets:
            rows = 1
            while rows <= self.max_rows(seq):
                out.append((rows, seq))
                rows *= 2
        return out

    def plan(self, lengths: Sequence[int]) -> list[tuple[list[int], tuple[int, int]]]:
        """Split items (by length) into batches: [(item indices, (rows, seq_len)), ...].

        Items are grouped by sequence bucket so short items never pad to a long one; each
        group is cut into batches of at most max_rows, the last rounded up to a power of two.
        """
        by_bucket: dict[int, list[int]] = {}
        for index, length in enumerate(lengths):
            by_bucket.setdefault(self.seq_bucket(length), []).append(index)
        batches = []
        for seq in sorted(by_bucket, reverse=True):
            members = by_bucket[seq]
            cap = self.max_rows(seq)
            for start in range(0, len(members), cap):
                chunk = members[start : start + cap]
                batches.append((chunk, (self.row_bucket(len(chunk), seq), seq)))
        return batches


def padding_efficiency(lengths: Sequence[int], shapes: Sequence[tuple[int, int]]) -> float:
    """Real tokens / computed tokens for a set of batches."""
    computed = sum(rows * seq for rows, seq in shapes)
    return sum(lengths) / computed if computed else 1.0
