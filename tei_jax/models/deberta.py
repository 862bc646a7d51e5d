"""DeBERTa-v2 / v3 (`deberta-v2`): microsoft/deberta-v3-*, deberta-v2-xlarge, mxbai-rerank v1
and the many DeBERTa-v3 classifiers.

A BERT-like post-norm encoder whose attention logits add DeBERTa's disentangled terms, through
the shared layers' ScoreBias hook (layers.py):
  content->position  c2p[i, j] = q_i . pos_k[idx(i, j)]
  position->content  p2c[i, j] = k_j . pos_q[idx(i, j)]
with pos_k / pos_q the relative embeddings (`rel_embeddings`, optionally LayerNorm'ed:
`norm_rel_ebd`) projected by the layer's own key/query projections (`share_att_key`) or by its
pos_key_proj / pos_query_proj, and idx the log-bucketed (`position_buckets`,
`max_relative_positions`) distance pos_i - pos_j shifted into the table. Everything is scaled
by 1 / sqrt(head_dim * (1 + number of pos_att_type terms)). Distances come from position ids,
so packed rows (positions restarting per sequence) see the same distances as padded ones.

DeBERTa-v2's optional convolution after the first layer (`conv_kernel_size`) is a layer variant
(LayerVariant.input_conv). Heads: the ContextPooler classifier (first token -> dense -> act ->
classifier, as TEI) and, beyond what TEI serves, SPLADE through either masked-LM layout
(transformers' legacy `cls.predictions.*`, or the hub checkpoints' `lm_predictions.lm_head.*`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ..config import ModelSpec
from ..errors import ModelLoadError
from . import table
from .architecture import Architecture
from .fields import FamilyConfig, derived, json_field, unsupported
from .heads import ClassificationHead, MaskedLMHead, masked_lm_entries
from .layers import (CHECKPOINT_ONLY, Activation, AttentionSpec, ConvSpec, LayerVariant, MLPSpec, NormSpec,
                     PositionKind, StackSpec, Transformer, norm_of, projection)
from .table import Axis, Tensor, WeightTable

MODEL_TYPES = ("deberta-v2",)
POS_TYPES = ("c2p", "p2c")
# Heads of other model kinds, the v3 pre-training heads, and the absolute position table that
# v3 checkpoints carry although position_biased_input is false (transformers ignores it too).
UNUSED_OK = ("/pooler.", "/classifier.", "/cls.", "/lm_predictions.", "/mask_predictions.")


def log_bucket(distance: np.ndarray, buckets: int, max_position: int) -> np.ndarray:
    """transformers' make_log_bucket_position in the same float32 steps: distances inside
    (-buckets/2, buckets/2) kept, larger ones log-compressed up to max_position."""
    mid = buckets // 2
    distance = np.asarray(distance, np.int64)
    abs_pos = np.where((distance < mid) & (distance > -mid), mid - 1, np.abs(distance))
    ratio = np.log(abs_pos.astype(np.float32) / np.float32(mid)) / np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(ratio * np.float32(mid - 1)) + np.float32(mid)
    return np.where(abs_pos <= mid, distance, log_pos * np.sign(distance)).astype(np.int64)


@functools.lru_cache(maxsize=None)
def relative_index_table(width: int, span: int, buckets: int, max_position: int) -> np.ndarray:
    """int32 [2 * width - 1]: the rel_embeddings row of distance d at index d + width - 1."""
    distance = np.arange(-(width - 1), width)
    if buckets > 0:
        distance = log_bucket(distance, buckets, max_position)
    return np.clip(distance + span, 0, 2 * span - 1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class DebertaConfig(FamilyConfig):
    hidden_size: int = json_field("hidden_size")
    num_layers: int = json_field("num_hidden_layers")
    num_heads: int = json_field("num_attention_heads")
    intermediate_size: int = json_field("intermediate_size")
    vocab_size: int = json_field("vocab_size")
    max_positions: int = json_field("max_position_embeddings", default=512)
    type_vocab_size: int = json_field("type_vocab_size", default=0)
    norm_eps: float = json_field("layer_norm_eps", default=1e-7)
    activation: Activation = json_field("hidden_act", default="gelu")
    relative_attention: bool = json_field("relative_attention", default=False)
    position_biased_input: bool = json_field("position_biased_input", default=True)
    share_att_key: bool = json_field("share_att_key", default=False)
    position_buckets: int = json_field("position_buckets", default=-1)
    max_relative_positions: int = json_field("max_relative_positions", default=-1)
    pooler_activation: Activation = json_field("pooler_hidden_act", default="gelu")
    conv_kernel_size: int = json_field("conv_kernel_size", default=0)
    conv_activation: Activation = json_field("conv_act", default="tanh")
    conv_groups: int = json_field("conv_groups", default=1, allowed=(1,))
    head_dim: int = derived()
    pos_att_type: tuple[str, ...] = derived()
    norm_rel_ebd: bool = derived()

    @property
    def max_relative(self) -> int:
        """The distance reach (max_relative_positions < 1 means max_position_embeddings)."""
        return self.max_relative_positions if self.max_relative_positions >= 1 else self.max_positions

    @property
    def span(self) -> int:
        """Half the rows of rel_embeddings: distance 0 sits at row `span`."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim * (1 + len(self.pos_att_type)))

    def stack(self, dtype, attention: str) -> StackSpec:
        layer0 = LayerVariant(input_conv=self.conv_kernel_size > 0)
        return StackSpec(
            hidden_size=self.hidden_size, vocab_size=self.vocab_size,
            attention=AttentionSpec(self.num_heads, self.head_dim, implementation=attention, scale=self.scale),
            mlp=MLPSpec(self.intermediate_size, self.activation),
            variants=(layer0,) + (LayerVariant(),) * (self.num_layers - 1), norm=NormSpec(eps=self.norm_eps),
            positions=PositionKind.ABSOLUTE if self.position_biased_input else PositionKind.NONE,
            max_positions=self.max_positions, type_vocab_size=self.type_vocab_size,
            score_bias=DisentangledBias(self) if self.relative_attention else None,
            conv=ConvSpec(self.conv_kernel_size, self.conv_activation) if self.conv_kernel_size > 0 else None,
            dtype=dtype,
        )


def _pos_att_type(raw) -> tuple[str, ...]:
    """`pos_att_type` as a list, or the hub's "p2c|c2p" string; c2p and p2c only."""
    if raw is None:
        return ()
    parts = [p.strip().lower() for p in raw.split("|")] if isinstance(raw, str) else list(raw)
    if any(p not in POS_TYPES for p in parts):
        raise unsupported("pos_att_type", raw, "a combination of 'c2p' and 'p2c'")
    return tuple(p for p in POS_TYPES if p in parts)


def _norm_rel_ebd(raw) -> bool:
    parts = {p.strip() for p in str(raw or "none").lower().split("|")}
    if not parts <= {"none", "layer_norm"}:
        raise unsupported("norm_rel_ebd", raw, "'none' or 'layer_norm'")
    return "layer_norm" in parts


def parse_config(spec: ModelSpec) -> DebertaConfig:
    """The typed config; refuses, by field, what no public checkpoint uses and we do not run."""
    c = spec.config
    hidden, heads = c.get("hidden_size"), c.get("num_attention_heads")
    if c.get("embedding_size") not in (None, hidden):
        raise unsupported("embedding_size", c["embedding_size"], f"equal to hidden_size ({hidden})")
    if c.get("pooler_hidden_size") not in (None, hidden):
        raise unsupported("pooler_hidden_size", c["pooler_hidden_size"], f"equal to hidden_size ({hidden})")
    kernel = c.get("conv_kernel_size") or 0
    if kernel and (not isinstance(kernel, int) or kernel % 2 == 0):
        raise unsupported("conv_kernel_size", kernel, "an odd kernel size (transformers pads (k - 1) // 2)")
    if c.get("relative_attention") and not _pos_att_type(c.get("pos_att_type")):
        raise unsupported("pos_att_type", c.get("pos_att_type"), "c2p and/or p2c when relative_attention is true")
    head_dim = c.get("attention_head_size") or (hidden // heads if isinstance(hidden, int) and heads else 0)
    return DebertaConfig.parse(c, head_dim=int(head_dim), pos_att_type=_pos_att_type(c.get("pos_att_type")),
                               norm_rel_ebd=_norm_rel_ebd(c.get("norm_rel_ebd")))


# The disentangled attention, as the shared layers' ScoreBias ------------------------------------
class RelativeContext(nn.Module):
    """Once per stack: the (normalised) relative embeddings and, per row, the table row of
    every (query, key) distance, from the position ids."""

    cfg: DebertaConfig
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, position_ids, segment_ids):
        cfg = self.cfg
        rel = self.param("embedding", CHECKPOINT_ONLY, (2 * cfg.span, cfg.hidden_size), self.dtype)
        if cfg.norm_rel_ebd:
            rel = norm_of(NormSpec(eps=cfg.norm_eps), self.dtype, "norm")(rel)
        width = position_ids.shape[1]
        lookup = jnp.asarray(relative_index_table(width, cfg.span, cfg.position_buckets, cfg.max_relative))
        distance = position_ids[:, :, None] - position_ids[:, None, :]  # query - key, [b, q, k]
        index = lookup[jnp.clip(distance + width - 1, 0, 2 * width - 2)]
        return rel, index


class DisentangledScores(nn.Module):
    """One layer's c2p + p2c logits [b, heads, q, k], already scaled."""

    cfg: DebertaConfig
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, q, k, projections, context):
        cfg = self.cfg
        rel, index = context
        heads, dim = q.shape[2], q.shape[3]

        def project(kind: str):
            if cfg.share_att_key:
                return projections[kind](rel)
            return projection((heads, dim), True, self.dtype, f"pos_{kind}")(rel)

        index = index[:, None]  # [b, 1, q, k]: the same rows for every head
        total = 0.0
        if "c2p" in cfg.pos_att_type:  # query i against the key embedding of distance (i, j)
            by_row = jnp.einsum("bqhd,rhd->bhqr", q, project("k"), preferred_element_type=jnp.float32)
            total = total + jnp.take_along_axis(by_row, jnp.broadcast_to(index, by_row.shape[:3] + index.shape[-1:]), -1)
        if "p2c" in cfg.pos_att_type:  # key j against the query embedding of distance (i, j)
            by_key = jnp.einsum("bkhd,rhd->bhkr", k, project("q"), preferred_element_type=jnp.float32)
            transposed = jnp.swapaxes(index, -1, -2)  # [b, 1, k, q]
            gathered = jnp.take_along_axis(by_key, jnp.broadcast_to(transposed, by_key.shape[:3] + transposed.shape[-1:]), -1)
            total = total + jnp.swapaxes(gathered, -1, -2)
        return total * cfg.scale


@dataclasses.dataclass(frozen=True)
class DisentangledBias:
    """DeBERTa's ScoreBias: RelativeContext once per stack, DisentangledScores per layer."""

    cfg: DebertaConfig

    def context(self, spec: StackSpec, name: str) -> nn.Module:
        return RelativeContext(self.cfg, spec.dtype, name=name)

    def layer(self, spec: StackSpec, name: str) -> nn.Module:
        return DisentangledScores(self.cfg, spec.dtype, name=name)


# Weight names ----------------------------------------------------------------------------------
def encoder_entries(cfg: DebertaConfig) -> list[Tensor]:
    entries = table.learned_embeddings(cfg.position_biased_input, bool(cfg.type_vocab_size))
    if cfg.relative_attention:
        entries.append(Tensor("encoder/score_context/embedding", (Axis.BUCKETS, Axis.EMBED),
                              ("encoder.rel_embeddings.weight",)))
        if cfg.norm_rel_ebd:
            entries += table.norm("encoder/score_context/norm", "encoder.LayerNorm")
    return entries


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    """torch Conv1d [out, in, kernel] -> ours [kernel, in, out]."""
    return weight.transpose(2, 1, 0)


def layer_entries(cfg: DebertaConfig):
    h, d = cfg.num_heads, cfg.head_dim

    def entries(variant: LayerVariant) -> list[Tensor]:
        p, attn = "encoder.layer.{i}.", "encoder.layer.{i}.attention.self."
        out = table.post_norm_layer(*(attn + n for n in ("query_proj", "key_proj", "value_proj")),
                                    p + "attention.output.dense", p + "attention.output.LayerNorm",
                                    p + "intermediate.dense", p + "output.dense", p + "output.LayerNorm", h, d)
        if cfg.relative_attention and not cfg.share_att_key:
            if "c2p" in cfg.pos_att_type:
                out += table.attention_in("attention/score_bias/pos_k", attn + "pos_key_proj", h, d, True)
            if "p2c" in cfg.pos_att_type:
                out += table.attention_in("attention/score_bias/pos_q", attn + "pos_query_proj", h, d, True)
        if variant.input_conv:
            out += [Tensor("conv/kernel", (Axis.TAPS, Axis.EMBED, Axis.EMBED), ("encoder.conv.conv.weight",),
                           _conv_kernel),
                    Tensor("conv/bias", (Axis.EMBED,), ("encoder.conv.conv.bias",))]
            out += table.norm("conv/norm", "encoder.conv.LayerNorm")
        return out

    return entries


def _classifier(spec: ModelSpec, cfg: DebertaConfig, dtype):
    """DebertaV2ForSequenceClassification: ContextPooler (first token -> dense -> act) -> classifier."""
    steps = (("dense", "pooler", cfg.hidden_size, True), ("act", cfg.pooler_activation),
             ("dense", "classifier", None, True))
    entries = (table.linear("head/pooler", "/pooler.dense", (Axis.EMBED, Axis.EMBED))
               + table.linear("head/classifier", "/classifier", (Axis.EMBED, Axis.LABELS)))
    return ClassificationHead(steps, len(spec.id2label), dtype), entries


def _mlm_head(spec: ModelSpec, cfg: DebertaConfig, dtype):
    """DebertaV2ForMaskedLM for SPLADE: the hub's `lm_predictions.lm_head.*` layout (decoder
    = the word embeddings) where the checkpoint has it, else transformers' legacy `cls.*`."""
    head = MaskedLMHead(cfg.hidden_size, cfg.vocab_size, cfg.activation, cfg.norm_eps, dtype=dtype)
    if any(name.startswith("lm_predictions.") for name in spec.tensor_names):
        entries = masked_lm_entries("/lm_predictions.lm_head.dense", "/lm_predictions.lm_head.LayerNorm",
                                    "embeddings.word_embeddings.weight", "/lm_predictions.lm_head.bias")
    else:
        entries = masked_lm_entries("/cls.predictions.transform.dense", "/cls.predictions.transform.LayerNorm",
                                    "/cls.predictions.decoder.weight|embeddings.word_embeddings.weight",
                                    "/cls.predictions.bias|/cls.predictions.decoder.bias")
    return head, entries


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """DeBERTa-v2/v3 embeddings (cls or mean pooling, as TEI), classifier/reranker, or SPLADE."""
    if spec.kind == "embedding" and spec.pooling == "last_token":
        raise ModelLoadError("pooling 'last_token' is not supported for deberta-v2 (as TEI): use cls or mean")
    cfg = parse_config(spec)
    stack = cfg.stack(dtype, attention)
    head, head_entries = None, []
    if spec.kind in ("classifier", "reranker"):
        head, head_entries = _classifier(spec, cfg, dtype)
    elif spec.pooling == "splade":
        head, head_entries = _mlm_head(spec, cfg, dtype)
    unused_ok = UNUSED_OK + (() if cfg.position_biased_input else ("embeddings.position_embeddings.",))
    weights = WeightTable(encoder_entries(cfg) + head_entries, layer_entries(cfg), stack.variants,
                          unused_ok=unused_ok)
    return Architecture(encoder=Transformer(stack), table=weights, config=cfg, head=head,
                        uses_token_types=bool(cfg.type_vocab_size), checkpoint_prefixes=("deberta.",))
