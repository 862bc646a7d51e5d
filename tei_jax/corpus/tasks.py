"""The one place the corpus runners talk to a Model: texts in, Arrow columns and counts out.

It calls the model's own operations (`model.embed` / `embed_sparse` / `predict`, with a `Call`
that reports the tokens), so a corpus row gets exactly what they return for the same text,
and it counts the real and computed tokens for the progress bar and the summary. A batch that the model refuses
(a TEI error) is retried one text at a time so the culprits become bad rows and the rest is
embedded.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa

from ..errors import TEIError
from ..executor import Call, Job
from ..tasks import Operation


class Task(str, enum.Enum):
    """What each document becomes: a dense vector, a SPLADE vector, or class scores."""

    EMBED = "embed"
    SPARSE = "sparse"
    PREDICT = "predict"


@dataclass(frozen=True)
class TaskOptions:
    """The per-call options of the model operations (load options live in the job)."""

    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: str = "right"
    prompt_name: str | None = None
    dimensions: int | None = None
    raw_scores: bool = False


@dataclass
class Counts:
    """What was done: documents embedded, their tokens, and the tokens the device computed."""

    documents: int = 0
    tokens: int = 0
    computed_tokens: int = 0

    def add(self, other: "Counts") -> None:
        self.documents += other.documents
        self.tokens += other.tokens
        self.computed_tokens += other.computed_tokens

    @property
    def padding_efficiency(self) -> float:
        return self.tokens / self.computed_tokens if self.computed_tokens else 1.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Output:
    """Columns for the texts that worked (in order), and (index, reason) for those that did not."""

    columns: dict[str, pa.Array]
    kept: list[int]
    failed: list[tuple[int, str]] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)


def schema(task: Task, width: int | None, id_type: pa.DataType) -> pa.Schema:
    """The output schema: id plus the task's columns (embeddings as fixed-size float32 lists)."""
    if task is Task.EMBED:
        columns = [("embedding", pa.list_(pa.float32(), width))]
    elif task is Task.SPARSE:
        columns = [("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))]
    else:
        columns = [("labels", pa.list_(pa.string())), ("scores", pa.list_(pa.float32()))]
    return pa.schema([("id", id_type), *columns])


class TaskRunner:
    """Runs one task of one model over lists of texts."""

    def __init__(self, model, task: Task, options: TaskOptions = TaskOptions()):
        self.model, self.task, self.options = model, Task(task), options
        self.check()

    def check(self) -> None:
        """Fail before reading the corpus when the model cannot do the task (TEI's errors)."""
        if self.task is Task.EMBED:
            self.model.check_embed_options(self.options.normalize, self.options.dimensions)
        elif self.task is Task.SPARSE:
            self.model.require(Operation.EMBED_SPARSE)
        else:
            self.model.require(Operation.PREDICT)

    @property
    def width(self) -> int | None:
        """Embedding width of the output (after `dimensions`), for the fixed-size list type."""
        if self.task is not Task.EMBED:
            return None
        return self.options.dimensions or self.model.embedding_dim

    def run(self, texts: Sequence[str]) -> Output:
        """Columns for `texts`; texts the model refuses are reported, the rest still run."""
        try:
            return self._run(list(texts), list(range(len(texts))))
        except TEIError:
            if len(texts) == 1:
                raise
        failed, kept = [], []
        for index, text in enumerate(texts):
            try:
                self._prepare([text])
                kept.append(index)
            except TEIError as exc:
                failed.append((index, f"{exc.error_type}: {exc.message}"))
        output = self._run([texts[i] for i in kept], kept)
        output.failed = failed
        return output

    # The model operations -------------------------------------------------------------------
    def _prepare(self, texts: list[str]) -> None:
        """Raise the TEI error the operation would raise for `texts`, without running them:
        the operation runs over an executor that stops once the inputs are tokenized."""
        try:
            self._call(self.model.with_executor(_TokenizeOnly()), texts, Call())
        except _Tokenized:
            pass

    def _call(self, model, texts: list[str], call: Call):
        o = self.options
        if self.task is Task.EMBED:
            return model.embed(texts, normalize=o.normalize, truncate=o.truncate,
                               truncation_direction=o.truncation_direction, prompt_name=o.prompt_name,
                               dimensions=o.dimensions, call=call)
        if self.task is Task.SPARSE:
            return model.embed_sparse(texts, truncate=o.truncate, truncation_direction=o.truncation_direction,
                                      prompt_name=o.prompt_name, call=call)
        return model.predict([[t] for t in texts], raw_scores=o.raw_scores, truncate=o.truncate,
                             truncation_direction=o.truncation_direction, call=call)

    def _run(self, texts: list[str], kept: list[int]) -> Output:
        if not texts:
            return Output(self._columns([]), kept)
        call = Call()
        answers = self._call(self.model, texts, call)
        lengths = call.input_lengths
        computed = sum(batch.shape.tokens for batch in self.model.engine.policy.plan(lengths))
        counts = Counts(len(texts), sum(lengths), computed)
        return Output(self._columns(answers), kept, counts=counts)

    def _columns(self, answers) -> dict[str, pa.Array]:
        if self.task is Task.EMBED:
            vectors = answers if len(answers) else np.zeros((0, self.width), np.float32)
            return {"embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.width)}
        if self.task is Task.SPARSE:
            offsets = pa.array(np.cumsum([0] + [len(entries) for entries in answers]), pa.int32())
            flat_index = np.array([e["index"] for entries in answers for e in entries], np.int32)
            flat_value = np.array([e["value"] for entries in answers for e in entries], np.float32)
            return {"indices": pa.ListArray.from_arrays(offsets, pa.array(flat_index)),
                    "values": pa.ListArray.from_arrays(offsets, pa.array(flat_value))}
        return {"labels": pa.array([[r["label"] for r in row] for row in answers], pa.list_(pa.string())),
                "scores": pa.array([[r["score"] for r in row] for row in answers], pa.list_(pa.float32()))}


class _Tokenized(Exception):
    """Raised by `_TokenizeOnly` once a job's inputs were tokenized without error."""


class _TokenizeOnly:
    """An executor that tokenizes a job (raising its TEI errors) and runs nothing."""

    def run(self, job: Job, call: Call | None = None):
        job.encode()
        raise _Tokenized()
