"""BERT, RoBERTa, XLM-RoBERTa and CamemBERT: one post-norm encoder, four weight layouts.

The RoBERTa family differs from BERT only in its checkpoint prefix, its classification head
and its masked-LM head names; position ids starting after the padding index are applied by
the tokenization step (ModelSpec.position_offset), so the module is the same.
"""

from __future__ import annotations

import dataclasses

from ..config import ModelSpec
from . import table
from .architecture import Architecture
from .fields import FamilyConfig, WidthSplitHeads, json_field
from .heads import ClassificationHead, MaskedLMHead, masked_lm_entries
from .layers import (Activation, AttentionSpec, LayerVariant, MLPSpec, NormSpec, PositionKind, StackSpec,
                     Transformer, uniform)
from .table import Axis, Tensor, WeightTable

MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")
# Heads and poolers a checkpoint may carry that another model kind runs.
UNUSED_OK = ("pooler.", "/pooler.", "/cls.", "/classifier.", "/lm_head.")


@dataclasses.dataclass(frozen=True)
class BertConfig(FamilyConfig, WidthSplitHeads):
    hidden_size: int = json_field("hidden_size")
    num_layers: int = json_field("num_hidden_layers")
    num_heads: int = json_field("num_attention_heads")
    intermediate_size: int = json_field("intermediate_size")
    vocab_size: int = json_field("vocab_size")
    type_vocab_size: int = json_field("type_vocab_size", default=2)
    max_positions: int = json_field("max_position_embeddings")
    norm_eps: float = json_field("layer_norm_eps", default=1e-12)
    activation: Activation = json_field("hidden_act", default="gelu")
    position_embedding_type: str = json_field("position_embedding_type", default="absolute", allowed=("absolute",))

    def stack(self, dtype, attention: str) -> StackSpec:
        return StackSpec(
            hidden_size=self.hidden_size, vocab_size=self.vocab_size,
            attention=AttentionSpec(self.num_heads, self.head_dim, implementation=attention),
            mlp=MLPSpec(self.intermediate_size, self.activation),
            variants=uniform(self.num_layers), norm=NormSpec(eps=self.norm_eps),
            positions=PositionKind.ABSOLUTE, max_positions=self.max_positions,
            type_vocab_size=self.type_vocab_size, dtype=dtype,
        )


def layer_entries(cfg: BertConfig):
    """One BERT layer's table, over the layer index {i}."""
    h, d = cfg.num_heads, cfg.head_dim

    def entries(variant: LayerVariant) -> list[Tensor]:
        p = "encoder.layer.{i}."
        return table.post_norm_layer(*(p + "attention.self." + n for n in ("query", "key", "value")),
                                     p + "attention.output.dense", p + "attention.output.LayerNorm",
                                     p + "intermediate.dense", p + "output.dense", p + "output.LayerNorm", h, d)

    return entries


def _classifier(spec: ModelSpec, cfg: BertConfig, roberta_like: bool, dtype):
    hidden, labels = cfg.hidden_size, len(spec.id2label)
    if roberta_like:
        steps = (("dense", "dense", hidden, True), ("act", "tanh"), ("dense", "out_proj", None, True))
        entries = (table.linear("head/dense", "/classifier.dense", (Axis.EMBED, Axis.EMBED))
                   + table.linear("head/out_proj", "/classifier.out_proj", (Axis.EMBED, Axis.LABELS)))
    else:
        steps = (("dense", "pooler", hidden, True), ("act", "tanh"), ("dense", "classifier", None, True))
        entries = (table.linear("head/pooler", "pooler.dense", (Axis.EMBED, Axis.EMBED))
                   + table.linear("head/classifier", "/classifier", (Axis.EMBED, Axis.LABELS)))
    return ClassificationHead(steps, labels, dtype), entries


def _mlm_head(cfg: BertConfig, roberta_like: bool, dtype):
    head = MaskedLMHead(hidden_size=cfg.hidden_size, vocab_size=cfg.vocab_size,
                        hidden_act=Activation.GELU if roberta_like else cfg.activation,
                        norm_eps=cfg.norm_eps, dtype=dtype)
    if roberta_like:
        entries = masked_lm_entries("/lm_head.dense", "/lm_head.layer_norm",
                                    "/lm_head.decoder.weight|embeddings.word_embeddings.weight",
                                    "/lm_head.bias|/lm_head.decoder.bias")
    else:
        entries = masked_lm_entries("/cls.predictions.transform.dense", "/cls.predictions.transform.LayerNorm",
                                    "/cls.predictions.decoder.weight|embeddings.word_embeddings.weight",
                                    "/cls.predictions.bias|/cls.predictions.decoder.bias")
    return head, entries


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """The BERT-family Architecture for a spec (embedding, classifier, reranker or SPLADE)."""
    cfg = BertConfig.parse(spec.config)
    stack = cfg.stack(dtype, attention)
    roberta_like = spec.model_type in _ROBERTA_LIKE
    head, head_entries = None, []
    if spec.kind in ("classifier", "reranker"):
        head, head_entries = _classifier(spec, cfg, roberta_like, dtype)
    elif spec.pooling == "splade":
        head, head_entries = _mlm_head(cfg, roberta_like, dtype)
    weights = WeightTable(table.learned_embeddings(token_types=bool(cfg.type_vocab_size)) + head_entries,
                          layer_entries(cfg),
                          stack.variants, unused_ok=UNUSED_OK)
    return Architecture(
        encoder=Transformer(stack), table=weights, config=cfg, head=head,
        uses_token_types=bool(cfg.type_vocab_size),
        checkpoint_prefixes=("roberta.",) if roberta_like else ("bert.",),
    )
