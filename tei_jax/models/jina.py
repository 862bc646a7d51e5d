"""JinaBERT v2 (jina-embeddings-v2-*, jina-reranker-v1-*): a `bert` config whose remote code is
jinaai/jina-bert-implementation. Post-norm BERT with symmetric ALiBi instead of positions and a
GLU MLP (gated_layers -> act(gate) * value -> wo, then its own LayerNorm).

The jinaai/jina-bert-v2-qk-post-norm variant (jina-embeddings-v2-base-code) adds LayerNorms on
the full q and k projections, normalises the attention block's output once more together with
the layer input (layer_norm_1), and names its MLP up_gated_layer (value first) / down_layer.
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

PREFIXES = ("bert.",)  # the encoder inside classifier checkpoints
MODEL_TYPES = ("bert",)
IMPLEMENTATION = "jinaai/jina-bert-implementation"
QK_POST_NORM = "jinaai/jina-bert-v2-qk-post-norm"
_GLU_ACTIVATIONS = {"geglu": "gelu", "reglu": "relu"}


def _remote_code(spec: ModelSpec) -> str | None:
    """Which JinaBERT code a config points at (_name_or_path or auto_map), if any."""
    auto_map = spec.config.get("auto_map")
    places = [str(spec.config.get("_name_or_path", ""))]
    if isinstance(auto_map, dict):
        places += [str(v) for v in auto_map.values()]
    for code in (QK_POST_NORM, IMPLEMENTATION):
        if any(code in place for place in places):
            return code
    return None


def matches(spec: ModelSpec) -> bool:
    return spec.model_type == "bert" and _remote_code(spec) is not None


def transformer_config(spec: ModelSpec, dtype, attention: str) -> TransformerConfig:
    c = spec.config
    positions = fields.require(c, "position_embedding_type", ("alibi", "absolute"), default="absolute")
    glu = fields.require(c, "feed_forward_type", tuple(_GLU_ACTIVATIONS), default="geglu")
    qk_post_norm = _remote_code(spec) == QK_POST_NORM
    return TransformerConfig(
        hidden_size=int(c["hidden_size"]), num_layers=int(c["num_hidden_layers"]),
        num_heads=int(c["num_attention_heads"]), intermediate_size=int(c["intermediate_size"]),
        vocab_size=int(c["vocab_size"]), type_vocab_size=int(c.get("type_vocab_size", 2)),
        max_positions=int(c.get("max_position_embeddings", 0)),
        norm_eps=float(c.get("layer_norm_eps", 1e-12)),
        positions="alibi" if positions == "alibi" else "learned",
        mlp="gated", mlp_bias=False, mlp_out_bias=True, hidden_act=_GLU_ACTIVATIONS[glu],
        qk_layernorm=qk_post_norm, attn_renorm=qk_post_norm,
        attention=attention, dtype=dtype,
    )


def load_encoder(reader: WeightReader, cfg: TransformerConfig) -> dict:
    embeddings = {
        "word": reader.embedding("embeddings.word_embeddings"),
        "token_type": reader.embedding("embeddings.token_type_embeddings"),
        "norm": reader.norm("embeddings.LayerNorm"),
    }
    if cfg.positions == "learned":
        embeddings["position"] = reader.embedding("embeddings.position_embeddings")
    params = {"embeddings": embeddings}
    width = cfg.intermediate_size
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        attention = {
            "qkv": reader.fused_linear([p + "attention.self.query", p + "attention.self.key", p + "attention.self.value"]),
            "out": reader.linear(p + "attention.output.dense"),
        }
        layer = {"attention": attention, "attn_norm": reader.norm(p + "attention.output.LayerNorm")}
        if cfg.qk_layernorm:
            attention["q_layernorm"] = reader.norm(p + "attention.self.layer_norm_q")
            attention["k_layernorm"] = reader.norm(p + "attention.self.layer_norm_k")
            value_gate = reader.get(p + "mlp.up_gated_layer.weight")  # rows: [value | gate]
            layer["attn_renorm"] = reader.norm(p + "layer_norm_1")
            layer["mlp"] = {
                "gate_up": {"kernel": np.ascontiguousarray(np.concatenate([value_gate[width:], value_gate[:width]]).T)},
                "down": reader.linear(p + "mlp.down_layer"),
            }
            layer["mlp_norm"] = reader.norm(p + "layer_norm_2")
        else:  # gated_layers rows: [gate | value], our layout
            layer["mlp"] = {"gate_up": reader.linear(p + "mlp.gated_layers", bias=False), "down": reader.linear(p + "mlp.wo")}
            layer["mlp_norm"] = reader.norm(p + "mlp.layernorm")
        params[f"layer_{i}"] = layer
    return params


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """JinaBERT embeddings, or the jina-reranker-v1 classifier."""
    if spec.pooling == "splade":
        raise ModelLoadError("config.json: field 'architectures': JinaBERT has no masked-LM head for SPLADE here")
    cfg = transformer_config(spec, dtype, attention)
    head = load_head = None
    if spec.kind in ("classifier", "reranker"):
        if cfg.qk_layernorm:
            raise ModelLoadError(
                f"config.json: field 'auto_map' points at {QK_POST_NORM}, which is served as an embedding model only"
            )
        head, load_head = pooler_classifier(spec, cfg.hidden_size, cfg.dtype, PREFIXES)

    load_params = param_loader(load_encoder, cfg, load_head)

    return Architecture(
        encoder=Transformer(cfg), load_params=load_params, head=head,
        uses_token_types=True, checkpoint_prefixes=PREFIXES,
    )
