"""Gemma 3 text stacks (`gemma3_text`): google/embeddinggemma-300m and other Gemma3 embedders.

A pre-norm decoder stack like decoder.py's, with Gemma's differences as data: RMSNorm scaled
by (1 + weight), word embeddings times sqrt(hidden_size), per-head q/k norms, a softmax scale
of query_pre_attn_scalar ** -0.5, a GeGLU (gelu_pytorch_tanh) MLP, and a norm on each block's
output as well as its input (pre/post feed-forward norms). Sliding-window layers alternate
with global ones (`layer_types`, or every `sliding_window_pattern`-th layer global), each with
its own rotary base; the global layers may carry a rotary scaling (rope.py).

`use_bidirectional_attention` (EmbeddingGemma) makes every layer attend both ways; there a
sliding layer sees keys at most sliding_window // 2 positions away, as transformers and TEI
do. The EmbeddingGemma pipeline after the stack (mean pooling, two Dense modules, Normalize,
its prompts) is read from the sentence-transformers files like any other model's.
"""

from __future__ import annotations

import dataclasses
import math

from ..config import ModelSpec
from ..errors import ModelLoadError
from . import table
from .architecture import Architecture
from .fields import FamilyConfig, derived, json_field, unsupported
from .layers import (Activation, AttentionSpec, LayerVariant, MLPKind, MLPSpec, NormKind, NormSpec, PositionKind,
                     QKNorm, RotarySpec, StackSpec, Transformer)
from .rope import RopeScalingSpec
from .rope import parse as parse_rope
from .table import Axis, Tensor, WeightTable

MODEL_TYPES = ("gemma3_text",)
SLIDING, FULL = "sliding_attention", "full_attention"


@dataclasses.dataclass(frozen=True)
class Gemma3Config(FamilyConfig):
    hidden_size: int = json_field("hidden_size")
    num_layers: int = json_field("num_hidden_layers")
    num_heads: int = json_field("num_attention_heads")
    num_kv_heads: int = json_field("num_key_value_heads")
    head_dim: int = json_field("head_dim", default=256)
    intermediate_size: int = json_field("intermediate_size")
    vocab_size: int = json_field("vocab_size")
    norm_eps: float = json_field("rms_norm_eps", default=1e-6)
    activation: Activation = json_field("hidden_activation", "hidden_act", default="gelu_pytorch_tanh")
    attention_bias: bool = json_field("attention_bias", default=False)
    query_pre_attn_scalar: float = json_field("query_pre_attn_scalar", default=256)
    attn_logit_softcapping: float | None = json_field("attn_logit_softcapping", default=None, allowed=(None,))
    bidirectional: bool = json_field("use_bidirectional_attention", default=False)
    rope_theta: float = derived()
    rope_scaling: RopeScalingSpec | None = derived()  # of the global layers
    local_theta: float = derived()
    sliding_layers: tuple[int, ...] = derived()
    window: int | None = derived()  # keys at most this far on sliding layers; None: never reached

    def stack(self, dtype, attention: str) -> StackSpec:
        local = LayerVariant(window=self.window, local_rope=True)
        norm = NormSpec(NormKind.RMS_PLUS_ONE, self.norm_eps, bias=False)
        return StackSpec(
            hidden_size=self.hidden_size, vocab_size=self.vocab_size,
            attention=AttentionSpec(self.num_heads, self.head_dim, kv_heads=self.num_kv_heads,
                                    qkv_bias=self.attention_bias, out_bias=self.attention_bias,
                                    causal=not self.bidirectional, qk_norm=QKNorm.PER_HEAD,
                                    implementation=attention, scale=self.query_pre_attn_scalar ** -0.5),
            mlp=MLPSpec(self.intermediate_size, self.activation, MLPKind.GATED, bias=False, out_bias=False),
            variants=tuple(local if i in self.sliding_layers else LayerVariant() for i in range(self.num_layers)),
            norm=norm, positions=PositionKind.ROTARY, prenorm=True, post_norms=True, embedding_norm=False,
            final_norm=True, embedding_scale=math.sqrt(self.hidden_size),
            rotary=RotarySpec(self.head_dim, self.rope_theta, local_theta=self.local_theta, scaled=self.rope_scaling),
            dtype=dtype,
        )


def layer_kinds(config: dict, num_layers: int) -> list[str]:
    """`layer_types` (transformers 5), else every `sliding_window_pattern`-th layer global."""
    kinds = config.get("layer_types")
    if isinstance(kinds, list):
        if len(kinds) != num_layers or any(k not in (SLIDING, FULL) for k in kinds):
            raise unsupported("layer_types", kinds, f"{num_layers} of {SLIDING!r} / {FULL!r}")
        return kinds
    pattern = config.get("sliding_window_pattern", config.get("_sliding_window_pattern", 6))
    if not isinstance(pattern, int) or pattern < 1:
        raise unsupported("sliding_window_pattern", pattern, "a positive integer")
    return [SLIDING if (i + 1) % pattern else FULL for i in range(num_layers)]


def rotary(config: dict, max_input_length: int) -> tuple[float, RopeScalingSpec | None, float]:
    """(global theta, global scaling, local theta) from per-layer-type `rope_parameters`
    (transformers 5) or `rope_theta` + `rope_scaling` + `rope_local_base_freq` (hub configs)."""
    params = config.get("rope_parameters")
    limit = {"max_position_embeddings": config.get("max_position_embeddings")}
    if isinstance(params, dict) and (FULL in params or SLIDING in params):
        full, local = params.get(FULL) or {}, params.get(SLIDING) or {}
        theta, scaling = parse_rope({**limit, "rope_parameters": {"rope_theta": 1e6, **full}}, max_input_length)
        if local.get("rope_type", "default") != "default":
            raise unsupported(f"rope_parameters.{SLIDING}.rope_type", local["rope_type"], "only 'default'")
        return theta, scaling, float(local.get("rope_theta", 10000.0))
    theta, scaling = parse_rope({"rope_theta": 1e6, **config}, max_input_length)
    return theta, scaling, float(config.get("rope_local_base_freq") or 10000.0)


def parse_config(spec: ModelSpec) -> Gemma3Config:
    config = spec.config
    layers = config.get("num_hidden_layers")
    if not isinstance(layers, int):
        raise ModelLoadError("config.json: field 'num_hidden_layers' is missing")
    kinds = layer_kinds(config, layers)
    sliding = tuple(i for i, kind in enumerate(kinds) if kind == SLIDING)
    width = config.get("sliding_window")
    window = None
    if sliding and width:
        # transformers: |q - k| < width // 2 + 1 both ways, or 0 <= q - k < width causally.
        window = int(width) // 2 if config.get("use_bidirectional_attention") else int(width) - 1
        if window >= spec.max_input_length - 1:
            window = None
    theta, scaling, local_theta = rotary(config, spec.max_input_length)
    return Gemma3Config.parse(config, rope_theta=theta, rope_scaling=scaling, local_theta=local_theta,
                              sliding_layers=sliding, window=window)


def layer_entries(cfg: Gemma3Config):
    h, kvh, d, bias = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.attention_bias

    def entries(variant: LayerVariant) -> list[Tensor]:
        p = "layers.{i}."
        return (table.qkv("attention", [p + f"self_attn.{n}_proj" for n in "qkv"], h, kvh, d, bias)
                + table.attention_out("attention/out", p + "self_attn.o_proj", h, d, bias)
                + table.norm("attention/q_norm", p + "self_attn.q_norm", Axis.HEAD_DIM, bias=False)
                + table.norm("attention/k_norm", p + "self_attn.k_norm", Axis.HEAD_DIM, bias=False)
                + table.norm("attn_norm", p + "input_layernorm", bias=False)
                + table.norm("attn_post_norm", p + "post_attention_layernorm", bias=False)
                + table.norm("mlp_norm", p + "pre_feedforward_layernorm", bias=False)
                + table.norm("mlp_post_norm", p + "post_feedforward_layernorm", bias=False)
                + table.linear("mlp/gate", p + "mlp.gate_proj", (Axis.EMBED, Axis.MLP), bias=False)
                + table.linear("mlp/up", p + "mlp.up_proj", (Axis.EMBED, Axis.MLP), bias=False)
                + table.linear("mlp/down", p + "mlp.down_proj", (Axis.MLP, Axis.EMBED), bias=False))

    return entries


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """The Gemma3 embedder (any pooling; TEI serves no Gemma3 classifier, nor do we)."""
    if spec.kind != "embedding":
        raise ModelLoadError(f"config.json: field 'architectures' = {spec.architectures!r}: "
                             "gemma3_text serves embeddings only (as TEI)")
    cfg = parse_config(spec)
    stack = cfg.stack(dtype, attention)
    entries = (table.embedding("encoder/embeddings/word", "embed_tokens", Axis.VOCAB)
               + table.norm("encoder/final_norm", "norm", bias=False))
    weights = WeightTable(entries, layer_entries(cfg), stack.variants, unused_ok=("/lm_head.",))
    return Architecture(encoder=Transformer(stack), table=weights, config=cfg, classifier_pooling="last_token",
                        checkpoint_prefixes=("model.",))
