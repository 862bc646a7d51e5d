"""`tei_jax.load()` and the `Model` a user holds: TEI's operations as Python methods.

Each operation (`embed`, `embed_all`, `embed_sparse`, `similarity`, `predict`, `rerank`) is the
one implementation, for a notebook and for the server alike: it checks the model serves it
(tei_jax/tasks.py) and its options, reads TEI's input rules (tei_jax/inputs.py), hands a
`Job` (task + tokenization) to its executor, and turns the outputs into TEI's answer. The
executor is a `DirectExecutor` by default; the server swaps in its batching scheduler with
`with_executor`, and passes a `Call` per request to learn timings and to withdraw the work of
a client that went away. `tokenize` and `decode` need no device and run in the caller.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import inputs as tei_inputs
from . import chunking, executables, functional, models
from . import cpu_devices as cpu_devices_setup
from .batching import EXACT_ROWS, ShapePolicy
from .compile_cache import enable as enable_compile_cache
from .config import ModelSpec, load_spec
from .engine import Engine
from .errors import BackendError, ModelLoadError, NaNScoreError, ValidationError
from .executor import Call, DirectExecutor, Executor, Job
from .hub import DEFAULT_MODEL_ID, resolve_model_dir
from .models.attention import resolve_implementation
from .pooling import scores_from_logits, sparse_entries, truncate_and_normalize
from .sharding import Placement
from .tasks import ModelKind, Operation, Task, operations_for, refusal
from .tokenization import Encoded, Input, Tokenizer, rust_list
from .weights import WeightReader, load_dense_module, safetensors_files

log = logging.getLogger(__name__)

# Measured on 2 CPU cores (MiniLM, 512 mixed-length texts): 1k-token batches ran 155 seq/s,
# 2k 148, 3k 140, 16k 101: small batches keep their activations in cache.
CPU_BATCH_TOKENS = 1024
CPU_EXACT_ROWS = 16  # ShapePolicy.exact_rows on CPU: short-query calls round up to fewer padded rows

DTYPES = {"float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}
PredictInput = Union[str, Sequence[str], Sequence[Sequence[str]]]
EmbedInput = Union[Input, Sequence[Input]]


def default_dtype() -> str:
    """float32 on CPU; bfloat16 on accelerators."""
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


class Model:
    """A loaded model with TEI's operations; see `tei_jax.load`."""

    def __init__(self, spec: ModelSpec, tokenizer: Tokenizer, engine: Engine, model_id: str,
                 revision: str | None, dtype: str, auto_truncate: bool = True,
                 chunk: chunking.ChunkOptions | None = None, executor: Executor | None = None):
        self.spec = spec
        self.tokenizer = tokenizer
        self.engine = engine
        self.model_id = model_id
        self.revision = revision
        self.dtype = dtype
        self.auto_truncate = auto_truncate
        self.chunk = chunk  # None: long inputs follow TEI's truncation rules
        self.executor: Executor = executor or DirectExecutor(engine)

    def with_executor(self, executor: Executor) -> "Model":
        """The same model (weights, tokenizer, compiled shapes shared) running its batches
        through `executor`, e.g. the server's `Scheduler`."""
        served = copy.copy(self)
        served.executor = executor
        return served

    # Facts ---------------------------------------------------------------------------------
    @property
    def kind(self) -> ModelKind:
        return ModelKind(self.spec.kind)

    @property
    def operations(self) -> tuple[Operation, ...]:
        """The operations this model serves; the first is TEI's default (`POST /`)."""
        return operations_for(self.kind, self.spec.pooling)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The engine programs this model compiles."""
        return self.engine.tasks

    @property
    def backend(self) -> str:
        """Where it runs: JAX's platform name ("cpu", "gpu", "tpu")."""
        return jax.default_backend()

    @property
    def max_input_length(self) -> int:
        return self.tokenizer.max_input_length

    @property
    def compile_count(self) -> int:
        return self.engine.compile_count

    @property
    def placement(self) -> Placement:
        """The device mesh and shardings the model runs on (tei_jax/sharding.py)."""
        return self.engine.placement

    @property
    def sharding_info(self) -> dict:
        """Devices, mesh and parameter shardings, for /info and logs (beyond TEI's fields)."""
        return self.placement.info(self.engine.params, self.engine.param_shardings)

    @property
    def shape_count(self) -> int:
        """How many (task, shape) programs a full warmup compiles."""
        return len(self.engine.tasks) * len(self.engine.policy.shapes())

    @property
    def embedding_dim(self) -> int:
        """Width of a pooled embedding, counting a family's own projection (Qwen3 `linear`)."""
        projected = self.engine.arch.output_size
        if projected and not self.spec.dense and self.spec.pooling != "splade":
            return projected
        return self.spec.embedding_dim

    @property
    def info(self) -> dict:
        """TEI's /info fields that belong to the model (the server adds its own limits)."""
        if self.kind is ModelKind.EMBEDDING:
            model_type = {"embedding": {"pooling": self.spec.pooling}}
        else:
            labels = {"id2label": {str(k): v for k, v in sorted(self.spec.id2label.items())},
                      "label2id": dict(self.spec.label2id)}
            model_type = {self.kind.value: labels}
        return {
            "model_id": self.model_id,
            "model_sha": self.revision,
            "model_dtype": self.dtype,
            "model_type": model_type,
            "max_input_length": self.max_input_length,
            "max_batch_tokens": self.engine.policy.max_batch_tokens,
            "max_batch_requests": self.engine.policy.max_batch_requests,
            "auto_truncate": self.auto_truncate,
        }

    def require(self, operation: Operation) -> None:
        """Raise TEI's Backend error (424) unless this model serves `operation`."""
        if operation not in self.operations:
            raise BackendError(refusal(operation, self.kind, self.spec.pooling))

    # The functional face (tei_jax/functional.py) ------------------------------------------
    @property
    def params(self) -> dict:
        """The parameter pytree `apply` takes: {"encoder", "head"?, "dense"?} of jax arrays."""
        return self.engine.params

    @property
    def param_axes(self) -> dict:
        """The logical axis names of each encoder/head parameter, a tree shaped like `params`."""
        return self.engine.arch.param_axes()

    def batch(self, inputs, truncate: bool | None = None, truncation_direction: str = "right",
              prompt_name: str | None = None, *, packed: bool = False,
              width: int | None = None) -> functional.Batch:
        """Tokenize `inputs` as `embed` (embedding models) or `predict` (classifiers,
        rerankers: texts and [a, b] pairs) would, with the same truncation, prompts and special
        tokens, and lay them out as a `functional.Batch` of numpy arrays for `apply`."""
        if self.kind is ModelKind.EMBEDDING:
            encode_one = self._encoder(truncate, truncation_direction, prompt_name)
            items = [encode_one(item) for item in tei_inputs.embed_batch(inputs).items]
        else:
            items = self._pair_encoder(truncate, truncation_direction)(tei_inputs.predict_batch(inputs).items)
        return functional.make_batch(self.engine, items, packed=packed, width=width)

    def apply(self, params: dict, batch: functional.Batch, task: Task | str = Task.EMBED,
              normalize: bool = False) -> jax.Array:
        """The forward pass as a pure function of (params, batch): safe under jax.jit, jax.grad
        and jax.vmap (`task` and `normalize` are static); see `tei_jax.functional.apply`."""
        return functional.apply(self.engine, params, batch, task, normalize)

    def save_pretrained(self, path: str | Path, params: dict | None = None) -> Path:
        """Write a model folder with `params` (default: the loaded ones) that tei_jax.load,
        TEI, transformers and sentence-transformers read; see tei_jax.save."""
        from .save import save_pretrained

        return save_pretrained(self, path, params)

    # Running -------------------------------------------------------------------------------
    def _run(self, task: Task, encode, call: Call | None) -> list[np.ndarray]:
        return self.executor.run(Job(task, encode), call)

    def _run_each(self, task: Task, items: Sequence, encode_one, call: Call | None,
                  encode_many=None) -> list[np.ndarray]:
        """Run `task` on `items` tokenized in pieces (so the executor may interleave calls),
        with `encode_many` over each piece where given, else `encode_one` per item."""
        return self.executor.run(Job.of_inputs(task, items, encode_one, encode_many), call)

    def _truncate(self, truncate: bool | None) -> bool:
        return self.auto_truncate if truncate is None else bool(truncate)

    def _encoder(self, truncate, truncation_direction, prompt_name):
        """The tokenization of one embed-like input."""
        truncate = self._truncate(truncate)

        def encode_one(item) -> Encoded:
            return self.tokenizer.encode(item, truncate=truncate, truncation_direction=truncation_direction,
                                         prompt_name=prompt_name)

        return encode_one

    def _run_embed_like(self, task: Task, items: Sequence, truncate, truncation_direction, prompt_name,
                        call: Call | None) -> list[np.ndarray]:
        """`_run_each` for single inputs, tokenized a piece at a time in one batch call."""
        return self._run_each(task, items, self._encoder(truncate, truncation_direction, prompt_name), call,
                              self._many_encoder(truncate, truncation_direction, prompt_name))

    def _many_encoder(self, truncate, truncation_direction, prompt_name):
        """`_encoder` over a list at once (one tokenizers batch call: its threads share the work)."""
        truncate = self._truncate(truncate)

        def encode_many(items: list) -> list[Encoded]:
            return self.tokenizer.encode_many(items, truncate=truncate, truncation_direction=truncation_direction,
                                              prompt_name=prompt_name)

        return encode_many

    def _pair_encoder(self, truncate, truncation_direction):
        """predict's and rerank's tokenization of [text] / [text, pair] items, a list at once (one
        tokenizers batch call per setting, as `_many_encoder`), with `encode`'s errors and order."""
        truncate = self._truncate(truncate)

        def encode_many(items: list) -> list[Encoded]:
            return self.tokenizer.encode_many([item[0] for item in items], truncate=truncate,
                                              truncation_direction=truncation_direction,
                                              pairs=[item[1] if len(item) == 2 else None for item in items])

        return encode_many

    def warmup(self, progress=None, workers: int | None = None) -> int:
        """Compile every shape of every task ahead of time; returns how many were new."""
        return self.engine.warmup(progress=progress, workers=workers)

    def check_health(self, call: Call | None = None) -> None:
        """Run a one-token forward through the executor (TEI's /health after a failure);
        raises if the device cannot run it."""
        probe = self.engine.probe()
        self._run(self.engine.tasks[0], lambda: [probe], call)

    # Embeddings ------------------------------------------------------------------------------
    def check_embed_options(self, normalize: bool, dimensions: int | None) -> None:
        """Raise what `embed` would raise for these options, before any input is read, in TEI's
        order (embed_pooled: SPLADE with normalize, zero dimensions, then the model type)."""
        if self.kind is ModelKind.EMBEDDING and self.spec.pooling == "splade" and normalize:
            raise BackendError("`normalize` is not available for SPLADE models")
        if dimensions is not None and dimensions <= 0:
            raise ValidationError("`dimensions` should be positive")
        self.require(Operation.EMBED)
        if dimensions is not None and dimensions > self.embedding_dim:
            raise ValidationError("`dimensions` should be smaller than the maximum embedding dimension.")

    def embed(self, inputs: EmbedInput, normalize: bool = True, truncate: bool | None = None,
              truncation_direction: str = "right", prompt_name: str | None = None,
              dimensions: int | None = None, *, call: Call | None = None,
              output: str = "numpy") -> np.ndarray | jax.Array:
        """Pooled embeddings, float32 [n, d] (n = 1 for a single input): a numpy array, or
        a jax.Array on the default device with output="jax"."""
        if output not in ("numpy", "jax"):
            raise ValidationError(f"`output` must be 'numpy' or 'jax', got {output!r}")
        self.check_embed_options(normalize, dimensions)
        batch = tei_inputs.embed_batch(inputs)
        if self.chunk is None:
            outputs = self._run_embed_like(Task.EMBED, batch.items, truncate, truncation_direction, prompt_name, call)
        else:  # long texts -> windows, embedded like any input, then pooled per input
            windows = chunking.encode(self.tokenizer, batch.items, self.chunk, truncate=self._truncate(truncate),
                                      truncation_direction=truncation_direction, prompt_name=prompt_name)
            outputs = chunking.pool(self._run(Task.EMBED, lambda: windows, call), windows)
        vectors = truncate_and_normalize(np.stack(outputs), dimensions, normalize)
        return jnp.asarray(vectors) if output == "jax" else vectors

    def embed_all(self, inputs: EmbedInput, truncate: bool | None = None, truncation_direction: str = "right",
                  prompt_name: str | None = None, *, call: Call | None = None) -> list[np.ndarray]:
        """Per-token hidden states: one float32 [tokens, hidden] array per input."""
        self.require(Operation.EMBED_ALL)
        batch = tei_inputs.embed_batch(inputs)
        return self._run_embed_like(Task.EMBED_ALL, batch.items, truncate, truncation_direction, prompt_name, call)

    def embed_sparse(self, inputs: EmbedInput, truncate: bool | None = None, truncation_direction: str = "right",
                     prompt_name: str | None = None, *, call: Call | None = None) -> list[list[dict]]:
        """SPLADE vectors as TEI's [{index, value}] lists, one per input."""
        self.require(Operation.EMBED_SPARSE)
        batch = tei_inputs.embed_batch(inputs)
        outputs = self._run_embed_like(Task.EMBED, batch.items, truncate, truncation_direction, prompt_name, call)
        return [sparse_entries(vector) for vector in outputs]

    def similarity(self, source_sentence: str, sentences: Sequence[str], truncate: bool | None = None,
                   truncation_direction: str = "right", prompt_name: str | None = None, *,
                   call: Call | None = None) -> list[float]:
        """Cosine similarity of the source against each sentence (HF sentence-similarity)."""
        batch = tei_inputs.similarity_batch(source_sentence, sentences)  # TEI: empty before model type
        self.require(Operation.SIMILARITY)
        vectors = self.embed(batch.items, normalize=False, truncate=truncate,
                             truncation_direction=truncation_direction, prompt_name=prompt_name, call=call)
        return [float(x) for x in cosine_to_first(vectors)]

    # Classification -------------------------------------------------------------------------
    def _ranked(self, logits: np.ndarray, raw_scores: bool) -> list[dict]:
        scores = scores_from_logits(logits, raw_scores)
        if np.isnan(scores).any():
            raise NaNScoreError("score is NaN")
        ranked = best_first([(float(s), self.spec.id2label.get(i, str(i))) for i, s in enumerate(scores)],
                            key=lambda pair: pair[0])
        return [{"score": score, "label": label} for score, label in ranked]

    def predict(self, inputs: PredictInput, raw_scores: bool = False, truncate: bool | None = None,
                truncation_direction: str = "right", *, call: Call | None = None):
        """Class scores sorted by score; a list of lists for a batch input.

        `inputs`: "text" | ["a", "b"] (one pair) | [["a"], ["a", "b"], ...] (a batch)."""
        self.require(Operation.PREDICT)
        batch = tei_inputs.predict_batch(inputs)
        encode_many = self._pair_encoder(truncate, truncation_direction)
        outputs = self._run_each(Task.PREDICT, batch.items, lambda item: encode_many([item])[0], call, encode_many)
        results = [self._ranked(logits, raw_scores) for logits in outputs]
        return results if batch.is_batch else results[0]

    def rerank(self, query: str, texts: Sequence[str], raw_scores: bool = False, return_text: bool = False,
               truncate: bool | None = None, truncation_direction: str = "right", *,
               call: Call | None = None) -> list[dict]:
        """Rank texts against a query with a cross-encoder: [{index, score, text?}] best first."""
        pairs = tei_inputs.rerank_batch(query, texts).items  # TEI checks this before the model type
        self.require(Operation.RERANK)
        encode_many = self._pair_encoder(truncate, truncation_direction)
        outputs = self._run_each(Task.PREDICT, pairs, lambda pair: encode_many([pair])[0], call, encode_many)
        return self.rank(outputs, texts, raw_scores, return_text)

    def rank(self, outputs: Sequence[np.ndarray], texts: Sequence[str], raw_scores: bool = False,
             return_text: bool = False) -> list[dict]:
        """`rerank`'s scoring and order for reranker outputs already computed (one logits
        array per text), e.g. pairs a stream ran one message at a time."""
        ranks = []
        for index, logits in enumerate(outputs):
            score = float(scores_from_logits(logits, raw_scores)[0])
            if np.isnan(score):
                raise NaNScoreError("score is NaN")
            rank = {"index": index, "score": score}
            if return_text:
                rank["text"] = texts[index]
            ranks.append(rank)
        return best_first(ranks, key=lambda r: r["score"])

    # Tokens -----------------------------------------------------------------------------------
    def tokenize(self, inputs: str | Sequence[str], add_special_tokens: bool = True,
                 prompt_name: str | None = None) -> list[list[dict]]:
        """TEI's /tokenize: always a list of token lists."""
        batch = tei_inputs.text_batch(inputs)
        return [self.tokenizer.tokenize(t, add_special_tokens, prompt_name) for t in batch.items]

    def decode(self, ids: Sequence[int] | Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """TEI's /decode: always a list of strings."""
        batch = tei_inputs.ids_batch(ids)
        return [self.tokenizer.decode(item, skip_special_tokens) for item in batch.items]


def cosine_to_first(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of vectors[1:] to vectors[0]. TEI embeds with normalize=false for it,
    so it works on SPLADE models too (which cannot normalize)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    norms[norms == 0] = 1.0
    unit = vectors / norms[:, None]
    return (unit[1:] @ unit[0]).astype(np.float32)


def best_first(items: list, key) -> list:
    """TEI's order: sorted ascending by score, then reversed, so equal scores come out last
    index first."""
    return sorted(items, key=key)[::-1]


def load(
    model_id: str = DEFAULT_MODEL_ID,
    revision: str | None = None,
    dtype: str | None = None,
    pooling: str | None = None,
    *,
    token: str | None = None,
    cache_dir: str | None = None,
    max_batch_tokens: int = 16384,
    max_batch_requests: int | None = None,
    auto_truncate: bool = True,
    attention: str = "auto",
    packing: bool = True,
    batch_tokens: int | None = None,
    dense_path: str | None = None,
    default_prompt_name: str | None = None,
    default_prompt: str | None = None,
    compile_cache: str | None = None,
    chunk_long_inputs: bool = False,
    chunk_overlap: int = 0,
    data_parallel_size: int | None = None,
    tensor_parallel_size: int = 1,
    devices: Sequence | None = None,
    cpu_devices: int | None = None,
) -> Model:
    """Load a model folder or hub id and return a ready `Model` (compiles lazily per shape).

    `batch_tokens` is the size a batch aims at under the `max_batch_tokens` cap (default: the
    whole cap on accelerators, CPU_BATCH_TOKENS on CPU, where cache-sized batches run faster).
    `compile_cache` is the persistent compilation cache folder (default: $TEI_JAX_COMPILE_CACHE,
    else ~/.cache/tei-jax/jax; "none" turns it off). It is process-wide JAX state.
    `chunk_long_inputs`: `embed` splits a text longer than the limit into windows sharing
    `chunk_overlap` tokens and pools them (see tei_jax.chunking); dense embedders only.
    `data_parallel_size` x `tensor_parallel_size` devices (of `devices`, default every local
    device of the backend) form the mesh (tei_jax/sharding.py): batch rows split over the
    data axis, heads and MLP widths over the tensor axis. `data_parallel_size` None uses
    every device left after tensor parallelism.
    `cpu_devices`: on a CPU-only process whose JAX backend has not started, JAX gets this many
    CPU devices (default $TEI_JAX_CPU_DEVICES, else one per core; 1 keeps one), so the data
    axis spans the cores (tei_jax/cpu_devices.py); a count the user gave JAX is never changed.
    Skipped when `devices` or `data_parallel_size=1` says where to run.
    """
    if devices is None and data_parallel_size != 1:
        try:
            cpu_devices_setup.configure(cpu_devices)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
    if default_prompt_name and default_prompt:
        raise ModelLoadError("default_prompt_name and default_prompt are mutually exclusive")
    cache_folder = enable_compile_cache(compile_cache)
    dtype = dtype or default_dtype()
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    model_dir = resolve_model_dir(model_id, revision=revision, token=token, cache_dir=cache_dir)
    spec = load_spec(Path(model_dir), pooling=pooling, dense_path=dense_path)
    max_input_length = spec.max_input_length
    if max_input_length > max_batch_tokens:
        if not auto_truncate:
            raise ModelLoadError(
                f"`max_input_length` ({max_input_length}) is larger than `max_batch_tokens` "
                f"({max_batch_tokens}): raise max_batch_tokens or enable auto_truncate"
            )
        log.warning("max_input_length %d > max_batch_tokens %d: truncating inputs to %d tokens",
                    max_input_length, max_batch_tokens, max_batch_tokens)
        max_input_length = max_batch_tokens
    if default_prompt_name is not None and default_prompt_name not in spec.prompts:
        raise ModelLoadError(
            f"`default-prompt-name` is set to `{default_prompt_name}` but it was not found in the "
            f"Sentence Transformers prompts. Available prompts: {rust_list(spec.prompts)}"
        )
    chunk = _chunk_options(spec, chunk_long_inputs, chunk_overlap)
    prompt = default_prompt
    if prompt is None:
        # As TEI: config_sentence_transformers.json's default_prompt_name is not applied; only an
        # explicit default_prompt_name / default_prompt sets a default.
        prompt = spec.prompts.get(default_prompt_name) if default_prompt_name else None
    tokenizer = Tokenizer(spec.model_dir, max_input_length, spec.prompts, prompt, spec.appended_token)
    jdtype = DTYPES[dtype]
    implementation = resolve_implementation(attention, jax.default_backend())
    arch = models.build(spec, jdtype, implementation)
    placement = Placement.build(data_parallel_size, tensor_parallel_size, devices).for_architecture(arch)
    reader = WeightReader(safetensors_files(spec.model_dir), jdtype, arch.checkpoint_prefixes)
    params = arch.load_params(reader, placement.place)
    if reader.unused():
        log.debug("checkpoint weights not used by this model kind: %s", ", ".join(reader.unused()[:8]))
    dense = [jax.device_put(load_dense_module(d.path, d.in_features, d.out_features, d.bias, jnp.float32),
                            placement.replicated) for d in spec.dense]
    # cuDNN attention masks by per-row lengths, so it needs one sequence per row.
    backend = jax.default_backend()
    if batch_tokens is None and backend == "cpu":
        batch_tokens = CPU_BATCH_TOKENS
    policy = ShapePolicy(max_input_length, max_batch_tokens, max_batch_requests,
                         packing=packing and implementation != "cudnn", batch_tokens=batch_tokens,
                         attention_cost=ShapePolicy.attention_cost_for(spec.hidden_size, backend),
                         row_multiple=placement.data_size,
                         exact_rows=CPU_EXACT_ROWS if backend == "cpu" else EXACT_ROWS)
    engine = Engine(spec, arch, params, policy, dense, placement)
    log.info("placement: %s; parameters: %s", placement.key(), placement.summary(engine.params, engine.param_shardings))
    if cache_folder is not None:
        key = executables.engine_key(engine, spec.model_dir, dtype, implementation)
        engine.store = executables.ExecutableStore(cache_folder / executables.DIR_NAME, key)
    return Model(spec, tokenizer, engine, model_id, revision, dtype, auto_truncate, chunk)


def _chunk_options(spec: ModelSpec, enabled: bool, overlap: int) -> chunking.ChunkOptions | None:
    if not enabled:
        return None
    if spec.kind != "embedding" or spec.pooling == "splade":
        kind = "SPLADE" if spec.kind == "embedding" else spec.kind
        raise ModelLoadError(f"chunk_long_inputs applies to dense embedding models only, not to a {kind} model")
    try:
        return chunking.ChunkOptions(overlap)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
