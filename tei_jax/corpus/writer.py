"""The output folder: Parquet shards written whole or not at all, and the job's manifest.

Layout of OUTPUT/:
    _manifest.json          the job (model, task, options, input files, shard size): a restart
                            with another job is refused instead of mixing results
    part-00000.parquet      input rows [0, shard_size): one row per good input, in input order
    part-00001.parquet      ...
    _bad_rows.jsonl         every bad row (row number, id, reason), rewritten at the end
    _SUCCESS                written last: the job is complete

A shard is written to a hidden temporary file, flushed to disk and renamed: a shard file that
exists is complete. Each shard's Parquet metadata (key `tei_jax`) records its input rows, its
bad rows and its token counts, so a resumed run still reports the whole job. pyarrow and Ray
skip names starting with '_' or '.', so `pyarrow.dataset.dataset(OUTPUT)` reads the
embeddings only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST, BAD_ROWS, SUCCESS = "_manifest.json", "_bad_rows.jsonl", "_SUCCESS"
METADATA_KEY = b"tei_jax"


class OutputError(Exception):
    """The output folder holds another job's results."""


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def atomic_write(path: Path, write) -> None:
    """Call write(binary file) on a temporary neighbour, fsync it, then rename onto `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class OutputFolder:
    """One job's output folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def claim(self, job: dict) -> bool:
        """Create the folder for `job`, or accept it if it holds the same job (resume); returns
        whether the job is already complete. Another job's folder is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.path / MANIFEST
        if manifest.exists():
            existing = json.loads(manifest.read_text())
            if existing != job:
                changed = sorted(k for k in set(existing) | set(job) if existing.get(k) != job.get(k))
                raise OutputError(f"{self.path} holds the results of another job (different {', '.join(changed)}); "
                                  f"use a new --output folder, or delete this one to start again")
        else:
            if any(p.name.startswith("part-") for p in self.path.iterdir()):
                raise OutputError(f"{self.path} holds Parquet parts but no {MANIFEST}: not ours to overwrite")
            atomic_write(manifest, lambda f: f.write(json.dumps(job, indent=2, sort_keys=True).encode()))
        for stale in self.path.glob(".part-*.tmp"):  # a shard interrupted mid-write
            stale.unlink()
        return (self.path / SUCCESS).exists()

    def has_shard(self, index: int) -> bool:
        return (self.path / shard_name(index)).exists()

    def write_shard(self, index: int, table: pa.Table, info: dict) -> int:
        """Write one shard atomically with `info` in its metadata; returns its size in bytes."""
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(info).encode()})
        path = self.path / shard_name(index)
        atomic_write(path, lambda f: pq.write_table(table, f))
        return path.stat().st_size

    def shard_infos(self) -> list[dict]:
        """The metadata of every shard written, in shard order."""
        infos = []
        for path in sorted(self.path.glob("part-*.parquet")):
            metadata = pq.read_schema(path).metadata or {}
            if METADATA_KEY in metadata:
                infos.append(json.loads(metadata[METADATA_KEY]))
        return infos

    def finish(self, bad_rows: list[dict]) -> None:
        """Write the bad-row report, then mark the job complete."""
        lines = b"".join(json.dumps(row, default=str).encode() + b"\n" for row in bad_rows)
        atomic_write(self.path / BAD_ROWS, lambda f: f.write(lines))
        atomic_write(self.path / SUCCESS, lambda f: f.write(b""))

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.glob("part-*.parquet"))
