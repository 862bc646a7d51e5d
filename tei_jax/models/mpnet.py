"""MPNet (all-mpnet-base-v2, multi-qa-mpnet-*): BERT's post-norm encoder without token types,
plus a bucketed relative-position bias computed once and added in every layer.

MPNet counts positions from padding_idx + 1 inside the model (as RoBERTa does in its
tokenization); the encoder adds whatever part of that offset the engine has not.
"""

from __future__ import annotations

import dataclasses

from ..config import ModelSpec
from ..errors import ModelLoadError
from . import table
from .architecture import Architecture
from .fields import FamilyConfig, WidthSplitHeads, derived, json_field
from .heads import ClassificationHead
from .layers import (Activation, AttentionSpec, LayerVariant, MLPSpec, NormSpec, PositionKind, StackSpec,
                     Transformer, uniform)
from .table import Axis, Tensor, WeightTable

MODEL_TYPES = ("mpnet",)
UNUSED_OK = ("pooler.", "/pooler.", "/classifier.", "/lm_head.")


@dataclasses.dataclass(frozen=True)
class MPNetConfig(FamilyConfig, WidthSplitHeads):
    hidden_size: int = json_field("hidden_size")
    num_layers: int = json_field("num_hidden_layers")
    num_heads: int = json_field("num_attention_heads")
    intermediate_size: int = json_field("intermediate_size")
    vocab_size: int = json_field("vocab_size")
    max_positions: int = json_field("max_position_embeddings")
    norm_eps: float = json_field("layer_norm_eps", default=1e-12)
    activation: Activation = json_field("hidden_act", default="gelu")
    relative_buckets: int = json_field("relative_attention_num_buckets", default=32)
    pad_token_id: int = json_field("pad_token_id", default=1)
    position_offset: int = derived()  # what the encoder adds to the engine's position ids

    def stack(self, dtype, attention: str) -> StackSpec:
        return StackSpec(
            hidden_size=self.hidden_size, vocab_size=self.vocab_size,
            attention=AttentionSpec(self.num_heads, self.head_dim, implementation=attention),
            mlp=MLPSpec(self.intermediate_size, self.activation), variants=uniform(self.num_layers),
            norm=NormSpec(eps=self.norm_eps), positions=PositionKind.RELATIVE, max_positions=self.max_positions,
            relative_buckets=self.relative_buckets, position_offset=self.position_offset, dtype=dtype,
        )


def parse_config(spec: ModelSpec) -> MPNetConfig:
    pad = spec.config.get("pad_token_id", 1)
    first_position = (pad if isinstance(pad, int) else 1) + 1
    return MPNetConfig.parse(spec.config, position_offset=first_position - spec.position_offset)


def layer_entries(cfg: MPNetConfig):
    h, d = cfg.num_heads, cfg.head_dim

    def entries(variant: LayerVariant) -> list[Tensor]:
        p = "encoder.layer.{i}."
        return table.post_norm_layer(*(p + f"attention.attn.{n}" for n in "qkv"), p + "attention.attn.o",
                                     p + "attention.LayerNorm", p + "intermediate.dense", p + "output.dense",
                                     p + "output.LayerNorm", h, d)

    return entries


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """MPNet embeddings or MPNetForSequenceClassification."""
    if spec.pooling == "splade":
        raise ModelLoadError("config.json: field 'architectures': MPNet has no masked-LM head for SPLADE here")
    cfg = parse_config(spec)
    stack = cfg.stack(dtype, attention)
    head, head_entries = None, []
    if spec.kind in ("classifier", "reranker"):  # RoBERTa's head: CLS -> dense, tanh -> out_proj
        head = ClassificationHead(
            (("dense", "dense", cfg.hidden_size, True), ("act", "tanh"), ("dense", "out_proj", None, True)),
            len(spec.id2label), dtype)
        head_entries = (table.linear("head/dense", "/classifier.dense", (Axis.EMBED, Axis.EMBED))
                        + table.linear("head/out_proj", "/classifier.out_proj", (Axis.EMBED, Axis.LABELS)))
    encoder = (table.learned_embeddings()
               + [Tensor("encoder/relative_attention_bias/embedding", (Axis.BUCKETS, Axis.HEADS),
                         ("encoder.relative_attention_bias.weight",))])
    weights = WeightTable(encoder + head_entries, layer_entries(cfg), stack.variants, unused_ok=UNUSED_OK)
    return Architecture(
        encoder=Transformer(stack), table=weights, config=cfg, head=head,
        uses_token_types=False, checkpoint_prefixes=("mpnet.",),
    )
