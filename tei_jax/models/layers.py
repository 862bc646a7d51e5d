"""Blocks shared by every family: norms, activations, MLPs, rotary, the transformer layer.

A family file describes its architecture as a `TransformerConfig` (data, not code) plus a
weight-name map; the modules here do the arithmetic. Norms and softmax run in float32 whatever
the parameter dtype, so bfloat16 inference stays close to float32.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from .attention import alibi_slopes, attend


def gelu_exact(x):
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


ACTIVATIONS: dict[str, Callable] = {
    "gelu": gelu_exact,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "swiglu": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable:
    """Look up an activation by its config.json name."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported activation '{name}'") from None


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The architecture of one encoder/decoder stack, as plain data."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int = 0
    type_vocab_size: int = 0
    max_positions: int = 0
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-12
    prenorm: bool = False  # pre-norm (decoders, GTE-style) or post-norm (BERT)
    embedding_norm: bool = True  # LayerNorm right after the embeddings (BERT)
    final_norm: bool = False  # norm after the last layer (pre-norm stacks)
    qkv_bias: bool = True
    out_bias: bool = True
    mlp_bias: bool = True
    norm_bias: bool = True
    mlp: str = "plain"  # plain: down(act(up x)); gated: down(act(gate x) * up x)
    hidden_act: str = "gelu"
    positions: str = "learned"  # learned | rotary | alibi | none
    rope_theta: float = 10000.0
    rotary_dim: int | None = None
    causal: bool = False
    attention: str = "xla"
    dtype: jnp.dtype = jnp.float32

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads


class Norm(nn.Module):
    """LayerNorm or RMSNorm computed in float32, returned in the working dtype."""

    kind: str
    eps: float
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (width,), self.dtype)
        x32 = x.astype(jnp.float32)
        if self.kind == "rmsnorm":
            y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
            return (y * scale.astype(jnp.float32)).astype(self.dtype)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        centered = x32 - mean
        var = jnp.mean(centered * centered, axis=-1, keepdims=True)
        y = centered * jax.lax.rsqrt(var + self.eps) * scale.astype(jnp.float32)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (width,), self.dtype).astype(jnp.float32)
        return y.astype(self.dtype)


def dense(features: int, use_bias: bool, dtype, name: str) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=dtype, name=name)


def rotary_tables(position_ids: jax.Array, rotary_dim: int, theta: float):
    """cos/sin tables [batch, seq, rotary_dim/2] for the given positions (float32)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    angles = position_ids.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half rotary embedding on the first 2*cos.shape[-1] dims of each head."""
    rot = cos.shape[-1] * 2
    x32 = x.astype(jnp.float32)
    x_rot, x_pass = x32[..., :rot], x32[..., rot:]
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2 :]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    rotated = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    return jnp.concatenate([rotated, x_pass], axis=-1).astype(x.dtype)


class SelfAttention(nn.Module):
    """Fused-QKV self-attention; one matmul in, one matmul out."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x, segment_ids, rotary=None, bias=None):
        cfg = self.cfg
        h, kvh, d = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
        qkv = dense((h + 2 * kvh) * d, cfg.qkv_bias, cfg.dtype, "qkv")(x)
        batch, seq = x.shape[:2]
        q = qkv[..., : h * d].reshape(batch, seq, h, d)
        k = qkv[..., h * d : (h + kvh) * d].reshape(batch, seq, kvh, d)
        v = qkv[..., (h + kvh) * d :].reshape(batch, seq, kvh, d)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        alibi = alibi_slopes(h) if cfg.positions == "alibi" else None
        out = attend(
            q, k, v, segment_ids, causal=cfg.causal, bias=bias, alibi=alibi,
            implementation=cfg.attention,
        )
        return dense(cfg.hidden_size, cfg.out_bias, cfg.dtype, "out")(out.reshape(batch, seq, h * d))


class MLP(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        act = activation(cfg.hidden_act)
        if cfg.mlp == "gated":
            up = dense(2 * cfg.intermediate_size, cfg.mlp_bias, cfg.dtype, "gate_up")(x)
            gate, value = up[..., : cfg.intermediate_size], up[..., cfg.intermediate_size :]
            hidden = act(gate) * value
        else:
            hidden = act(dense(cfg.intermediate_size, cfg.mlp_bias, cfg.dtype, "up")(x))
        return dense(cfg.hidden_size, cfg.mlp_bias, cfg.dtype, "down")(hidden)


class TransformerLayer(nn.Module):
    """Attention + MLP with residuals, post-norm (BERT) or pre-norm (decoders, GTE)."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x, segment_ids, rotary=None, bias=None):
        cfg = self.cfg

        def norm(name):
            return Norm(cfg.norm, cfg.norm_eps, cfg.norm_bias, cfg.dtype, name=name)

        if cfg.prenorm:
            x = x + SelfAttention(cfg, name="attention")(norm("attn_norm")(x), segment_ids, rotary, bias)
            return x + MLP(cfg, name="mlp")(norm("mlp_norm")(x))
        x = norm("attn_norm")(x + SelfAttention(cfg, name="attention")(x, segment_ids, rotary, bias))
        return norm("mlp_norm")(x + MLP(cfg, name="mlp")(x))


class Embeddings(nn.Module):
    """Word (+ learned position) (+ token type) embeddings, optionally normalised."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, input_ids, type_ids, position_ids):
        cfg = self.cfg
        x = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.dtype, name="word")(input_ids)
        if cfg.positions == "learned":
            x = x + nn.Embed(cfg.max_positions, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.dtype, name="position")(position_ids)
        if cfg.type_vocab_size:
            x = x + nn.Embed(cfg.type_vocab_size, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.dtype, name="token_type")(type_ids)
        if cfg.embedding_norm:
            x = Norm(cfg.norm, cfg.norm_eps, cfg.norm_bias, cfg.dtype, name="norm")(x)
        return x


class Transformer(nn.Module):
    """Embeddings + a stack of TransformerLayers -> hidden states [batch, seq, hidden]."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, input_ids, type_ids, position_ids, segment_ids):
        cfg = self.cfg
        x = Embeddings(cfg, name="embeddings")(input_ids, type_ids, position_ids)
        rotary = None
        if cfg.positions == "rotary":
            rotary = rotary_tables(position_ids, cfg.rotary_dim or cfg.dim_per_head, cfg.rope_theta)
        for i in range(cfg.num_layers):
            x = TransformerLayer(cfg, name=f"layer_{i}")(x, segment_ids, rotary)
        if cfg.final_norm:
            x = Norm(cfg.norm, cfg.norm_eps, cfg.norm_bias, cfg.dtype, name="final_norm")(x)
        return x
