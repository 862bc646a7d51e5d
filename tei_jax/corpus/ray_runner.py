"""The same corpus job on Ray Data: read with `ray.data`, embed with `map_batches` on an actor
pool holding one engine per accelerator, write Parquet with `ray.data`.

Rows get the local runner's ids (row numbers are attached by zipping with `ray.data.range`
in input order) and the same bad-row rules. Resuming is per job, not per shard: Ray writes
into a hidden folder that is moved into place when the whole dataset is written, so a run
interrupted half-way starts again from the beginning and a finished one is not redone. Each
actor appends its counts and bad rows to its own side file, gathered for the summary.
Ray is imported only here, so `pip install 'tei-jax[ray]'` is needed only for `--ray`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .job import CorpusJob, Summary
from .readers import MISSING, CorpusError, Format, Row, Source, parse_json_line
from .shards import BadRow, problem, row_id
from .tasks import Counts, TaskRunner, schema
from .writer import OutputFolder, atomic_write, shard_name

INSTALL_HINT = "--ray needs Ray Data: pip install 'tei-jax[ray]'"
PARTS, STATS = ".ray-parts", "_ray_stats.json"
ROW = "_row"  # the row-number column attached before embedding


@dataclass(frozen=True)
class RayOptions:
    """Where to run and what each engine reserves."""

    address: str | None = None  # None: start a local cluster
    actors: int | None = None  # default: one per GPU / TPU host; on CPU, CPUs - 1
    accelerator: str = "auto"  # auto | cpu | gpu | tpu
    cpus_per_actor: float = 1.0
    num_cpus: int | None = None  # size of a local cluster


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return ray


def run_ray(job: CorpusJob, options: RayOptions = RayOptions(), progress: bool = True) -> Summary:
    """Run `job` on Ray Data; returns the summary."""
    ray = import_ray()
    started = time.perf_counter()
    source = job.source()
    _format(source)  # one format, checked before a cluster starts
    out = OutputFolder(job.output)
    if out.claim({**job.fingerprint(source), "runner": "ray"}):
        return _summary(out, started, Counts(), 0.0)
    _init(ray, options)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # row numbers follow the input order
    context.enable_progress_bars = progress
    parts = out.path / PARTS
    shutil.rmtree(parts, ignore_errors=True)
    (parts / "stats").mkdir(parents=True)
    dataset = _read(ray, source)
    resources, actors = _actor_resources(ray, options)
    embedded = dataset.map_batches(
        EmbedActor, fn_constructor_kwargs={"job": job, "source": source, "stats_dir": str(parts / "stats")},
        compute=ray.data.ActorPoolStrategy(size=actors), batch_size=job.batch_docs, batch_format="pyarrow",
        **resources)
    try:
        embedded.write_parquet(str(parts / "data"))
    except Exception as exc:  # an actor's CorpusError (--strict) arrives wrapped in Ray's errors
        message = _corpus_error(exc)
        if message is None:
            raise
        raise CorpusError(message) from None
    for index, path in enumerate(sorted((parts / "data").glob("*.parquet"))):
        os.replace(path, out.path / shard_name(index))
    counts, bad_rows = _gather(parts / "stats")
    stats = {"counts": counts.as_dict(), "actors": actors, "resources": resources}
    atomic_write(out.path / STATS, lambda f: f.write(json.dumps(stats).encode()))
    out.finish(bad_rows)
    shutil.rmtree(parts, ignore_errors=True)
    return _summary(out, started, counts, 0.0)


def _init(ray, options: RayOptions) -> None:
    if ray.is_initialized():
        return
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING)
    if options.address:
        ray.init(address=options.address, **kwargs)
        return
    import tei_jax  # a local cluster's workers import this same checkout

    package_root = str(Path(tei_jax.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=options.num_cpus, runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)


def _actor_resources(ray, options: RayOptions) -> tuple[dict, int]:
    """map_batches resources of one engine, and how many engines."""
    cluster = ray.cluster_resources()
    kind = options.accelerator
    if kind == "auto":
        kind = "gpu" if cluster.get("GPU") else "tpu" if cluster.get("TPU") else "cpu"
    if kind == "gpu":
        return {"num_gpus": 1}, options.actors or max(1, int(cluster.get("GPU", 1)))
    if kind == "tpu":  # one engine per TPU host, owning all of that host's chips
        per_host = max((n.get("Resources", {}).get("TPU", 0) for n in ray.nodes() if n.get("Alive")), default=1) or 1
        return ({"resources": {"TPU": per_host}},
                options.actors or max(1, int(cluster.get("TPU", per_host) // per_host)))
    default = max(1, int((cluster.get("CPU", 2) - 1) // options.cpus_per_actor))
    return {"num_cpus": options.cpus_per_actor}, options.actors or default


# Reading and parsing -----------------------------------------------------------------------------------
def _format(source: Source) -> Format:
    formats = {source.format_of(p) for p in source.files}
    if len(formats) != 1:
        raise CorpusError(f"--ray reads one format at a time; the input mixes {', '.join(sorted(f.value for f in formats))}")
    return formats.pop()


def _read(ray, source: Source):
    """ray.data read of the corpus files (raw lines for text and JSON Lines), row numbers
    attached in input order when ids are row numbers."""
    files = [str(p) for p in source.files]
    fmt = _format(source)
    columns = [source.text_field] + ([source.id_field] if source.id_field else [])
    if fmt is Format.PARQUET:
        dataset = ray.data.read_parquet(files, columns=columns)
    elif fmt is Format.CSV:
        import pyarrow.csv as pacsv

        types = {name: pa.string() for name in columns}
        dataset = ray.data.read_csv(files, convert_options=pacsv.ConvertOptions(column_types=types,
                                                                                include_columns=columns))
    else:
        dataset = ray.data.read_text(files, drop_empty_lines=fmt is Format.JSONL)  # JSONL: blank lines are no rows
    if source.id_field is None:
        numbers = ray.data.range(dataset.count()).rename_columns({"id": ROW})
        with warnings.catch_warnings():  # deprecated for unordered datasets; ours preserves order
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = dataset.zip(numbers)
    return dataset


def _parse(table: pa.Table, source: Source, fmt: Format) -> list[Row]:
    """A batch as read -> Rows, with the local reader's rules."""
    numbers = table.column(ROW).to_pylist() if ROW in table.column_names else [-1] * table.num_rows
    if fmt in (Format.TEXT, Format.JSONL):
        lines = table.column("text").to_pylist()
        if fmt is Format.TEXT:
            return [Row(n, None, line.rstrip("\r")) for n, line in zip(numbers, lines)]
        return [Row(n, *parse_json_line(line.encode(), source)) for n, line in zip(numbers, lines)]
    texts = table.column(source.text_field).to_pylist()
    ids = table.column(source.id_field).to_pylist() if source.id_field else [None] * len(texts)
    return [Row(n, MISSING if source.id_field and i is None else i, MISSING if t is None else t)
            for n, i, t in zip(numbers, ids, texts)]


class EmbedActor:
    """One engine: loads the model once, then embeds batches of rows."""

    def __init__(self, job: CorpusJob, source: Source, stats_dir: str):
        from .local import load_model

        self.job, self.source, self.fmt = job, source, _format(source)
        self.runner = TaskRunner(load_model(job), job.task, job.task_options)
        id_type = pa.string() if job.id_field else pa.int64()
        self.schema = schema(self.runner.task, self.runner.width, id_type)
        self.stats = open(Path(stats_dir) / f"actor-{uuid.uuid4().hex}.jsonl", "a")

    def __call__(self, table: pa.Table) -> pa.Table:
        good, bad = [], []
        for row in _parse(table, self.source, self.fmt):
            identifier, reason = row_id(row), problem(row)
            if reason:
                bad.append(BadRow(row.number, None if identifier is MISSING else identifier, reason))
            else:
                good.append((row.number, identifier, row.text))
        output = self.runner.run([text for _, _, text in good])
        bad += [BadRow(good[i][0], good[i][1], reason) for i, reason in output.failed]
        if self.job.strict and bad:
            raise CorpusError(f"bad row {bad[0].row} (id {bad[0].id}): {bad[0].reason} (--strict)")
        self.stats.write(json.dumps({"counts": output.counts.as_dict(), "bad_rows": [b.as_dict() for b in bad]},
                                    default=str) + "\n")
        self.stats.flush()
        columns = {"id": pa.array([good[i][1] for i in output.kept], self.schema.field("id").type)}
        columns.update(output.columns)
        return pa.Table.from_pydict(columns, schema=self.schema)


def _corpus_error(exc: BaseException) -> str | None:
    """The message of a CorpusError raised in an actor: in the cause chain, or (when Ray sent
    only its text across) in the rendered traceback."""
    seen, current = set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, CorpusError):
            return str(current)
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    found = re.search(r"CorpusError: (.+)", str(exc))
    return found.group(1).strip() if found else None


def _gather(stats_dir: Path) -> tuple[Counts, list[dict]]:
    counts, bad = Counts(), {}
    for path in sorted(stats_dir.glob("actor-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            counts.add(Counts(**record["counts"]))
            for row in record["bad_rows"]:
                bad[(row["row"], str(row["id"]))] = row  # a retried batch reports its rows again
    ordered = sorted(bad.values(), key=lambda r: (r["row"] is None, r["row"] or 0, str(r["id"])))
    return counts, ordered


def _summary(out: OutputFolder, started: float, run_counts: Counts, load_seconds: float) -> Summary:
    stats_path = out.path / STATS
    total = Counts(**json.loads(stats_path.read_text())["counts"]) if stats_path.exists() else Counts()
    bad_path = out.path / "_bad_rows.jsonl"
    bad_rows = len(bad_path.read_text().splitlines()) if bad_path.exists() else 0
    files = len(list(out.path.glob("part-*.parquet")))
    return Summary(total, bad_rows, time.perf_counter() - started, out.size_bytes(), files if run_counts.documents
                   else 0, 0 if run_counts.documents else files, run_counts, load_seconds, runner="ray")
