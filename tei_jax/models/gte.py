"""Alibaba GTE (gte-*-en-v1.5, gte-multilingual-base, gte-multilingual-reranker-base): a
post-norm BERT with rotary positions (optionally NTK-scaled), a fused qkv_proj and a gated MLP.

Two config spellings: the remote-code `new` (rope_theta, rope_scaling {type: ntk, factor},
layer_norm_type) and transformers' native `gte` (rope_parameters). Checkpoints are prefixed
`new.` (remote code) or `gte.` (transformers) inside classifiers; the layer names are shared.
"""

from __future__ import annotations

import dataclasses

from ..config import ModelSpec
from ..errors import ModelLoadError
from . import fields, table
from .architecture import Architecture
from .fields import FamilyConfig, WidthSplitHeads, derived, json_field
from .heads import pooler_classifier
from .layers import (Activation, AttentionSpec, LayerVariant, MLPKind, MLPSpec, NormKind, NormSpec, PositionKind,
                     RopeScaling, RotarySpec, StackSpec, Transformer, uniform)
from .table import Axis, Tensor, WeightTable

PREFIXES = ("new.", "gte.")  # the encoder inside classifier checkpoints
MODEL_TYPES = ("new", "gte")
UNUSED_OK = ("pooler.", "/pooler.", "/classifier.")
_NORMS = {"layer_norm": NormKind.LAYER, "rms_norm": NormKind.RMS}


@dataclasses.dataclass(frozen=True)
class GteConfig(FamilyConfig, WidthSplitHeads):
    hidden_size: int = json_field("hidden_size")
    num_layers: int = json_field("num_hidden_layers")
    num_heads: int = json_field("num_attention_heads")
    intermediate_size: int = json_field("intermediate_size")
    vocab_size: int = json_field("vocab_size")
    type_vocab_size: int = json_field("type_vocab_size", default=0)
    norm_eps: float = json_field("layer_norm_eps", default=1e-12)
    layer_norm_type: str = json_field("layer_norm_type", default="layer_norm", allowed=tuple(_NORMS))
    activation: Activation = json_field("hidden_act", default="gelu")
    position_embedding_type: str = json_field("position_embedding_type", default="rope", allowed=("rope",))
    logn_attention_scale: bool = json_field("logn_attention_scale", default=False, allowed=(False,))
    logn_attention_clip1: bool = json_field("logn_attention_clip1", default=False, allowed=(False,))
    rotary: RotarySpec = derived()

    @property
    def norm(self) -> NormSpec:
        kind = _NORMS[self.layer_norm_type]
        return NormSpec(kind, self.norm_eps, bias=kind is NormKind.LAYER)

    def stack(self, dtype, attention: str) -> StackSpec:
        return StackSpec(
            hidden_size=self.hidden_size, vocab_size=self.vocab_size,
            attention=AttentionSpec(self.num_heads, self.head_dim, implementation=attention),
            mlp=MLPSpec(self.intermediate_size, self.activation, MLPKind.GATED, bias=False, out_bias=True),
            variants=uniform(self.num_layers), norm=self.norm, positions=PositionKind.ROTARY,
            type_vocab_size=self.type_vocab_size, rotary=self.rotary, dtype=dtype,
        )


def _rotary(c: dict, head_dim: int) -> RotarySpec:
    """rope_theta and the NTK scaling of a `new` config, or the plain rope of a `gte` one."""
    if "rope_parameters" in c and "rope_theta" not in c:
        fields.default_rope(c)
        return RotarySpec(head_dim, float(fields.nested(c, "rope_parameters.rope_theta")))
    scaling = c.get("rope_scaling")
    theta = float(fields.value(c, "rope_theta", default=10000.0))
    if scaling is None:
        return RotarySpec(head_dim, theta)
    kind = (scaling.get("type") or scaling.get("rope_type")) if isinstance(scaling, dict) else None
    if kind != "ntk":
        raise fields.unsupported("rope_scaling", scaling, "only {'type': 'ntk', 'factor': ...}")
    mixed_b = scaling.get("mixed_b")
    return RotarySpec(head_dim, theta, scaling=RopeScaling.NTK, factor=float(fields.nested(c, "rope_scaling.factor")),
                      mixed_b=None if mixed_b is None else float(mixed_b))


def parse_config(spec: ModelSpec) -> GteConfig:
    c = spec.config
    head_dim = int(fields.value(c, "hidden_size")) // int(fields.value(c, "num_attention_heads"))
    cfg = GteConfig.parse(c, rotary=RotarySpec(head_dim))  # field checks first, then the rope
    return dataclasses.replace(cfg, rotary=_rotary(c, head_dim))


def layer_entries(cfg: GteConfig):
    h, d, bias = cfg.num_heads, cfg.head_dim, cfg.norm.bias

    def entries(variant: LayerVariant) -> list[Tensor]:
        p = "encoder.layer.{i}."
        return (table.qkv("attention", p + "attention.qkv_proj", h, h, d, True)
                + table.attention_out("attention/out", p + "attention.o_proj", h, d, True)
                + table.norm("attn_norm", p + "attn_ln", bias=bias)
                # up_gate_proj rows: [up | gate]
                + table.gate_up("mlp", p + "mlp.up_gate_proj", cfg.intermediate_size, bias=False, gate_first=False)
                + table.linear("mlp/down", p + "mlp.down_proj", (Axis.MLP, Axis.EMBED))
                + table.norm("mlp_norm", p + "mlp_ln", bias=bias))

    return entries


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """GTE embeddings, or its classifier/reranker (gte-multilingual-reranker-base)."""
    if spec.pooling == "splade":
        raise ModelLoadError("config.json: field 'architectures': GTE has no masked-LM head for SPLADE here")
    cfg = parse_config(spec)
    stack = cfg.stack(dtype, attention)
    head, head_entries = None, []
    if spec.kind in ("classifier", "reranker"):
        head, head_entries = pooler_classifier(spec, cfg.hidden_size, dtype, PREFIXES)
    encoder = (table.embedding("encoder/embeddings/word", "embeddings.word_embeddings", Axis.VOCAB)
               + table.norm("encoder/embeddings/norm", "embeddings.LayerNorm", bias=cfg.norm.bias))
    if cfg.type_vocab_size:
        encoder += table.embedding("encoder/embeddings/token_type", "embeddings.token_type_embeddings", Axis.TYPES)
    weights = WeightTable(encoder + head_entries, layer_entries(cfg), stack.variants, unused_ok=UNUSED_OK)
    return Architecture(
        encoder=Transformer(stack), table=weights, config=cfg, head=head,
        uses_token_types=cfg.type_vocab_size > 1, checkpoint_prefixes=PREFIXES,
    )
