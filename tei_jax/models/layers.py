"""Blocks shared by every family: norms, activations, MLPs, rotary, the transformer layer.

A family file describes its architecture as a `TransformerConfig` (data, not code) plus a
weight-name map; the modules here do the arithmetic. Norms and softmax run in float32 whatever
the parameter dtype, so bfloat16 inference stays close to float32.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .attention import alibi_slopes, attend

# Weights always come from a checkpoint, never from an initializer. Flax still evaluates a
# parameter's initializer (abstractly) on every trace to check its shape, so a trivial one
# keeps tracing each compiled shape cheap (random initializers cost ~3 ms per parameter).
CHECKPOINT_ONLY = nn.initializers.zeros_init()


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
    # Options of other encoder families; the defaults leave BERT unchanged.
    mlp_out_bias: bool | None = None  # bias of the MLP's down projection (None: mlp_bias)
    rope_scaling: str = "none"  # none | ntk (Alibaba GTE's fixed NTK-aware scaling)
    rope_factor: float = 1.0
    rope_mixed_b: float | None = None  # GTE's "mixed" NTK variant
    local_layers: tuple[int, ...] = ()  # layers with windowed (local) attention
    local_window: int = 0  # on local layers a token sees keys at most this many positions away
    local_rope_theta: float | None = None  # rotary base of the local layers (ModernBERT)
    first_layer_attn_norm: bool = True  # pre-norm stacks: ModernBERT's layer 0 has none
    relative_buckets: int = 0  # MPNet: bucketed relative-position bias shared by all layers
    relative_max_distance: int = 128
    moe_layers: tuple[int, ...] = ()  # layers whose MLP is a mixture of experts
    num_experts: int = 0
    moe_top_k: int = 0
    qk_layernorm: bool = False  # JinaBERT qk-post-norm: LayerNorm over the full q and k widths
    attn_renorm: bool = False  # JinaBERT qk-post-norm: normalise (block output + input) again
    position_offset: int = 0  # added to position ids before the learned table (MPNet: pad + 1)
    qk_norm: bool = False  # Qwen3: a norm (cfg.norm) over each head's q and k, before rotary

    @property
    def down_bias(self) -> bool:
        return self.mlp_bias if self.mlp_out_bias is None else self.mlp_out_bias

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
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=dtype, name=name,
                    kernel_init=CHECKPOINT_ONLY)


def rotary_inv_freq(
    rotary_dim: int, theta: float, scaling: str = "none", factor: float = 1.0, mixed_b: float | None = None
) -> jax.Array:
    """Rotary inverse frequencies [rotary_dim/2], plain or with fixed NTK-aware scaling.

    NTK (Alibaba GTE): the base grows to theta*factor and every frequency is divided by
    factor^(2/d); the "mixed" variant (mixed_b set) keeps the base and divides frequency m
    by exp(a * m^b) with a = log(factor) / (d/2)^b.
    """
    exponents = jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim
    if scaling == "none":
        return 1.0 / (theta ** exponents)
    if scaling != "ntk":
        raise ValueError(f"unsupported rotary scaling {scaling!r}")
    if mixed_b is None:
        return 1.0 / ((theta * factor) ** exponents) / factor ** (2 / rotary_dim)
    a = math.log(factor) / (rotary_dim / 2) ** mixed_b
    lambdas = jnp.exp(a * jnp.arange(1, rotary_dim // 2 + 1, dtype=jnp.float32) ** mixed_b)
    return 1.0 / (theta ** exponents) / lambdas


def rotary_tables(
    position_ids: jax.Array, rotary_dim: int, theta: float,
    scaling: str = "none", factor: float = 1.0, mixed_b: float | None = None,
):
    """cos/sin tables [batch, seq, rotary_dim/2] for the given positions (float32)."""
    inv_freq = rotary_inv_freq(rotary_dim, theta, scaling, factor, mixed_b)
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
    def __call__(self, x, segment_ids, rotary=None, bias=None, window=None):
        cfg = self.cfg
        h, kvh, d = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
        qkv = dense((h + 2 * kvh) * d, cfg.qkv_bias, cfg.dtype, "qkv")(x)
        batch, seq = x.shape[:2]
        q, k = qkv[..., : h * d], qkv[..., h * d : (h + kvh) * d]
        if cfg.qk_layernorm:
            q = Norm("layernorm", cfg.norm_eps, True, cfg.dtype, name="q_layernorm")(q)
            k = Norm("layernorm", cfg.norm_eps, True, cfg.dtype, name="k_layernorm")(k)
        q = q.reshape(batch, seq, h, d)
        k = k.reshape(batch, seq, kvh, d)
        v = qkv[..., (h + kvh) * d :].reshape(batch, seq, kvh, d)
        if cfg.qk_norm:
            q = Norm(cfg.norm, cfg.norm_eps, cfg.norm_bias, cfg.dtype, name="q_norm")(q)
            k = Norm(cfg.norm, cfg.norm_eps, cfg.norm_bias, cfg.dtype, name="k_norm")(k)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        alibi = alibi_slopes(h) if cfg.positions == "alibi" else None
        out = attend(
            q, k, v, segment_ids, causal=cfg.causal, bias=bias, alibi=alibi, window=window,
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
        return dense(cfg.hidden_size, cfg.down_bias, cfg.dtype, "down")(hidden)


class MoEMLP(nn.Module):
    """Mixture of experts (Nomic v2): a softmax router picks the top-k experts per token, their
    outputs are summed with the router's probabilities (not renormalised), then one bias shared
    by all experts is added.

    With static shapes every expert runs on every token and tokens outside an expert's top k
    get weight zero: exact, at num_experts/top_k times the ideal cost of these layers.
    """

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        experts, width, hidden = cfg.num_experts, cfg.intermediate_size, cfg.hidden_size
        logits = dense(experts, False, cfg.dtype, "router")(x).astype(jnp.float32)
        top_weights, top_experts = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), cfg.moe_top_k)
        gates = jnp.sum(jax.nn.one_hot(top_experts, experts, dtype=jnp.float32) * top_weights[..., None], axis=-2)
        init = CHECKPOINT_ONLY
        w_in = self.param("w_in", init, (experts, hidden, width), cfg.dtype)
        w_out = self.param("w_out", init, (experts, width, hidden), cfg.dtype)
        bias = self.param("bias", nn.initializers.zeros, (hidden,), cfg.dtype)
        act = activation(cfg.hidden_act)

        def add_expert(total, expert):
            weight_in, weight_out, gate = expert
            y = act(jnp.einsum("...h,hf->...f", x, weight_in))
            y = jnp.einsum("...f,fh->...h", y, weight_out, preferred_element_type=jnp.float32)
            return total + y * gate[..., None], None

        total, _ = jax.lax.scan(add_expert, jnp.zeros(x.shape, jnp.float32), (w_in, w_out, jnp.moveaxis(gates, -1, 0)))
        return (total + bias.astype(jnp.float32)).astype(cfg.dtype)


def relative_position_buckets(seq_len: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """MPNet/T5 bidirectional buckets of (key - query) for a static length -> int32 [q, k].

    Computed on the host in float32 in the reference's order, so bucket edges round alike.
    """
    position = np.arange(seq_len)
    n = position[:, None] - position[None, :]  # -(key - query)
    half = num_buckets // 2
    buckets = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) where n is small: not used
        scaled = np.log(n.astype(np.float32) / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
        large = np.minimum(max_exact + scaled.astype(np.int64), half - 1)
    return (buckets + np.where(n < max_exact, n, large)).astype(np.int32)


class RelativePositionBias(nn.Module):
    """Learned per-head bias of the bucketed relative position, one table for all layers."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, seq_len: int):
        cfg = self.cfg
        table = self.param("embedding", CHECKPOINT_ONLY, (cfg.relative_buckets, cfg.num_heads), cfg.dtype)
        buckets = relative_position_buckets(seq_len, cfg.relative_buckets, cfg.relative_max_distance)
        return jnp.transpose(table[buckets], (2, 0, 1))[None].astype(jnp.float32)  # [1, heads, q, k]


class TransformerLayer(nn.Module):
    """Attention + MLP with residuals, post-norm (BERT) or pre-norm (decoders, ModernBERT).

    `index` selects the per-layer options of the config: local attention, mixture of experts,
    and ModernBERT's missing first attention norm.
    """

    cfg: TransformerConfig
    index: int = 0

    @nn.compact
    def __call__(self, x, segment_ids, rotary=None, bias=None):
        cfg = self.cfg
        window = cfg.local_window if self.index in cfg.local_layers else None

        def norm(name):
            return Norm(cfg.norm, cfg.norm_eps, cfg.norm_bias, cfg.dtype, name=name)

        def attention(h):
            return SelfAttention(cfg, name="attention")(h, segment_ids, rotary, bias, window)

        def mlp(h):
            if self.index in cfg.moe_layers:
                return MoEMLP(cfg, name="moe")(h)
            return MLP(cfg, name="mlp")(h)

        if cfg.prenorm:
            skip_norm = self.index == 0 and not cfg.first_layer_attn_norm
            x = x + attention(x if skip_norm else norm("attn_norm")(x))
            return x + mlp(norm("mlp_norm")(x))
        h = norm("attn_norm")(x + attention(x))
        if cfg.attn_renorm:
            h = norm("attn_renorm")(h + x)
        return norm("mlp_norm")(h + mlp(h))


class Embeddings(nn.Module):
    """Word (+ learned position) (+ token type) embeddings, optionally normalised."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, input_ids, type_ids, position_ids):
        cfg = self.cfg
        x = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.dtype,
                     embedding_init=CHECKPOINT_ONLY, name="word")(input_ids)
        if cfg.positions == "learned":
            positions = position_ids + cfg.position_offset
            x = x + nn.Embed(cfg.max_positions, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.dtype,
                     embedding_init=CHECKPOINT_ONLY, name="position")(positions)
        if cfg.type_vocab_size:
            x = x + nn.Embed(cfg.type_vocab_size, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.dtype,
                     embedding_init=CHECKPOINT_ONLY, name="token_type")(type_ids)
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
        rotary = local_rotary = None
        if cfg.positions == "rotary":
            dim = cfg.rotary_dim or cfg.dim_per_head
            rotary = rotary_tables(position_ids, dim, cfg.rope_theta, cfg.rope_scaling, cfg.rope_factor, cfg.rope_mixed_b)
            local_rotary = rotary if cfg.local_rope_theta is None else rotary_tables(position_ids, dim, cfg.local_rope_theta)
        bias = None
        if cfg.relative_buckets:
            bias = RelativePositionBias(cfg, name="relative_attention_bias")(input_ids.shape[1])
        for i in range(cfg.num_layers):
            layer_rotary = local_rotary if i in cfg.local_layers else rotary
            x = TransformerLayer(cfg, i, name=f"layer_{i}")(x, segment_ids, layer_rotary, bias)
        if cfg.final_norm:
            x = Norm(cfg.norm, cfg.norm_eps, cfg.norm_bias, cfg.dtype, name="final_norm")(x)
        return x
