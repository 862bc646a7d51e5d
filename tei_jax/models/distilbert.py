"""DistilBERT: BERT's post-norm encoder without token types, under its own weight names."""

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

MODEL_TYPES = ("distilbert",)
NORM_EPS = 1e-12  # fixed in DistilBERT's code, not in its config
UNUSED_OK = ("/pre_classifier.", "/classifier.", "/vocab_transform.", "/vocab_layer_norm.", "/vocab_projector.")


@dataclasses.dataclass(frozen=True)
class DistilBertConfig(FamilyConfig, WidthSplitHeads):
    hidden_size: int = json_field("dim")
    num_layers: int = json_field("n_layers")
    num_heads: int = json_field("n_heads")
    intermediate_size: int = json_field("hidden_dim")
    vocab_size: int = json_field("vocab_size")
    max_positions: int = json_field("max_position_embeddings")
    activation: Activation = json_field("activation", default="gelu")
    sinusoidal_pos_embds: bool = json_field("sinusoidal_pos_embds", default=False, allowed=(False,))

    def stack(self, dtype, attention: str) -> StackSpec:
        return StackSpec(
            hidden_size=self.hidden_size, vocab_size=self.vocab_size,
            attention=AttentionSpec(self.num_heads, self.head_dim, implementation=attention),
            mlp=MLPSpec(self.intermediate_size, self.activation), variants=uniform(self.num_layers),
            norm=NormSpec(eps=NORM_EPS), positions=PositionKind.ABSOLUTE, max_positions=self.max_positions,
            dtype=dtype,
        )


def layer_entries(cfg: DistilBertConfig):
    h, d = cfg.num_heads, cfg.head_dim

    def entries(variant: LayerVariant) -> list[Tensor]:
        p = "transformer.layer.{i}."
        return table.post_norm_layer(*(p + f"attention.{n}_lin" for n in "qkv"), p + "attention.out_lin",
                                     p + "sa_layer_norm", p + "ffn.lin1", p + "ffn.lin2", p + "output_layer_norm", h, d)

    return entries


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    cfg = DistilBertConfig.parse(spec.config)
    stack = cfg.stack(dtype, attention)
    head, head_entries = None, []
    if spec.kind in ("classifier", "reranker"):
        head = ClassificationHead(
            (("dense", "pre_classifier", cfg.hidden_size, True), ("act", "relu"), ("dense", "classifier", None, True)),
            len(spec.id2label), dtype,
        )
        head_entries = (table.linear("head/pre_classifier", "/pre_classifier", (Axis.EMBED, Axis.EMBED))
                        + table.linear("head/classifier", "/classifier", (Axis.EMBED, Axis.LABELS)))
    elif spec.pooling == "splade":
        head = MaskedLMHead(cfg.hidden_size, cfg.vocab_size, cfg.activation, NORM_EPS, dtype=dtype)
        head_entries = masked_lm_entries("/vocab_transform", "/vocab_layer_norm",
                                         "/vocab_projector.weight|embeddings.word_embeddings.weight",
                                         "/vocab_projector.bias")
    weights = WeightTable(table.learned_embeddings() + head_entries, layer_entries(cfg), stack.variants, unused_ok=UNUSED_OK)
    return Architecture(
        encoder=Transformer(stack), table=weights, config=cfg, head=head,
        uses_token_types=False, checkpoint_prefixes=("distilbert.",),
    )
