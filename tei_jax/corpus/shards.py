"""Rows -> shards of a fixed number of input rows, and what counts as a bad row.

Shard k holds input rows [k * size, (k + 1) * size): the same rows on every run, so a shard
written before an interruption is skipped on restart and the output ends with exactly one row
per good input. A bad row (missing or non-string or empty text, missing id, unreadable line)
is recorded with its id and reason in its shard instead of being embedded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .readers import MISSING, Row


@dataclass(frozen=True)
class BadRow:
    """An input row that was not embedded, and why."""

    row: int
    id: object
    reason: str

    def as_dict(self) -> dict:
        return {"row": self.row, "id": self.id, "reason": self.reason}


@dataclass
class Shard:
    """Input rows [start, stop): the good ones (ids and texts, in order) and the bad ones."""

    index: int
    start: int
    stop: int = 0
    numbers: list[int] = field(default_factory=list)  # row numbers of the good rows
    ids: list = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)


def row_id(row: Row) -> object:
    """The output id: the row number by default, else the id field's value as a string."""
    if row.id is None:
        return row.number
    return MISSING if row.id is MISSING else str(row.id)


def problem(row: Row) -> str | None:
    """Why a row cannot be embedded, or None."""
    if row.problem:
        return row.problem
    if row.id is MISSING:
        return "missing id"
    if row.text is MISSING or row.text is None:
        return "missing text"
    if not isinstance(row.text, str):
        return f"text is not a string ({type(row.text).__name__})"
    if row.text == "":
        return "empty text"
    return None


def shards(rows: Iterator[Row], size: int) -> Iterator[Shard]:
    """Group numbered rows into shards of `size` input rows (the last may be shorter)."""
    if size < 1:
        raise ValueError("shard size must be at least 1")
    shard = Shard(0, 0)
    for row in rows:
        if row.number >= shard.start + size:
            shard.stop = row.number
            yield shard
            shard = Shard(shard.index + 1, row.number)
        reason = problem(row)
        identifier = row_id(row)
        if reason:
            shard.bad.append(BadRow(row.number, None if identifier is MISSING else identifier, reason))
        else:
            shard.numbers.append(row.number)
            shard.ids.append(identifier)
            shard.texts.append(row.text)
        shard.stop = row.number + 1
    if shard.stop > shard.start:
        yield shard
