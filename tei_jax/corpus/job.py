"""A corpus job as data (what the CLI parsed), its fingerprint, and its end-of-run summary."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .readers import Format, Source, discover
from .tasks import Counts, Task, TaskOptions

# load() options that change speed or where things are cached, never the vectors.
NOT_IN_FINGERPRINT = ("token", "cache_dir", "compile_cache", "max_batch_requests", "batch_tokens")


@dataclass(frozen=True)
class CorpusJob:
    """Everything a run needs; the same job restarted resumes where it stopped."""

    model_id: str
    input: str
    output: str
    task: Task = Task.EMBED
    task_options: TaskOptions = TaskOptions()
    load_options: dict = field(default_factory=dict)  # tei_jax.load() keyword arguments
    input_format: Format | None = None
    text_field: str = "text"
    id_field: str | None = None
    shard_size: int = 10_000  # input rows per output shard
    batch_docs: int = 1024  # documents per model call (the planner packs within a call)
    strict: bool = False  # a bad row fails the run instead of being skipped

    def source(self) -> Source:
        return Source(discover(self.input, self.input_format), self.input_format, self.text_field, self.id_field)

    def fingerprint(self, source: Source) -> dict:
        """What must match for a restart to resume: the manifest's content."""
        root = Path(self.input)
        files = [[str(p.relative_to(root)) if root.is_dir() else p.name, p.stat().st_size] for p in source.files]
        load = {k: v for k, v in sorted(self.load_options.items()) if k not in NOT_IN_FINGERPRINT}
        return {
            "model_id": self.model_id, "task": Task(self.task).value,
            "task_options": dataclasses.asdict(self.task_options), "load_options": load,
            "input_files": files, "input_format": self.input_format and Format(self.input_format).value,
            "text_field": self.text_field, "id_field": self.id_field, "shard_size": self.shard_size,
        }


@dataclass
class Summary:
    """The end-of-run report: the whole job's counts, and what this run did."""

    counts: Counts
    bad_rows: int
    seconds: float
    output_bytes: int
    shards_written: int
    shards_skipped: int
    run_counts: Counts = field(default_factory=Counts)  # this run only (for rates)
    load_seconds: float = 0.0  # of `seconds`: loading the model (and, on Ray, starting the actors)
    runner: str = "local"

    @property
    def embed_seconds(self) -> float:
        return max(self.seconds - self.load_seconds, 1e-9)

    @property
    def documents_per_second(self) -> float:
        """Documents embedded per second once the model was loaded (compilation included)."""
        return self.run_counts.documents / self.embed_seconds

    @property
    def tokens_per_second(self) -> float:
        return self.run_counts.tokens / self.embed_seconds

    def as_dict(self) -> dict:
        return {
            "runner": self.runner, "documents": self.counts.documents, "bad_rows": self.bad_rows,
            "tokens": self.counts.tokens, "computed_tokens": self.counts.computed_tokens,
            "padding_efficiency": round(self.counts.padding_efficiency, 4), "seconds": round(self.seconds, 3),
            "load_seconds": round(self.load_seconds, 3),
            "documents_per_second": round(self.documents_per_second, 2),
            "tokens_per_second": round(self.tokens_per_second, 1), "output_bytes": self.output_bytes,
            "shards_written": self.shards_written, "shards_skipped": self.shards_skipped,
        }

    def text(self) -> str:
        c = self.counts
        lines = [
            f"documents   {c.documents:,} embedded, {self.bad_rows:,} bad rows skipped",
            f"tokens      {c.tokens:,} ({c.computed_tokens:,} computed: padding efficiency "
            f"{c.padding_efficiency:.1%})",
            f"this run    {self.seconds:.1f} s (model load {self.load_seconds:.1f} s), "
            f"{self.run_counts.documents:,} documents: {self.documents_per_second:,.1f}/s, "
            f"{self.tokens_per_second:,.0f} tokens/s",
            f"output      {self.output_bytes / 1e6:,.1f} MB in {self.shards_written + self.shards_skipped} shards "
            f"({self.shards_skipped} already written, skipped)",
        ]
        return "\n".join(lines)
