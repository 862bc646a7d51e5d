"""NomicBERT (nomic-embed-text-v1, v1.5, v2-moe): a post-norm BERT with rotary positions, a
fused Wqkv, SwiGLU (v1) or GELU (v2) MLPs, optional biases, and in v2 a mixture of experts on
every other layer (scanned as pairs of layers).

Published checkpoints carry nomic's remote-code config (GPT-2 names: n_embd, n_head, ...);
transformers 5 saves its native NomicBert with BERT names (hidden_size, ...). Both are read.
The weight names are the same for both: transformers renames them on load and back on save.
"""

from __future__ import annotations

import dataclasses

from ..config import ModelSpec
from ..errors import ModelLoadError
from . import fields, table
from .architecture import Architecture
from .fields import FamilyConfig, WidthSplitHeads, derived, json_field
from .heads import pooler_classifier
from .layers import (Activation, AttentionSpec, LayerVariant, MLPKind, MLPSpec, NormSpec, PositionKind, RotarySpec,
                     StackSpec, Transformer)
from .table import Axis, Tensor, WeightTable

PREFIXES = ("nomic_bert.", "bert.")  # the encoder inside classifier checkpoints
MODEL_TYPES = ("nomic_bert",)
UNUSED_OK = ("pooler.", "/pooler.", "/classifier.")

# Remote-code activation_function -> (MLP kind, activation); "gelu" layers are plain fc1/fc2.
_HUB_ACTIVATIONS = {"swiglu": (MLPKind.GATED, Activation.SILU), "gelu": (MLPKind.PLAIN, Activation.GELU)}


@dataclasses.dataclass(frozen=True)
class NomicConfig(FamilyConfig, WidthSplitHeads):
    hidden_size: int = json_field("n_embd", "hidden_size")
    num_layers: int = json_field("n_layer", "num_hidden_layers")
    num_heads: int = json_field("n_head", "num_attention_heads")
    intermediate_size: int = json_field("n_inner", "intermediate_size")
    vocab_size: int = json_field("vocab_size")
    type_vocab_size: int = json_field("type_vocab_size", default=2)
    norm_eps: float = json_field("layer_norm_epsilon", "layer_norm_eps", default=1e-12)
    mlp_kind: MLPKind = derived()
    activation: Activation = derived()
    qkv_bias: bool = derived()  # also the output projection's
    mlp_bias: bool = derived()
    mlp_out_bias: bool = derived()
    rope_theta: float = derived()
    rotary_fraction: float = derived()
    moe_layers: tuple[int, ...] = derived()
    num_experts: int = derived()
    moe_top_k: int = derived()

    def stack(self, dtype, attention: str) -> StackSpec:
        return StackSpec(
            hidden_size=self.hidden_size, vocab_size=self.vocab_size,
            attention=AttentionSpec(self.num_heads, self.head_dim, qkv_bias=self.qkv_bias, out_bias=self.qkv_bias,
                                    implementation=attention),
            mlp=MLPSpec(self.intermediate_size, self.activation, self.mlp_kind, self.mlp_bias, self.mlp_out_bias,
                        experts=self.num_experts, top_k=self.moe_top_k),
            variants=tuple(LayerVariant(moe=i in self.moe_layers) for i in range(self.num_layers)),
            norm=NormSpec(eps=self.norm_eps), positions=PositionKind.ROTARY,
            type_vocab_size=self.type_vocab_size,
            rotary=RotarySpec(int(self.head_dim * self.rotary_fraction), self.rope_theta), dtype=dtype,
        )


def _hub_options(c: dict) -> dict:
    """Options of a remote-code (GPT-2 style) config, refusing what the model does not run."""
    fields.require(c, "prenorm", (False,), default=False)
    fields.require(c, "rotary_emb_interleaved", (False,), default=False)
    fields.require(c, "causal", (False,), default=False)
    fields.require(c, "parallel_block", (False,), default=False)
    fields.require(c, "use_rms_norm", (False,), default=False)
    fields.require(c, "rotary_emb_scale_base", (None,))  # xPos
    fields.require(c, "rotary_scaling_factor", (None,))  # dynamic NTK beyond max_trained_positions
    act = c.get("activation_function")
    if act not in _HUB_ACTIVATIONS:
        raise fields.unsupported("activation_function", act, "supported: " + ", ".join(_HUB_ACTIVATIONS))
    mlp_kind, activation = _HUB_ACTIVATIONS[act]
    return dict(
        mlp_kind=mlp_kind, activation=activation,
        qkv_bias=bool(fields.value(c, "qkv_proj_bias")),
        mlp_bias=bool(fields.value(c, "mlp_fc1_bias")),
        mlp_out_bias=bool(fields.value(c, "mlp_fc2_bias")),
        rope_theta=float(fields.value(c, "rotary_emb_base")),
        rotary_fraction=float(fields.value(c, "rotary_emb_fraction", default=1.0)),
    )


def _native_options(c: dict) -> dict:
    """Options of a transformers-native config: gated MLP, no biases, rope_parameters."""
    fields.default_rope(c)
    return dict(
        mlp_kind=MLPKind.GATED, activation=fields.activation_name("hidden_act", c.get("hidden_act", "silu")),
        qkv_bias=False, mlp_bias=False, mlp_out_bias=False,
        rope_theta=float(fields.nested(c, "rope_parameters.rope_theta", default=c.get("rope_theta", 1000.0))),
        rotary_fraction=1.0,
    )


def _moe_options(c: dict, num_layers: int) -> dict:
    every = int(c.get("moe_every_n_layers") or 0)
    if not every:
        return dict(moe_layers=(), num_experts=0, moe_top_k=0)
    if c.get("moe_normalize_expert_weights"):
        raise fields.unsupported("moe_normalize_expert_weights", c["moe_normalize_expert_weights"],
                                 "the router's top-k weights are used as they are")
    return dict(
        moe_layers=tuple(i for i in range(num_layers) if i % every == 1),
        num_experts=int(fields.value(c, "num_experts")),
        moe_top_k=int(fields.value(c, "moe_top_k")),
    )


def parse_config(spec: ModelSpec) -> NomicConfig:
    c = spec.config
    options = _hub_options(c) if "activation_function" in c else _native_options(c)
    layers = int(fields.value(c, "n_layer", "num_hidden_layers"))
    cfg = NomicConfig.parse(c, **options, **_moe_options(c, layers))
    fraction, rotary_dim = cfg.rotary_fraction, int(cfg.head_dim * cfg.rotary_fraction)
    if not 0 < fraction <= 1 or rotary_dim % 2:
        raise fields.unsupported("rotary_emb_fraction", fraction, "needs an even rotary width > 0")
    return cfg


def layer_entries(cfg: NomicConfig):
    h, d, e, f = cfg.num_heads, cfg.head_dim, cfg.num_experts, cfg.intermediate_size

    def entries(variant: LayerVariant) -> list[Tensor]:
        p = "encoder.layers.{i}."
        out = (table.qkv("attention", p + "attn.Wqkv", h, h, d, cfg.qkv_bias)
               + table.attention_out("attention/out", p + "attn.out_proj", h, d, cfg.qkv_bias)
               + table.norm("attn_norm", p + "norm1")
               + table.norm("mlp_norm", p + "norm2"))
        if variant.moe:  # router + experts stored as two [experts * width, hidden] blocks (expert-major)
            hidden = cfg.hidden_size
            out += table.linear("moe/router", p + "mlp.router.layer", (Axis.EMBED, Axis.EXPERTS), bias=False)
            out += [
                Tensor("moe/w_in", (Axis.EXPERTS, Axis.EMBED, Axis.MLP), (p + "mlp.experts.mlp.w1",),
                       lambda w: w.reshape(e, f, hidden).transpose(0, 2, 1)),
                Tensor("moe/w_out", (Axis.EXPERTS, Axis.MLP, Axis.EMBED), (p + "mlp.experts.mlp.w2",),
                       lambda w: w.reshape(e, f, hidden)),
                Tensor("moe/bias", (Axis.EMBED,), (p + "mlp.experts.bias",)),
            ]
        elif cfg.mlp_kind is MLPKind.GATED:  # fc12 is the gate, fc11 the value: y = fc2(fc11 x * act(fc12 x))
            out += (table.linear("mlp/gate", p + "mlp.fc12", (Axis.EMBED, Axis.MLP), cfg.mlp_bias)
                    + table.linear("mlp/up", p + "mlp.fc11", (Axis.EMBED, Axis.MLP), cfg.mlp_bias)
                    + table.linear("mlp/down", p + "mlp.fc2", (Axis.MLP, Axis.EMBED), cfg.mlp_out_bias))
        else:
            out += (table.linear("mlp/up", p + "mlp.fc1", (Axis.EMBED, Axis.MLP), cfg.mlp_bias)
                    + table.linear("mlp/down", p + "mlp.fc2", (Axis.MLP, Axis.EMBED), cfg.mlp_out_bias))
        return out

    return entries


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """NomicBERT embeddings, or transformers' NomicBertForSequenceClassification (TEI serves
    embeddings only; the classifier costs one head). No SPLADE: no masked-LM is published."""
    if spec.pooling == "splade":
        raise ModelLoadError(
            f"config.json: field 'architectures' = {spec.architectures!r}: NomicBERT has no masked-LM "
            "head for SPLADE here"
        )
    cfg = parse_config(spec)
    stack = cfg.stack(dtype, attention)
    head, head_entries = None, []
    if spec.kind in ("classifier", "reranker"):
        head, head_entries = pooler_classifier(spec, cfg.hidden_size, dtype, PREFIXES)
    encoder = (table.embedding("encoder/embeddings/word", "embeddings.word_embeddings", Axis.VOCAB)
               + table.norm("encoder/embeddings/norm", "emb_ln"))
    if cfg.type_vocab_size:
        encoder += table.embedding("encoder/embeddings/token_type", "embeddings.token_type_embeddings", Axis.TYPES)
    weights = WeightTable(encoder + head_entries, layer_entries(cfg), stack.variants, unused_ok=UNUSED_OK)
    return Architecture(
        encoder=Transformer(stack), table=weights, config=cfg, head=head,
        uses_token_types=cfg.type_vocab_size > 1, checkpoint_prefixes=PREFIXES,
    )
