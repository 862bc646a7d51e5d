"""`tei_jax.load()` and the `Model` a user holds: TEI's operations as Python methods.

Each operation is split in three so the server can put its scheduler in the middle:
`prepare_*` validates and tokenizes (raising TEI-typed errors), the engine runs the entries
(here through `Engine.run_all`, in the server through the batching scheduler), and `finish_*`
turns raw outputs into TEI's response values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import chunking, models
from .batching import ShapePolicy
from .config import ModelSpec, load_spec
from .engine import EMBED, EMBED_ALL, PREDICT, Engine
from .errors import BackendError, EmptyInputError, ModelLoadError, ValidationError
from .hub import DEFAULT_MODEL_ID, resolve_model_dir
from .models.attention import resolve_implementation
from .pooling import scores_from_logits, sparse_entries, truncate_and_normalize
from .tokenization import Encoded, Input, Tokenizer, rust_list
from .compile_cache import enable as enable_compile_cache
from .weights import WeightReader, load_dense_module, safetensors_files, to_device

log = logging.getLogger(__name__)

# Measured on 2 CPU cores (MiniLM, 512 mixed-length texts): 1k-token batches ran 155 seq/s,
# 2k 148, 3k 140, 16k 101: small batches keep their activations in cache.
CPU_BATCH_TOKENS = 1024

DTYPES = {"float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}
PredictInput = Union[str, Sequence[str]]


def default_dtype() -> str:
    """float32 on CPU; bfloat16 on accelerators."""
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def _as_batch(inputs) -> tuple[list[Input], bool]:
    """TEI's Input: a string, an id list, or a list of those -> (items, was_batch)."""
    if isinstance(inputs, str):
        return [inputs], False
    if isinstance(inputs, (list, tuple)):
        if len(inputs) == 0:
            raise EmptyInputError("`inputs` cannot be empty")
        if all(isinstance(x, int) and not isinstance(x, bool) for x in inputs):
            return [list(inputs)], False
        return list(inputs), True
    raise ValidationError("`inputs` must be a string, a list of token ids, or a list of those")


class Model:
    """A loaded model with TEI's operations; see `tei_jax.load`."""

    def __init__(self, spec: ModelSpec, tokenizer: Tokenizer, engine: Engine, model_id: str,
                 revision: str | None, dtype: str, auto_truncate: bool = True,
                 chunk: chunking.ChunkOptions | None = None):
        self.spec = spec
        self.tokenizer = tokenizer
        self.engine = engine
        self.model_id = model_id
        self.revision = revision
        self.dtype = dtype
        self.auto_truncate = auto_truncate
        self.chunk = chunk  # None: long inputs follow TEI's truncation rules

    # Facts ---------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def max_input_length(self) -> int:
        return self.tokenizer.max_input_length

    @property
    def compile_count(self) -> int:
        return self.engine.compile_count

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
        if self.kind == "embedding":
            model_type = {"embedding": {"pooling": self.spec.pooling}}
        else:
            labels = {"id2label": {str(k): v for k, v in sorted(self.spec.id2label.items())},
                      "label2id": dict(self.spec.label2id)}
            model_type = {self.kind: labels}
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

    def _truncate(self, truncate: bool | None) -> bool:
        return self.auto_truncate if truncate is None else bool(truncate)

    def _encode_all(self, items, truncate, truncation_direction, prompt_name) -> list[Encoded]:
        truncate = self._truncate(truncate)
        return [
            self.tokenizer.encode(item, truncate=truncate, truncation_direction=truncation_direction,
                                  prompt_name=prompt_name)
            for item in items
        ]

    # Embeddings ------------------------------------------------------------------------------
    def require_embedding(self, sparse: bool = False) -> None:
        if self.kind != "embedding":
            raise BackendError("Model is not an embedding model")
        if sparse and self.spec.pooling != "splade":
            raise BackendError("Model is not an embedding model with SPLADE pooling")

    def check_embed_options(self, normalize: bool, dimensions: int | None) -> None:
        self.require_embedding()
        if self.spec.pooling == "splade" and normalize:
            raise BackendError("`normalize` is not available for SPLADE models")
        if dimensions is not None:
            if dimensions <= 0:
                raise ValidationError("`dimensions` should be positive")
            if dimensions > self.embedding_dim:
                raise ValidationError("`dimensions` should be smaller than the maximum embedding dimension.")

    def prepare_embed(self, inputs, *, normalize=True, truncate=None, truncation_direction="right",
                      prompt_name=None, dimensions=None) -> list[Encoded]:
        self.check_embed_options(normalize, dimensions)
        if self.chunk is not None:  # long texts -> windows, pooled again in finish_embed
            return chunking.encode(self.tokenizer, _as_batch(inputs)[0], self.chunk, truncate=self._truncate(truncate),
                                   truncation_direction=truncation_direction, prompt_name=prompt_name)
        return self._encode_all(_as_batch(inputs)[0], truncate, truncation_direction, prompt_name)

    @staticmethod
    def finish_embed(outputs: Sequence[np.ndarray], normalize=True, dimensions=None, items=None) -> np.ndarray:
        """`items`: what prepare_embed returned (chunked windows are pooled per input here)."""
        if isinstance(items, chunking.Windows):
            outputs = chunking.pool(outputs, items)
        return truncate_and_normalize(np.stack(outputs), dimensions, normalize)

    def embed(self, inputs, normalize: bool = True, truncate: bool | None = None,
              truncation_direction: str = "right", prompt_name: str | None = None,
              dimensions: int | None = None) -> np.ndarray:
        """Pooled embeddings, float32 [n, d] (n = 1 for a single input)."""
        items = self.prepare_embed(inputs, normalize=normalize, truncate=truncate,
                                   truncation_direction=truncation_direction,
                                   prompt_name=prompt_name, dimensions=dimensions)
        return self.finish_embed(self.engine.run_all(EMBED, items), normalize, dimensions, items)

    def prepare_embed_all(self, inputs, *, truncate=None, truncation_direction="right", prompt_name=None):
        self.require_embedding()
        if self.spec.pooling == "splade":
            raise BackendError("`embed_all` is not available for SPLADE models")
        return self._encode_all(_as_batch(inputs)[0], truncate, truncation_direction, prompt_name)

    def embed_all(self, inputs, truncate: bool | None = None, truncation_direction: str = "right",
                  prompt_name: str | None = None) -> list[np.ndarray]:
        """Per-token hidden states: one float32 [tokens, hidden] array per input."""
        items = self.prepare_embed_all(inputs, truncate=truncate, truncation_direction=truncation_direction,
                                       prompt_name=prompt_name)
        return self.engine.run_all(EMBED_ALL, items)

    def prepare_embed_sparse(self, inputs, *, truncate=None, truncation_direction="right", prompt_name=None):
        self.require_embedding(sparse=True)
        return self._encode_all(_as_batch(inputs)[0], truncate, truncation_direction, prompt_name)

    @staticmethod
    def finish_embed_sparse(outputs: Sequence[np.ndarray]) -> list[list[dict]]:
        return [sparse_entries(vector) for vector in outputs]

    def embed_sparse(self, inputs, truncate: bool | None = None, truncation_direction: str = "right",
                     prompt_name: str | None = None) -> list[list[dict]]:
        """SPLADE vectors as TEI's [{index, value}] lists, one per input."""
        items = self.prepare_embed_sparse(inputs, truncate=truncate, truncation_direction=truncation_direction,
                                          prompt_name=prompt_name)
        return self.finish_embed_sparse(self.engine.run_all(EMBED, items))

    def similarity(self, source_sentence: str, sentences: Sequence[str], truncate: bool | None = None,
                   truncation_direction: str = "right", prompt_name: str | None = None) -> list[float]:
        """Cosine similarity of the source against each sentence (HF sentence-similarity)."""
        if not sentences:
            raise EmptyInputError("`inputs.sentences` cannot be empty")
        vectors = self.embed([source_sentence, *sentences], normalize=False, truncate=truncate,
                             truncation_direction=truncation_direction, prompt_name=prompt_name)
        return [float(x) for x in cosine_to_first(vectors)]

    # Classification -------------------------------------------------------------------------
    def require_classifier(self, reranker: bool = False) -> None:
        if reranker:
            if self.kind != "reranker":
                raise BackendError("model is not a re-ranker model")
        elif self.kind not in ("classifier", "reranker"):
            raise BackendError("Model is not a classifier model")

    def prepare_predict(self, inputs, *, truncate=None, truncation_direction="right") -> tuple[list[Encoded], bool]:
        """PredictInput: "text" | ["a", "b"] (one pair) | [["a"], ["a", "b"], ...] (a batch)."""
        self.require_classifier()
        truncate = self._truncate(truncate)
        if isinstance(inputs, str):
            items, batch = [[inputs]], False
        elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, str) for x in inputs):
            items, batch = [list(inputs)], False
        elif isinstance(inputs, (list, tuple)) and inputs:
            items, batch = [list(x) if isinstance(x, (list, tuple)) else [x] for x in inputs], True
        else:
            raise EmptyInputError("`inputs` cannot be empty")
        encoded = []
        for item in items:
            if not 1 <= len(item) <= 2 or not all(isinstance(x, str) for x in item):
                raise ValidationError("each predict input must be one text or a pair of texts")
            pair = item[1] if len(item) == 2 else None
            encoded.append(self.tokenizer.encode(item[0], truncate=truncate, pair=pair,
                                                 truncation_direction=truncation_direction))
        return encoded, batch

    def finish_predict(self, outputs: Sequence[np.ndarray], raw_scores: bool = False) -> list[list[dict]]:
        results = []
        for logits in outputs:
            scores = scores_from_logits(logits, raw_scores)
            if np.isnan(scores).any():
                raise BackendError("score is NaN")
            ranked = best_first([(float(s), self.spec.id2label.get(i, str(i))) for i, s in enumerate(scores)],
                                key=lambda pair: pair[0])
            results.append([{"score": score, "label": label} for score, label in ranked])
        return results

    def predict(self, inputs: PredictInput, raw_scores: bool = False, truncate: bool | None = None,
                truncation_direction: str = "right"):
        """Class scores sorted by score; a list of lists for a batch input."""
        items, batch = self.prepare_predict(inputs, truncate=truncate, truncation_direction=truncation_direction)
        results = self.finish_predict(self.engine.run_all(PREDICT, items), raw_scores)
        return results if batch else results[0]

    def prepare_rerank(self, query: str, texts: Sequence[str], *, truncate=None,
                       truncation_direction="right") -> list[Encoded]:
        if not texts:  # TEI checks this before the model type
            raise EmptyInputError("`texts` cannot be empty")
        self.require_classifier(reranker=True)
        truncate = self._truncate(truncate)
        return [self.tokenizer.encode(query, pair=text, truncate=truncate,
                                      truncation_direction=truncation_direction) for text in texts]

    @staticmethod
    def finish_rerank(outputs: Sequence[np.ndarray], texts: Sequence[str], raw_scores=False,
                      return_text=False) -> list[dict]:
        ranks = []
        for index, logits in enumerate(outputs):
            score = float(scores_from_logits(logits, raw_scores)[0])
            if np.isnan(score):
                raise BackendError("score is NaN")
            rank = {"index": index, "score": score}
            if return_text:
                rank["text"] = texts[index]
            ranks.append(rank)
        return best_first(ranks, key=lambda r: r["score"])

    def rerank(self, query: str, texts: Sequence[str], raw_scores: bool = False, return_text: bool = False,
               truncate: bool | None = None, truncation_direction: str = "right") -> list[dict]:
        """Rank texts against a query with a cross-encoder: [{index, score, text?}] best first."""
        items = self.prepare_rerank(query, texts, truncate=truncate, truncation_direction=truncation_direction)
        return self.finish_rerank(self.engine.run_all(PREDICT, items), texts, raw_scores, return_text)

    # Tokens -----------------------------------------------------------------------------------
    def tokenize(self, inputs: str | Sequence[str], add_special_tokens: bool = True,
                 prompt_name: str | None = None) -> list[list[dict]]:
        """TEI's /tokenize: always a list of token lists."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise EmptyInputError("`inputs` cannot be empty")
        return [self.tokenizer.tokenize(t, add_special_tokens, prompt_name) for t in texts]

    def decode(self, ids: Sequence[int] | Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """TEI's /decode: always a list of strings."""
        if len(ids) == 0:
            raise EmptyInputError("`ids` cannot be empty")
        batch = [ids] if all(isinstance(i, int) for i in ids) else list(ids)
        return [self.tokenizer.decode(item, skip_special_tokens) for item in batch]


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
) -> Model:
    """Load a model folder or hub id and return a ready `Model` (compiles lazily per shape).

    `batch_tokens` is the size a batch aims at under the `max_batch_tokens` cap (default: the
    whole cap on accelerators, CPU_BATCH_TOKENS on CPU, where cache-sized batches run faster).
    `compile_cache` is the persistent compilation cache folder (default: $TEI_JAX_COMPILE_CACHE,
    else ~/.cache/tei-jax/jax; "none" turns it off). It is process-wide JAX state.
    `chunk_long_inputs`: `embed` splits a text longer than the limit into windows sharing
    `chunk_overlap` tokens and pools them (see tei_jax.chunking); dense embedders only.
    """
    if default_prompt_name and default_prompt:
        raise ModelLoadError("default_prompt_name and default_prompt are mutually exclusive")
    enable_compile_cache(compile_cache)
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
    reader = WeightReader(safetensors_files(spec.model_dir), jdtype, arch.checkpoint_prefixes)
    params = to_device(arch.load_params(reader))
    if reader.unused():
        log.info("checkpoint weights not used by this model kind: %s", ", ".join(reader.unused()[:8]))
    dense = [to_device(load_dense_module(d.path, d.in_features, d.out_features, d.bias, jnp.float32)) for d in spec.dense]
    # cuDNN attention masks by per-row lengths, so it needs one sequence per row.
    backend = jax.default_backend()
    if batch_tokens is None and backend == "cpu":
        batch_tokens = CPU_BATCH_TOKENS
    policy = ShapePolicy(max_input_length, max_batch_tokens, max_batch_requests,
                         packing=packing and implementation != "cudnn", batch_tokens=batch_tokens,
                         attention_cost=ShapePolicy.attention_cost_for(spec.hidden_size, backend))
    engine = Engine(spec, arch, params, policy, dense)
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
