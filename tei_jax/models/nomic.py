"""NomicBERT (nomic-embed-text-v1, v1.5, v2-moe): a post-norm BERT with rotary positions, a
fused Wqkv, SwiGLU (v1) or GELU (v2) MLPs, optional biases, and in v2 a mixture of experts on
every other layer.

Published checkpoints carry nomic's remote-code config (GPT-2 names: n_embd, n_head, ...);
transformers 5 saves its native NomicBert with BERT names (hidden_size, ...). Both are read.
The weight names are the same for both: transformers renames them on load and back on save.
"""

from __future__ import annotations

from ..config import ModelSpec
from ..errors import ModelLoadError
from ..weights import WeightReader
from . import fields
from .architecture import Architecture, param_loader
from .heads import pooler_classifier
from .layers import Transformer, TransformerConfig

PREFIXES = ("nomic_bert.", "bert.")  # the encoder inside classifier checkpoints
MODEL_TYPES = ("nomic_bert",)

# Remote-code activation_function -> (MLP kind, activation); "gelu" layers are plain fc1/fc2.
_HUB_ACTIVATIONS = {"swiglu": ("gated", "silu"), "gelu": ("plain", "gelu")}


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
    mlp, hidden_act = _HUB_ACTIVATIONS[act]
    return dict(
        mlp=mlp, hidden_act=hidden_act,
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
        mlp="gated", hidden_act=fields.activation_name("hidden_act", c.get("hidden_act", "silu")),
        qkv_bias=False, mlp_bias=False, mlp_out_bias=False,
        rope_theta=float(fields.nested(c, "rope_parameters.rope_theta", default=c.get("rope_theta", 1000.0))),
        rotary_fraction=1.0,
    )


def _moe_options(c: dict, num_layers: int) -> dict:
    every = int(c.get("moe_every_n_layers") or 0)
    if not every:
        return {}
    if c.get("moe_normalize_expert_weights"):
        raise fields.unsupported("moe_normalize_expert_weights", c["moe_normalize_expert_weights"],
                                 "the router's top-k weights are used as they are")
    return dict(
        moe_layers=tuple(i for i in range(num_layers) if i % every == 1),
        num_experts=int(fields.value(c, "num_experts")),
        moe_top_k=int(fields.value(c, "moe_top_k")),
    )


def transformer_config(spec: ModelSpec, dtype, attention: str) -> TransformerConfig:
    c = spec.config
    options = _hub_options(c) if "activation_function" in c else _native_options(c)
    hidden = int(fields.value(c, "n_embd", "hidden_size"))
    heads = int(fields.value(c, "n_head", "num_attention_heads"))
    layers = int(fields.value(c, "n_layer", "num_hidden_layers"))
    head_dim = hidden // heads
    fraction = options.pop("rotary_fraction")
    rotary_dim = int(head_dim * fraction)
    if not 0 < fraction <= 1 or rotary_dim % 2:
        raise fields.unsupported("rotary_emb_fraction", fraction, "needs an even rotary width > 0")
    return TransformerConfig(
        hidden_size=hidden, num_layers=layers, num_heads=heads,
        intermediate_size=int(fields.value(c, "n_inner", "intermediate_size")),
        vocab_size=int(c["vocab_size"]),
        type_vocab_size=int(c.get("type_vocab_size", 2)),
        norm_eps=float(fields.value(c, "layer_norm_epsilon", "layer_norm_eps", default=1e-12)),
        out_bias=options["qkv_bias"],
        positions="rotary", rotary_dim=rotary_dim,
        attention=attention, dtype=dtype,
        **options, **_moe_options(c, layers),
    )


def _experts(reader: WeightReader, p: str, cfg: TransformerConfig) -> dict:
    """Router + experts stored as two [experts * width, hidden] blocks (expert-major)."""
    e, f, h = cfg.num_experts, cfg.intermediate_size, cfg.hidden_size
    return {
        "router": reader.linear(p + "router.layer", bias=False),
        "w_in": reader.get(p + "experts.mlp.w1").reshape(e, f, h).transpose(0, 2, 1),
        "w_out": reader.get(p + "experts.mlp.w2").reshape(e, f, h),
        "bias": reader.get(p + "experts.bias"),
    }


def load_encoder(reader: WeightReader, cfg: TransformerConfig) -> dict:
    embeddings = {"word": reader.embedding("embeddings.word_embeddings"), "norm": reader.norm("emb_ln")}
    if cfg.type_vocab_size:
        embeddings["token_type"] = reader.embedding("embeddings.token_type_embeddings")
    params = {"embeddings": embeddings}
    for i in range(cfg.num_layers):
        p = f"encoder.layers.{i}."
        layer = {
            "attention": {
                "qkv": reader.linear(p + "attn.Wqkv", cfg.qkv_bias),
                "out": reader.linear(p + "attn.out_proj", cfg.out_bias),
            },
            "attn_norm": reader.norm(p + "norm1"),
            "mlp_norm": reader.norm(p + "norm2"),
        }
        if i in cfg.moe_layers:
            layer["moe"] = _experts(reader, p + "mlp.", cfg)
        elif cfg.mlp == "gated":  # fc12 is the gate, fc11 the value: y = fc2(fc11 x * act(fc12 x))
            layer["mlp"] = {
                "gate_up": reader.fused_linear([p + "mlp.fc12", p + "mlp.fc11"], cfg.mlp_bias),
                "down": reader.linear(p + "mlp.fc2", cfg.down_bias),
            }
        else:
            layer["mlp"] = {"up": reader.linear(p + "mlp.fc1", cfg.mlp_bias), "down": reader.linear(p + "mlp.fc2", cfg.down_bias)}
        params[f"layer_{i}"] = layer
    return params


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    """NomicBERT embeddings, or transformers' NomicBertForSequenceClassification (TEI serves
    embeddings only; the classifier costs one head). No SPLADE: no masked-LM is published."""
    if spec.pooling == "splade":
        raise ModelLoadError(
            f"config.json: field 'architectures' = {spec.architectures!r}: NomicBERT has no masked-LM "
            "head for SPLADE here"
        )
    cfg = transformer_config(spec, dtype, attention)
    head = load_head = None
    if spec.kind in ("classifier", "reranker"):
        head, load_head = pooler_classifier(spec, cfg.hidden_size, cfg.dtype, PREFIXES)

    load_params = param_loader(load_encoder, cfg, load_head)

    return Architecture(
        encoder=Transformer(cfg), load_params=load_params, head=head,
        uses_token_types=cfg.type_vocab_size > 1,
        checkpoint_prefixes=PREFIXES,
    )
