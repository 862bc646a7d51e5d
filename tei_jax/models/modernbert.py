"""ModernBERT (answerdotai/ModernBERT-*, gte-modernbert, modernbert-embed, their rerankers):
a pre-norm encoder with rotary positions, GLU MLPs, optional biases, and attention that is
global every `global_attn_every_n_layers` layers and local (a window of `local_attention`
tokens) elsewhere, each kind with its own rotary base. Layer 0 has no pre-attention norm.
The stack scans groups of layers (e.g. local, local, global) after layer 0.

Hub configs name global_attn_every_n_layers / global_rope_theta / local_rope_theta;
transformers 5 saves layer_types and rope_parameters per layer type. Both are read.
"""

from __future__ import annotations

import dataclasses

from ..config import ModelSpec
from . import fields, table
from .architecture import Architecture
from .fields import FamilyConfig, WidthSplitHeads, derived, json_field
from .heads import ClassificationHead, MaskedLMHead, masked_lm_entries
from .layers import (Activation, AttentionSpec, LayerVariant, MLPKind, MLPSpec, NormKind, NormSpec, PositionKind,
                     RotarySpec, StackSpec, Transformer)
from .table import Axis, Tensor, WeightTable

MODEL_TYPES = ("modernbert",)
UNUSED_OK = ("/head.", "/classifier.", "/decoder.")
_LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclasses.dataclass(frozen=True)
class ModernBertConfig(FamilyConfig, WidthSplitHeads):
    hidden_size: int = json_field("hidden_size")
    num_layers: int = json_field("num_hidden_layers")
    num_heads: int = json_field("num_attention_heads")
    intermediate_size: int = json_field("intermediate_size")
    vocab_size: int = json_field("vocab_size")
    norm_eps: float = json_field("norm_eps", default=1e-5)
    norm_bias: bool = json_field("norm_bias", default=False)
    attention_bias: bool = json_field("attention_bias", default=False)
    mlp_bias: bool = json_field("mlp_bias", default=False)
    activation: Activation = json_field("hidden_activation", default="gelu")
    local_attention: int = json_field("local_attention", default=128)
    classifier_pooling: str = json_field("classifier_pooling", default="cls", allowed=("cls", "mean"))
    classifier_activation: Activation = json_field("classifier_activation", default="gelu")
    classifier_bias: bool = json_field("classifier_bias", default=False)
    decoder_bias: bool = json_field("decoder_bias", default=True)
    local_layers: tuple[int, ...] = derived()
    rope_theta: float = derived()  # global layers
    local_rope_theta: float = derived()

    @property
    def local_window(self) -> int:
        return self.local_attention // 2

    @property
    def norm(self) -> NormSpec:
        return NormSpec(NormKind.LAYER, self.norm_eps, self.norm_bias)

    def variant(self, i: int) -> LayerVariant:
        local = i in self.local_layers
        return LayerVariant(window=self.local_window if local else None, local_rope=local, attn_norm=i > 0)

    def stack(self, dtype, attention: str) -> StackSpec:
        return StackSpec(
            hidden_size=self.hidden_size, vocab_size=self.vocab_size,
            attention=AttentionSpec(self.num_heads, self.head_dim, qkv_bias=self.attention_bias,
                                    out_bias=self.attention_bias, implementation=attention),
            mlp=MLPSpec(self.intermediate_size, self.activation, MLPKind.GATED, self.mlp_bias, self.mlp_bias),
            variants=tuple(self.variant(i) for i in range(self.num_layers)), norm=self.norm,
            positions=PositionKind.ROTARY, prenorm=True, embedding_norm=True, final_norm=True,
            rotary=RotarySpec(self.head_dim, self.rope_theta, local_theta=self.local_rope_theta), dtype=dtype,
        )


def _local_layers(c: dict, num_layers: int) -> tuple[int, ...]:
    types = c.get("layer_types")
    if types is None:
        every = int(c.get("global_attn_every_n_layers", 3))
        return tuple(i for i in range(num_layers) if i % every)
    if len(types) != num_layers or any(t not in _LAYER_TYPES for t in types):
        raise fields.unsupported("layer_types", types, f"{num_layers} entries of {', '.join(_LAYER_TYPES)}")
    return tuple(i for i, t in enumerate(types) if t == "sliding_attention")


def _rope_thetas(c: dict) -> tuple[float, float]:
    """(global, local) rotary bases, from rope_parameters or the hub's *_rope_theta fields."""
    if c.get("rope_scaling") is not None:
        raise fields.unsupported("rope_scaling", c["rope_scaling"], "ModernBERT runs plain rotary")
    params = c.get("rope_parameters")
    if isinstance(params, dict):
        for kind in _LAYER_TYPES:
            rope_type = fields.nested(c, f"rope_parameters.{kind}.rope_type", default="default")
            if rope_type != "default":
                raise fields.unsupported(f"rope_parameters.{kind}.rope_type", rope_type, "only 'default' rotary")
        return (
            float(fields.nested(c, "rope_parameters.full_attention.rope_theta")),
            float(fields.nested(c, "rope_parameters.sliding_attention.rope_theta")),
        )
    return float(c.get("global_rope_theta", 160000.0)), float(c.get("local_rope_theta", 10000.0))


def parse_config(spec: ModelSpec) -> ModernBertConfig:
    c = spec.config
    global_theta, local_theta = _rope_thetas(c)
    layers = int(fields.value(c, "num_hidden_layers"))
    return ModernBertConfig.parse(c, local_layers=_local_layers(c, layers), rope_theta=global_theta,
                                  local_rope_theta=local_theta)


def layer_entries(cfg: ModernBertConfig):
    h, d, bias = cfg.num_heads, cfg.head_dim, cfg.norm_bias

    def entries(variant: LayerVariant) -> list[Tensor]:
        p = "layers.{i}."
        out = (table.qkv("attention", p + "attn.Wqkv", h, h, d, cfg.attention_bias)
               + table.attention_out("attention/out", p + "attn.Wo", h, d, cfg.attention_bias)
               + table.norm("mlp_norm", p + "mlp_norm", bias=bias)
               # Wi rows: [input (activated) | gate]
               + table.gate_up("mlp", p + "mlp.Wi", cfg.intermediate_size, cfg.mlp_bias)
               + table.linear("mlp/down", p + "mlp.Wo", (Axis.MLP, Axis.EMBED), cfg.mlp_bias))
        if variant.attn_norm:
            out += table.norm("attn_norm", p + "attn_norm", bias=bias)
        return out

    return entries


def _classifier(spec: ModelSpec, cfg: ModernBertConfig, dtype):
    """ModernBertForSequenceClassification: pooled (cls or mean) -> dense, act, norm -> linear."""
    steps = (
        ("dense", "dense", cfg.hidden_size, cfg.classifier_bias), ("act", cfg.classifier_activation),
        ("norm", "norm", NormKind.LAYER, cfg.norm_eps, cfg.norm_bias), ("dense", "classifier", None, True),
    )
    entries = (table.linear("head/dense", "/head.dense", (Axis.EMBED, Axis.EMBED), cfg.classifier_bias)
               + table.norm("head/norm", "/head.norm", bias=cfg.norm_bias)
               + table.linear("head/classifier", "/classifier", (Axis.EMBED, Axis.LABELS)))
    return ClassificationHead(steps, len(spec.id2label), dtype), entries


def _mlm_head(cfg: ModernBertConfig, dtype):
    """ModernBertForMaskedLM (SPLADE): head (dense, act, norm) -> decoder tied to the embeddings."""
    head = MaskedLMHead(cfg.hidden_size, cfg.vocab_size, cfg.classifier_activation, cfg.norm_eps,
                        transform_bias=cfg.classifier_bias, dtype=dtype, norm_bias=cfg.norm_bias,
                        output_bias=cfg.decoder_bias)
    entries = masked_lm_entries("/head.dense", "/head.norm", "/decoder.weight|embeddings.tok_embeddings.weight",
                                "/decoder.bias" if cfg.decoder_bias else None,
                                transform_bias=cfg.classifier_bias, norm_bias=cfg.norm_bias)
    return head, entries


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """ModernBERT embeddings, classifier/reranker (cls or mean pooling) or SPLADE."""
    cfg = parse_config(spec)
    stack = cfg.stack(dtype, attention)
    head, head_entries = None, []
    if spec.kind in ("classifier", "reranker"):
        head, head_entries = _classifier(spec, cfg, dtype)
    elif spec.pooling == "splade":
        head, head_entries = _mlm_head(cfg, dtype)
    encoder = (table.embedding("encoder/embeddings/word", "embeddings.tok_embeddings", Axis.VOCAB)
               + table.norm("encoder/embeddings/norm", "embeddings.norm", bias=cfg.norm_bias)
               + table.norm("encoder/final_norm", "final_norm", bias=cfg.norm_bias))
    weights = WeightTable(encoder + head_entries, layer_entries(cfg), stack.variants, unused_ok=UNUSED_OK)
    return Architecture(
        encoder=Transformer(stack), table=weights, config=cfg, head=head,
        classifier_pooling=cfg.classifier_pooling, uses_token_types=False, checkpoint_prefixes=("model.",),
    )
