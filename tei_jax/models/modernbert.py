"""ModernBERT (answerdotai/ModernBERT-*, gte-modernbert, modernbert-embed, their rerankers):
a pre-norm encoder with rotary positions, GLU MLPs, optional biases, and attention that is
global every `global_attn_every_n_layers` layers and local (a window of `local_attention`
tokens) elsewhere, each kind with its own rotary base. Layer 0 has no pre-attention norm.

Hub configs name global_attn_every_n_layers / global_rope_theta / local_rope_theta;
transformers 5 saves layer_types and rope_parameters per layer type. Both are read.
"""

from __future__ import annotations

import numpy as np

from ..config import ModelSpec
from ..weights import WeightReader
from . import fields
from .architecture import Architecture, param_loader
from .heads import ClassificationHead, MaskedLMHead
from .layers import Transformer, TransformerConfig

MODEL_TYPES = ("modernbert",)
_LAYER_TYPES = ("full_attention", "sliding_attention")


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


def transformer_config(spec: ModelSpec, dtype, attention: str) -> TransformerConfig:
    c = spec.config
    layers = int(c["num_hidden_layers"])
    global_theta, local_theta = _rope_thetas(c)
    attention_bias = bool(c.get("attention_bias", False))
    return TransformerConfig(
        hidden_size=int(c["hidden_size"]), num_layers=layers, num_heads=int(c["num_attention_heads"]),
        intermediate_size=int(c["intermediate_size"]), vocab_size=int(c["vocab_size"]),
        norm_eps=float(c.get("norm_eps", 1e-5)), norm_bias=bool(c.get("norm_bias", False)),
        prenorm=True, embedding_norm=True, final_norm=True, first_layer_attn_norm=False,
        qkv_bias=attention_bias, out_bias=attention_bias,
        mlp="gated", mlp_bias=bool(c.get("mlp_bias", False)),
        hidden_act=fields.activation_name("hidden_activation", c.get("hidden_activation", "gelu")),
        positions="rotary", rope_theta=global_theta, local_rope_theta=local_theta,
        local_layers=_local_layers(c, layers), local_window=int(c.get("local_attention", 128)) // 2,
        attention=attention, dtype=dtype,
    )


def load_encoder(reader: WeightReader, cfg: TransformerConfig) -> dict:
    bias = cfg.norm_bias
    params = {
        "embeddings": {"word": reader.embedding("embeddings.tok_embeddings"), "norm": reader.norm("embeddings.norm", bias)},
        "final_norm": reader.norm("final_norm", bias),
    }
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        layer = {
            "attention": {"qkv": reader.linear(p + "attn.Wqkv", cfg.qkv_bias), "out": reader.linear(p + "attn.Wo", cfg.out_bias)},
            "mlp_norm": reader.norm(p + "mlp_norm", bias),
            # Wi rows: [input (activated) | gate], our gate_up layout.
            "mlp": {"gate_up": reader.linear(p + "mlp.Wi", cfg.mlp_bias), "down": reader.linear(p + "mlp.Wo", cfg.down_bias)},
        }
        if i > 0:
            layer["attn_norm"] = reader.norm(p + "attn_norm", bias)
        params[f"layer_{i}"] = layer
    return params


def _head_config(c: dict) -> tuple[str, bool]:
    return fields.activation_name("classifier_activation", c.get("classifier_activation", "gelu")), bool(c.get("classifier_bias", False))


def _classifier(spec: ModelSpec, cfg: TransformerConfig):
    """ModernBertForSequenceClassification: pooled (cls or mean) -> dense, act, norm -> linear."""
    act, dense_bias = _head_config(spec.config)
    steps = (
        ("dense", "dense", cfg.hidden_size, dense_bias), ("act", act),
        ("norm", "norm", "layernorm", cfg.norm_eps, cfg.norm_bias), ("dense", "classifier", None, True),
    )

    def load(reader: WeightReader) -> dict:
        return {
            "dense": reader.linear("head.dense", dense_bias, prefixed=False),
            "norm": reader.norm("head.norm", cfg.norm_bias, prefixed=False),
            "classifier": reader.linear("classifier", prefixed=False),
        }

    return ClassificationHead(steps, len(spec.id2label), cfg.dtype), load


def _mlm_head(spec: ModelSpec, cfg: TransformerConfig):
    """ModernBertForMaskedLM (SPLADE): head (dense, act, norm) -> decoder tied to the embeddings."""
    act, dense_bias = _head_config(spec.config)
    decoder_bias = bool(spec.config.get("decoder_bias", True))
    head = MaskedLMHead(cfg.hidden_size, cfg.vocab_size, act, cfg.norm_eps, transform_bias=dense_bias,
                        dtype=cfg.dtype, norm_bias=cfg.norm_bias)

    def load(reader: WeightReader) -> dict:
        decoder = reader.get("decoder.weight", prefixed=False) if reader.has("decoder.weight", prefixed=False) \
            else reader.get("embeddings.tok_embeddings.weight")
        bias = reader.get("decoder.bias", prefixed=False) if decoder_bias else np.zeros(cfg.vocab_size, cfg.dtype)
        return {
            "transform": reader.linear("head.dense", dense_bias, prefixed=False),
            "norm": reader.norm("head.norm", cfg.norm_bias, prefixed=False),
            "decoder": decoder,
            "bias": bias,
        }

    return head, load


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """ModernBERT embeddings, classifier/reranker (cls or mean pooling) or SPLADE."""
    cfg = transformer_config(spec, dtype, attention)
    head = load_head = None
    pooling = fields.require(spec.config, "classifier_pooling", ("cls", "mean"), default="cls")
    if spec.kind in ("classifier", "reranker"):
        head, load_head = _classifier(spec, cfg)
    elif spec.pooling == "splade":
        head, load_head = _mlm_head(spec, cfg)

    load_params = param_loader(load_encoder, cfg, load_head)

    return Architecture(
        encoder=Transformer(cfg), load_params=load_params, head=head, classifier_pooling=pooling,
        uses_token_types=False, checkpoint_prefixes=("model.",),
    )
