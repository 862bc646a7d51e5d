"""Corpus files -> a stream of (row number, id, text) in a fixed order, never loaded whole.

Files are read in sorted path order and each file front to back, so a row's number (its
position in the whole corpus, from 0) is the same on every run: that is what makes resuming
exact. Parquet and CSV stream through pyarrow's batch readers; JSON Lines and plain text are
read line by line, so one malformed line is one bad row, not a failed file. A value is
passed on as read: deciding what is a bad row is `documents.check`'s job.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import orjson

READ_ROWS = 4096  # rows per Arrow batch read


class Format(str, enum.Enum):
    """The input formats, by file suffix."""

    JSONL = "jsonl"
    PARQUET = "parquet"
    CSV = "csv"
    TEXT = "text"


SUFFIXES = {".jsonl": Format.JSONL, ".ndjson": Format.JSONL, ".json": Format.JSONL,
            ".parquet": Format.PARQUET, ".pq": Format.PARQUET, ".csv": Format.CSV,
            ".txt": Format.TEXT, ".text": Format.TEXT}


class CorpusError(Exception):
    """The corpus cannot be read as asked (no such path, unknown format, missing column)."""


@dataclass(frozen=True)
class Row:
    """One input row: its number in the corpus, its raw id value (None: use the number) and raw
    text value (anything the file held, or MISSING), or `problem` when the row is unreadable."""

    number: int
    id: Any
    text: Any
    problem: str | None = None


MISSING = object()


@dataclass(frozen=True)
class Source:
    """Which files to read and which fields hold the text and the id."""

    files: tuple[Path, ...]
    format: Format | None = None  # None: by suffix
    text_field: str = "text"
    id_field: str | None = None

    def format_of(self, path: Path) -> Format:
        return self.format or SUFFIXES[path.suffix.lower()]


def discover(path: str | os.PathLike, format: Format | str | None = None) -> tuple[Path, ...]:
    """A file, or every corpus file under a folder (recursively, sorted; names starting with
    '.' or '_' are skipped, as pyarrow does)."""
    root = Path(path)
    if root.is_file():
        if format is None and root.suffix.lower() not in SUFFIXES:
            raise CorpusError(f"{root}: unknown format (suffix {root.suffix!r}); pass --input-format")
        return (root,)
    if not root.is_dir():
        raise CorpusError(f"{root}: no such file or folder")
    wanted = set(SUFFIXES) if format is None else {s for s, f in SUFFIXES.items() if f == Format(format)}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in wanted
                   and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts))
    if not files:
        raise CorpusError(f"{root}: no {', '.join(sorted(wanted))} files in this folder")
    return tuple(files)


def read_rows(source: Source) -> Iterator[Row]:
    """Every row of every file, numbered from 0 across the corpus."""
    number = 0
    for path in source.files:
        for row_id, text, problem in _READERS[source.format_of(path)](path, source):
            yield Row(number, row_id, text, problem)
            number += 1


def count_rows(source: Source) -> int:
    """Rows in the corpus, cheaply: Parquet footers; newlines elsewhere (for CSV an estimate
    when quoted fields hold newlines). Used for the progress bar's ETA only."""
    import pyarrow.parquet as pq

    total = 0
    for path in source.files:
        fmt = source.format_of(path)
        if fmt is Format.PARQUET:
            total += pq.ParquetFile(path).metadata.num_rows
            continue
        lines, last = 0, b"\n"
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
        lines += last != b"\n"
        total += lines - 1 if fmt is Format.CSV else lines
    return total


# Readers: path -> (id, text, problem) per row ----------------------------------------------
def _read_text(path: Path, source: Source):
    with open(path, "rb") as handle:
        for line in handle:
            try:
                yield None, line.rstrip(b"\r\n").decode("utf-8"), None
            except UnicodeDecodeError:
                yield None, MISSING, "not UTF-8"


def _read_jsonl(path: Path, source: Source):
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():  # JSON Lines: blank lines are not records
                yield parse_json_line(line, source)


def parse_json_line(line: bytes, source: Source) -> tuple[Any, Any, str | None]:
    """One JSON Lines record -> (id, text, problem); an unreadable line has no id to report."""
    no_id = MISSING if source.id_field else None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return no_id, MISSING, f"invalid JSON ({exc.msg})"
    if not isinstance(record, dict):
        return no_id, MISSING, "not a JSON object"
    row_id = None
    if source.id_field:
        row_id = record.get(source.id_field)
        row_id = MISSING if row_id is None else row_id
    return row_id, record.get(source.text_field, MISSING), None


def _arrow_batches(path: Path, source: Source, fmt: Format):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    columns = [source.text_field] + ([source.id_field] if source.id_field else [])
    if fmt is Format.PARQUET:
        handle = pq.ParquetFile(path)
        names = handle.schema_arrow.names
        _require_columns(path, names, columns)
        yield from handle.iter_batches(batch_size=READ_ROWS, columns=columns)
        return
    _require_columns(path, _csv_header(path), columns)
    types = {name: pa.string() for name in columns}  # CSV: values stay text, ids included
    yield from pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20),
                              convert_options=pacsv.ConvertOptions(column_types=types, include_columns=columns))


def _csv_header(path: Path) -> list[str]:
    import pyarrow.csv as pacsv

    with pacsv.open_csv(path) as reader:
        return reader.schema.names


def _require_columns(path: Path, names: Sequence[str], columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise CorpusError(f"{path}: no column {missing[0]!r} (columns: {', '.join(names)}); "
                          f"choose one with --text-field / --id-field")


def _read_arrow(fmt: Format):
    def read(path: Path, source: Source):
        for batch in _arrow_batches(path, source, fmt):
            texts = batch.column(source.text_field).to_pylist()
            ids = batch.column(source.id_field).to_pylist() if source.id_field else [None] * len(texts)
            for row_id, text in zip(ids, texts):
                yield (MISSING if source.id_field and row_id is None else row_id,
                       MISSING if text is None else text, None)

    return read


_READERS = {Format.TEXT: _read_text, Format.JSONL: _read_jsonl,
            Format.PARQUET: _read_arrow(Format.PARQUET), Format.CSV: _read_arrow(Format.CSV)}
