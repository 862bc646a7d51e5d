"""Alibaba GTE (gte-*-en-v1.5, gte-multilingual-base, gte-multilingual-reranker-base): a
post-norm BERT with rotary positions (optionally NTK-scaled), a fused qkv_proj and a gated MLP.

Two config spellings: the remote-code `new` (rope_theta, rope_scaling {type: ntk, factor},
layer_norm_type) and transformers' native `gte` (rope_parameters). Checkpoints are prefixed
`new.` (remote code) or `gte.` (transformers) inside classifiers; the layer names are shared.
"""

from __future__ import annotations

import numpy as np

from ..config import ModelSpec
from ..errors import ModelLoadError
from ..weights import WeightReader
from . import fields
from .architecture import Architecture, param_loader
from .heads import pooler_classifier
from .layers import Transformer, TransformerConfig

PREFIXES = ("new.", "gte.")  # the encoder inside classifier checkpoints
MODEL_TYPES = ("new", "gte")
_NORMS = {"layer_norm": "layernorm", "rms_norm": "rmsnorm"}


def _rope_options(c: dict) -> dict:
    """rope_theta and the NTK scaling of a `new` config, or the plain rope of a `gte` one."""
    if "rope_parameters" in c and "rope_theta" not in c:
        fields.default_rope(c)
        return dict(rope_theta=float(fields.nested(c, "rope_parameters.rope_theta")))
    scaling = c.get("rope_scaling")
    options = dict(rope_theta=float(fields.value(c, "rope_theta", default=10000.0)))
    if scaling is None:
        return options
    kind = (scaling.get("type") or scaling.get("rope_type")) if isinstance(scaling, dict) else None
    if kind != "ntk":
        raise fields.unsupported("rope_scaling", scaling, "only {'type': 'ntk', 'factor': ...}")
    mixed_b = scaling.get("mixed_b")
    return dict(options, rope_scaling="ntk", rope_factor=float(fields.nested(c, "rope_scaling.factor")),
                rope_mixed_b=None if mixed_b is None else float(mixed_b))


def transformer_config(spec: ModelSpec, dtype, attention: str) -> TransformerConfig:
    c = spec.config
    fields.require(c, "position_embedding_type", ("rope",), default="rope")
    fields.require(c, "logn_attention_scale", (False,), default=False)
    fields.require(c, "logn_attention_clip1", (False,), default=False)
    norm = _NORMS[fields.require(c, "layer_norm_type", tuple(_NORMS), default="layer_norm")]
    return TransformerConfig(
        hidden_size=int(c["hidden_size"]), num_layers=int(c["num_hidden_layers"]),
        num_heads=int(c["num_attention_heads"]), intermediate_size=int(c["intermediate_size"]),
        vocab_size=int(c["vocab_size"]), type_vocab_size=int(c.get("type_vocab_size", 0) or 0),
        norm=norm, norm_eps=float(c.get("layer_norm_eps", 1e-12)), norm_bias=norm == "layernorm",
        mlp="gated", mlp_bias=False, mlp_out_bias=True,
        hidden_act=fields.activation_name("hidden_act", c.get("hidden_act", "gelu")),
        positions="rotary", attention=attention, dtype=dtype, **_rope_options(c),
    )


def load_encoder(reader: WeightReader, cfg: TransformerConfig) -> dict:
    norm_bias = cfg.norm_bias
    embeddings = {
        "word": reader.embedding("embeddings.word_embeddings"),
        "norm": reader.norm("embeddings.LayerNorm", norm_bias),
    }
    if cfg.type_vocab_size:
        embeddings["token_type"] = reader.embedding("embeddings.token_type_embeddings")
    params = {"embeddings": embeddings}
    width = cfg.intermediate_size
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        up_gate = reader.get(p + "mlp.up_gate_proj.weight")  # rows: [up | gate]
        params[f"layer_{i}"] = {
            "attention": {"qkv": reader.linear(p + "attention.qkv_proj"), "out": reader.linear(p + "attention.o_proj")},
            "attn_norm": reader.norm(p + "attn_ln", norm_bias),
            "mlp": {
                "gate_up": {"kernel": np.ascontiguousarray(np.concatenate([up_gate[width:], up_gate[:width]]).T)},
                "down": reader.linear(p + "mlp.down_proj"),
            },
            "mlp_norm": reader.norm(p + "mlp_ln", norm_bias),
        }
    return params


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """GTE embeddings, or its classifier/reranker (gte-multilingual-reranker-base)."""
    if spec.pooling == "splade":
        raise ModelLoadError("config.json: field 'architectures': GTE has no masked-LM head for SPLADE here")
    cfg = transformer_config(spec, dtype, attention)
    head = load_head = None
    if spec.kind in ("classifier", "reranker"):
        head, load_head = pooler_classifier(spec, cfg.hidden_size, cfg.dtype, PREFIXES)

    load_params = param_loader(load_encoder, cfg, load_head)

    return Architecture(
        encoder=Transformer(cfg), load_params=load_params, head=head,
        uses_token_types=cfg.type_vocab_size > 1, checkpoint_prefixes=PREFIXES,
    )
