"""Mistral, Qwen2 and Qwen3: decoder-only LLMs used as embedders (e5-mistral, SFR-Embedding,
gte-Qwen2-instruct, stella, Qwen3-Embedding, voyage-4-nano).

The three share one pre-norm RMSNorm stack with rotary positions, grouped-query attention and
a gated SiLU MLP under the same checkpoint names, so they are one module with per-family facts
as data: which projections carry biases, Qwen3's per-head q/k norms and its optional output
projection. The embedding is usually the last token's state, which right padding leaves exact:
a causal query never sees the padding after it.
"""

from __future__ import annotations

import dataclasses
import logging

import flax.linen as nn

from ..config import ModelSpec, is_remote_qwen2
from ..errors import ModelLoadError
from ..weights import WeightReader
from .architecture import Architecture
from .heads import ClassificationHead, checkpoint_names
from .layers import ACTIVATIONS, Transformer, TransformerConfig, dense

log = logging.getLogger(__name__)

MODEL_TYPES = ("mistral", "qwen2", "qwen3")


@dataclasses.dataclass(frozen=True)
class DecoderFamily:
    """What differs between the families; None means "read config.json's attention_bias"."""

    qkv_bias: bool | None
    out_bias: bool | None
    qk_norm: bool = False
    projection: bool = False  # Qwen3's optional bias-free `linear` [num_labels, hidden]
    window_layers_field: str | None = None  # sliding only on layers >= this field (Qwen)


FAMILIES = {
    "mistral": DecoderFamily(qkv_bias=False, out_bias=False),
    "qwen2": DecoderFamily(qkv_bias=True, out_bias=False, window_layers_field="max_window_layers"),
    "qwen3": DecoderFamily(qkv_bias=None, out_bias=None, qk_norm=True, projection=True,
                           window_layers_field="max_window_layers"),
}


def rope_theta(config: dict) -> float:
    """rope_theta (older configs) or rope_parameters.rope_theta (transformers 5); scaled
    variants are refused by name rather than run with the wrong frequencies."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise ModelLoadError(f"config.json: field 'rope_scaling' = {scaling!r} is not supported")
    if params.get("rope_type", "default") != "default":
        raise ModelLoadError(
            f"config.json: field 'rope_parameters.rope_type' = {params['rope_type']!r} is not supported"
        )
    if config.get("partial_rotary_factor", 1.0) != 1.0:
        raise ModelLoadError(
            f"config.json: field 'partial_rotary_factor' = {config['partial_rotary_factor']!r} is not supported"
        )
    return float(config.get("rope_theta") or params.get("rope_theta") or 10000.0)


def is_causal(spec: ModelSpec) -> bool:
    """Decoders attend causally unless the config says otherwise: Qwen3's
    use_bidirectional_attention, an explicit is_causal, or the remote-code Qwen2Model."""
    config = spec.config
    if config.get("use_bidirectional_attention"):
        return False
    if "is_causal" in config:
        return bool(config["is_causal"])
    return not is_remote_qwen2(config, spec.model_type)  # gte-Qwen2, stella: bidirectional


def sliding_layers(spec: ModelSpec, family: DecoderFamily, num_layers: int) -> tuple[tuple[int, ...], int]:
    """(layers with a sliding window, window) as transformers applies them; ((), 0) when no
    window is set or none can be reached within the model's input length."""
    config = spec.config
    window = config.get("sliding_window")
    if family.window_layers_field is not None:
        if not config.get("use_sliding_window"):
            return (), 0
        types = config.get("layer_types")
        if isinstance(types, list) and len(types) == num_layers:
            layers = tuple(i for i, kind in enumerate(types) if kind == "sliding_attention")
        else:
            first = int(config.get(family.window_layers_field, 0))
            layers = tuple(range(first, num_layers))
    else:
        layers = tuple(range(num_layers))
    if not window or not layers or window >= spec.max_input_length:
        return (), 0
    return layers, int(window)


def transformer_config(spec: ModelSpec, dtype, attention: str) -> TransformerConfig:
    config = spec.config
    family = FAMILIES[spec.model_type]
    act = config.get("hidden_act", "silu")
    if act not in ACTIVATIONS:
        raise ModelLoadError(f"config.json: field 'hidden_act' = {act!r} is not supported")
    attention_bias = bool(config.get("attention_bias", False))
    causal = is_causal(spec)
    layers = int(config["num_hidden_layers"])
    window_layers, window = sliding_layers(spec, family, layers)
    if window and not causal:
        raise ModelLoadError(
            "config.json: field 'sliding_window' is set on a bidirectional model, which transformers "
            "does not define"
        )
    return TransformerConfig(
        hidden_size=config["hidden_size"],
        num_layers=layers,
        num_heads=config["num_attention_heads"],
        num_kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        head_dim=config.get("head_dim"),
        intermediate_size=config["intermediate_size"],
        vocab_size=config["vocab_size"],
        type_vocab_size=0,
        norm="rmsnorm",
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        norm_bias=False,
        prenorm=True,
        embedding_norm=False,
        final_norm=True,
        qkv_bias=attention_bias if family.qkv_bias is None else family.qkv_bias,
        out_bias=attention_bias if family.out_bias is None else family.out_bias,
        mlp_bias=False,
        mlp="gated",
        hidden_act=act,
        positions="rotary",
        rope_theta=rope_theta(config),
        causal=causal,
        qk_norm=family.qk_norm,
        # transformers' window keeps keys with query - key < window; with the causal mask,
        # that is the layers' symmetric |query - key| <= window - 1.
        local_layers=window_layers,
        local_window=max(window - 1, 0),
        attention=attention,
        dtype=dtype,
    )


class DecoderEncoder(nn.Module):
    """The decoder stack, then (Qwen3, voyage-4-nano) a bias-free projection of every token."""

    cfg: TransformerConfig
    projection_size: int | None = None

    @nn.compact
    def __call__(self, input_ids, type_ids, position_ids, segment_ids):
        hidden = Transformer(self.cfg, name="transformer")(input_ids, type_ids, position_ids, segment_ids)
        if self.projection_size:
            hidden = dense(self.projection_size, False, self.cfg.dtype, "projection")(hidden)
        return hidden


def projection_size(spec: ModelSpec, family: DecoderFamily) -> int | None:
    """TEI's Qwen3 projection: an embedding model whose config.json declares num_labels and
    whose checkpoint holds `linear.weight` [num_labels, hidden]."""
    labels = spec.config.get("num_labels")
    if not family.projection or spec.kind != "embedding" or not isinstance(labels, int):
        return None
    if "linear.weight" not in checkpoint_names(spec):
        log.warning("config.json sets num_labels but the checkpoint has no linear.weight: no projection")
        return None
    return labels


def load_stack(reader: WeightReader, cfg: TransformerConfig) -> dict:
    """Checkpoint names (after an optional `model.` prefix) -> Transformer params."""
    params = {"embeddings": {"word": reader.embedding("embed_tokens")}, "final_norm": reader.norm("norm", bias=False)}
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        attention = {
            "qkv": reader.fused_linear([p + f"self_attn.{n}_proj" for n in "qkv"], bias=cfg.qkv_bias),
            "out": reader.linear(p + "self_attn.o_proj", bias=cfg.out_bias),
        }
        if cfg.qk_norm:
            attention["q_norm"] = reader.norm(p + "self_attn.q_norm", bias=False)
            attention["k_norm"] = reader.norm(p + "self_attn.k_norm", bias=False)
        params[f"layer_{i}"] = {
            "attention": attention,
            "attn_norm": reader.norm(p + "input_layernorm", bias=False),
            "mlp": {
                "gate_up": reader.fused_linear([p + "mlp.gate_proj", p + "mlp.up_proj"], bias=False),
                "down": reader.linear(p + "mlp.down_proj", bias=False),
            },
            "mlp_norm": reader.norm(p + "post_attention_layernorm", bias=False),
        }
    return params


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """The decoder Architecture: an embedder (any pooling, usually last_token) or a
    *ForSequenceClassification scorer (the bias-free `score` head on the last token)."""
    family = FAMILIES[spec.model_type]
    cfg = transformer_config(spec, dtype, attention)
    projection = projection_size(spec, family)
    head = None
    if spec.kind in ("classifier", "reranker"):
        head = ClassificationHead((("dense", "score", None, False),), len(spec.id2label), dtype)

    def load_params(reader: WeightReader) -> dict:
        encoder = {"transformer": load_stack(reader, cfg)}
        if projection:
            encoder["projection"] = reader.linear("linear", bias=False, prefixed=False)
        params = {"encoder": encoder}
        if head is not None:
            params["head"] = {"score": reader.linear("score", bias=False, prefixed=False)}
        return params

    return Architecture(
        encoder=DecoderEncoder(cfg, projection),
        load_params=load_params,
        head=head,
        classifier_pooling="last_token",
        uses_token_types=False,
        checkpoint_prefixes=("model.",),
        output_size=projection,
    )
