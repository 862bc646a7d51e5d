"""Mistral, Qwen2, Qwen3 and Llama: decoder-only LLMs used as embedders (e5-mistral,
SFR-Embedding, gte-Qwen2-instruct, stella, Qwen3-Embedding, voyage-4-nano, the bidirectional
Llama embedders such as NVIDIA's Nemotron `llama_bidirec`).

They share one pre-norm RMSNorm stack with rotary positions, grouped-query attention and
a gated SiLU MLP under the same checkpoint names, so they are one module with per-family facts
as data: which projections carry biases, Qwen3's per-head q/k norms and its optional output
projection, Llama's `attention_bias` on every attention projection and `mlp_bias`. Rotary
scalings (linear, dynamic, YaRN, Llama 3) are read by rope.py. The embedding is usually the last token's state, which right padding leaves exact:
a causal query never sees the padding after it. Sliding-window layers differ from the others
only in their window, so the stack scans each run of like layers.
"""

from __future__ import annotations

import dataclasses
import logging

import flax.linen as nn

from ..config import ModelSpec, is_remote_qwen2
from ..errors import ModelLoadError
from . import table
from .architecture import Architecture
from .fields import FamilyConfig, derived, json_field
from .rope import RopeScalingSpec
from .rope import parse as parse_rope
from .heads import ClassificationHead
from .layers import (Activation, AttentionSpec, LayerVariant, MLPKind, MLPSpec, NormKind, NormSpec, PositionKind,
                     QKNorm, RotarySpec, StackSpec, Transformer, dense)
from .table import Axis, Tensor, WeightTable

log = logging.getLogger(__name__)

MODEL_TYPES = ("mistral", "qwen2", "qwen3", "llama", "llama_bidirec")
UNUSED_OK = ("/lm_head.", "/score.", "/linear.")


@dataclasses.dataclass(frozen=True)
class DecoderFamily:
    """What differs between the families; None means "read config.json's attention_bias"."""

    qkv_bias: bool | None
    out_bias: bool | None
    qk_norm: bool = False
    projection: bool = False  # Qwen3's optional bias-free `linear` [num_labels, hidden]
    window_layers_field: str | None = None  # sliding only on layers >= this field (Qwen)
    bidirectional: bool = False  # attends both ways unless config.json says is_causal (llama_bidirec)


FAMILIES = {
    "mistral": DecoderFamily(qkv_bias=False, out_bias=False),
    "qwen2": DecoderFamily(qkv_bias=True, out_bias=False, window_layers_field="max_window_layers"),
    "qwen3": DecoderFamily(qkv_bias=None, out_bias=None, qk_norm=True, projection=True,
                           window_layers_field="max_window_layers"),
    "llama": DecoderFamily(qkv_bias=None, out_bias=None),
    "llama_bidirec": DecoderFamily(qkv_bias=None, out_bias=None, bidirectional=True),
    # pplx.py: Qwen3 layers, bidirectional (TEI's Pplx1 = its Qwen3 with the config's flag).
    "bidirectional_pplx_qwen3": DecoderFamily(qkv_bias=None, out_bias=None, qk_norm=True,
                                              bidirectional=True),
}


@dataclasses.dataclass(frozen=True)
class DecoderConfig(FamilyConfig):
    hidden_size: int = json_field("hidden_size")
    num_layers: int = json_field("num_hidden_layers")
    num_heads: int = json_field("num_attention_heads")
    num_kv_heads: int | None = json_field("num_key_value_heads", default=None)
    head_dim: int | None = json_field("head_dim", default=None)
    intermediate_size: int = json_field("intermediate_size")
    vocab_size: int = json_field("vocab_size")
    norm_eps: float = json_field("rms_norm_eps", default=1e-6)
    activation: Activation = json_field("hidden_act", default="silu")
    attention_bias: bool = json_field("attention_bias", default=False)
    mlp_bias: bool = json_field("mlp_bias", default=False)  # Llama
    partial_rotary_factor: float = json_field("partial_rotary_factor", default=1.0, allowed=(1.0,))
    rope_theta: float = derived()
    rope_scaling: RopeScalingSpec | None = derived()
    causal: bool = derived()
    local_layers: tuple[int, ...] = derived()  # layers with a sliding window
    local_window: int = derived()  # there a token sees keys at most this many positions away
    family: DecoderFamily = derived()

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def stack(self, dtype, attention: str) -> StackSpec:
        f = self.family
        local = LayerVariant(window=self.local_window)
        return StackSpec(
            hidden_size=self.hidden_size, vocab_size=self.vocab_size,
            attention=AttentionSpec(
                self.num_heads, self.dim_per_head, kv_heads=self.num_kv_heads or self.num_heads,
                qkv_bias=self.attention_bias if f.qkv_bias is None else f.qkv_bias,
                out_bias=self.attention_bias if f.out_bias is None else f.out_bias,
                causal=self.causal, qk_norm=QKNorm.PER_HEAD if f.qk_norm else QKNorm.NONE,
                implementation=attention),
            mlp=MLPSpec(self.intermediate_size, self.activation, MLPKind.GATED, bias=self.mlp_bias,
                        out_bias=self.mlp_bias),
            variants=tuple(local if i in self.local_layers else LayerVariant() for i in range(self.num_layers)),
            norm=NormSpec(NormKind.RMS, self.norm_eps, bias=False), positions=PositionKind.ROTARY,
            prenorm=True, embedding_norm=False, final_norm=True,
            rotary=RotarySpec(self.dim_per_head, self.rope_theta, scaled=self.rope_scaling), dtype=dtype,
        )


def rope_theta(config: dict) -> float:
    """rope_theta (older configs) or rope_parameters.rope_theta (transformers 5); rope types
    rope.py does not run are refused by name rather than run with the wrong frequencies."""
    return parse_rope(config)[0]


def is_causal(spec: ModelSpec) -> bool:
    """Decoders attend causally unless the config says otherwise: Qwen3's
    use_bidirectional_attention, an explicit is_causal, the remote-code Qwen2Model, or a
    bidirectional family (llama_bidirec, pplx) whose config does not set the flag false."""
    config = spec.config
    if config.get("use_bidirectional_attention"):
        return False
    if "is_causal" in config:
        return bool(config["is_causal"])
    if FAMILIES[spec.model_type].bidirectional:
        return config.get("use_bidirectional_attention") is False
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


def parse_config(spec: ModelSpec) -> DecoderConfig:
    config = spec.config
    family = FAMILIES[spec.model_type]
    causal = is_causal(spec)
    layers = config.get("num_hidden_layers")
    window_layers, window = sliding_layers(spec, family, int(layers)) if isinstance(layers, int) else ((), 0)
    if window and not causal:
        raise ModelLoadError(
            "config.json: field 'sliding_window' is set on a bidirectional model, which transformers "
            "does not define"
        )
    # transformers' window keeps keys with query - key < window; with the causal mask, that is
    # the layers' symmetric |query - key| <= window - 1.
    theta, scaling = parse_rope(config, spec.max_input_length)
    return DecoderConfig.parse(config, rope_theta=theta, rope_scaling=scaling, causal=causal, local_layers=window_layers,
                               local_window=max(window - 1, 0), family=family)


class DecoderEncoder(nn.Module):
    """The decoder stack, then (Qwen3, voyage-4-nano) a bias-free projection of every token."""

    spec: StackSpec
    projection_size: int | None = None

    @nn.compact
    def __call__(self, input_ids, type_ids, position_ids, segment_ids):
        hidden = Transformer(self.spec, name="transformer")(input_ids, type_ids, position_ids, segment_ids)
        if self.projection_size:
            hidden = dense(self.projection_size, False, self.spec.dtype, "projection")(hidden)
        return hidden


def projection_size(spec: ModelSpec, family: DecoderFamily) -> int | None:
    """TEI's Qwen3 projection: an embedding model whose config.json declares num_labels and
    whose checkpoint holds `linear.weight` [num_labels, hidden]."""
    labels = spec.config.get("num_labels")
    if not family.projection or spec.kind != "embedding" or not isinstance(labels, int):
        return None
    if "linear.weight" not in spec.tensor_names:
        log.warning("config.json sets num_labels but the checkpoint has no linear.weight: no projection")
        return None
    return labels


def layer_entries(cfg: DecoderConfig, stack: StackSpec):
    a = stack.attention
    h, kvh, d = a.heads, a.num_kv_heads, a.head_dim

    def entries(variant: LayerVariant) -> list[Tensor]:
        p = "layers.{i}."
        out = (table.qkv("attention", [p + f"self_attn.{n}_proj" for n in "qkv"], h, kvh, d, a.qkv_bias)
               + table.attention_out("attention/out", p + "self_attn.o_proj", h, d, a.out_bias)
               + table.norm("attn_norm", p + "input_layernorm", bias=False)
               + table.linear("mlp/gate", p + "mlp.gate_proj", (Axis.EMBED, Axis.MLP), bias=cfg.mlp_bias)
               + table.linear("mlp/up", p + "mlp.up_proj", (Axis.EMBED, Axis.MLP), bias=cfg.mlp_bias)
               + table.linear("mlp/down", p + "mlp.down_proj", (Axis.MLP, Axis.EMBED), bias=cfg.mlp_bias)
               + table.norm("mlp_norm", p + "post_attention_layernorm", bias=False))
        if a.qk_norm is QKNorm.PER_HEAD:
            out += (table.norm("attention/q_norm", p + "self_attn.q_norm", Axis.HEAD_DIM, bias=False)
                    + table.norm("attention/k_norm", p + "self_attn.k_norm", Axis.HEAD_DIM, bias=False))
        return out

    return entries


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """The decoder Architecture: an embedder (any pooling, usually last_token) or a
    *ForSequenceClassification scorer (the bias-free `score` head on the last token)."""
    cfg = parse_config(spec)
    stack = cfg.stack(dtype, attention)
    projection = projection_size(spec, cfg.family)
    head, entries = None, [
        *table.embedding("encoder/transformer/embeddings/word", "embed_tokens", Axis.VOCAB),
        *table.norm("encoder/transformer/final_norm", "norm", bias=False),
    ]
    if projection:
        entries += table.linear("encoder/projection", "/linear", (Axis.EMBED, Axis.LABELS), bias=False)
    if spec.kind in ("classifier", "reranker"):
        head = ClassificationHead((("dense", "score", None, False),), len(spec.id2label), dtype)
        entries += table.linear("head/score", "/score", (Axis.EMBED, Axis.LABELS), bias=False)
    weights = WeightTable(entries, layer_entries(cfg, stack), stack.variants, stack_path="encoder/transformer",
                          unused_ok=UNUSED_OK)
    return Architecture(
        encoder=DecoderEncoder(stack, projection), table=weights, config=cfg, head=head,
        classifier_pooling="last_token", uses_token_types=False, checkpoint_prefixes=("model.",),
        output_size=projection,
    )
