"""The single-machine runner: read, embed and write one shard at a time (memory stays flat).

Shards already in the output folder are skipped, so the same command restarted after Ctrl-C
or a kill resumes; the progress bar counts only the rows still to do, so its rate and ETA
stay honest on a resumed run.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import pyarrow as pa
from tqdm.auto import tqdm

from .job import CorpusJob, Summary
from .readers import CorpusError, count_rows, read_rows
from .shards import BadRow, Shard, shards
from .tasks import Counts, TaskRunner, schema
from .writer import OutputFolder

log = logging.getLogger(__name__)
SHOWN_BAD_ROWS = 20  # bad rows printed as they come; all of them are in _bad_rows.jsonl


def load_model(job: CorpusJob):
    import tei_jax

    return tei_jax.load(job.model_id, **job.load_options)


def run_local(job: CorpusJob, model=None, progress: bool = True,
              say: Callable[[str], None] = tqdm.write) -> Summary:
    """Run `job` here (loading the model unless given one); returns the whole job's summary."""
    started = time.perf_counter()
    source = job.source()
    out = OutputFolder(job.output)
    if out.claim(job.fingerprint(source)):
        say(f"{job.output}: already complete")
        return _summary(out, started, Counts(), written=0, skipped=len(out.shard_infos()))
    runner = TaskRunner(model or load_model(job), job.task, job.task_options)
    load_seconds = time.perf_counter() - started
    table_schema = schema(runner.task, runner.width, pa.string() if job.id_field else pa.int64())
    run_counts, written, skipped, shown = Counts(), 0, 0, 0
    bar = tqdm(total=count_rows(source), unit="doc", disable=not progress, dynamic_ncols=True, smoothing=0.05)
    try:
        for shard in shards(read_rows(source), job.shard_size):
            if out.has_shard(shard.index):
                skipped += 1
                bar.total = max(bar.n, bar.total - (shard.stop - shard.start))
                bar.refresh()
                continue
            table, info = _embed_shard(runner, shard, job, table_schema, bar, run_counts, started + load_seconds)
            for bad in shard.bad:
                if shown < SHOWN_BAD_ROWS:
                    say(f"bad row {bad.row} (id {bad.id}): {bad.reason}")
                shown += 1
            out.write_shard(shard.index, table, info)
            written += 1
    finally:
        bar.close()
    return _summary(out, started, run_counts, written, skipped, finish=True, load_seconds=load_seconds)


def _embed_shard(runner: TaskRunner, shard: Shard, job: CorpusJob, table_schema: pa.Schema, bar, run_counts: Counts,
                 started: float) -> tuple[pa.Table, dict]:
    _fail_if_strict(job, shard.bad)
    ids, parts, counts = [], [], Counts()
    for begin in range(0, len(shard.texts), job.batch_docs):
        texts = shard.texts[begin:begin + job.batch_docs]
        batch_ids = shard.ids[begin:begin + job.batch_docs]
        numbers = shard.numbers[begin:begin + job.batch_docs]
        output = runner.run(texts)
        failed = [BadRow(numbers[i], batch_ids[i], reason) for i, reason in output.failed]
        _fail_if_strict(job, failed)
        shard.bad.extend(failed)
        ids.extend(batch_ids[i] for i in output.kept)
        parts.append(output.columns)
        counts.add(output.counts)
        run_counts.add(output.counts)
        bar.update(len(texts))
        elapsed = max(time.perf_counter() - started, 1e-9)
        bar.set_postfix_str(f"{run_counts.tokens / elapsed:,.0f} tok/s, padding {run_counts.padding_efficiency:.0%}",
                            refresh=False)
    bar.update(shard.stop - shard.start - len(shard.texts))  # the shard's bad rows
    columns = {"id": pa.array(ids, table_schema.field("id").type)}
    for name in table_schema.names[1:]:
        chunks = [part[name] for part in parts] or [pa.array([], table_schema.field(name).type)]
        columns[name] = pa.concat_arrays(chunks)
    table = pa.Table.from_pydict(columns, schema=table_schema)
    info = {"shard": shard.index, "rows": [shard.start, shard.stop], "counts": counts.as_dict(),
            "bad_rows": [bad.as_dict() for bad in sorted(shard.bad, key=lambda b: b.row)]}
    return table, info


def _fail_if_strict(job: CorpusJob, bad: list[BadRow]) -> None:
    if job.strict and bad:
        first = bad[0]
        raise CorpusError(f"bad row {first.row} (id {first.id}): {first.reason} (--strict)")


def _summary(out: OutputFolder, started: float, run_counts: Counts, written: int, skipped: int,
             finish: bool = False, load_seconds: float = 0.0) -> Summary:
    infos = out.shard_infos()
    total, bad_rows = Counts(), []
    for info in infos:
        total.add(Counts(**info["counts"]))
        bad_rows.extend(info["bad_rows"])
    if finish:
        out.finish(bad_rows)
    return Summary(total, len(bad_rows), time.perf_counter() - started, out.size_bytes(), written, skipped,
                   run_counts, load_seconds=load_seconds)
