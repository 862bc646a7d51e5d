"""Blocks shared by every family: norms, activations, attention, MLPs, rotary, the layer stack.

A family describes its architecture as a `StackSpec` (data: typed sub-specs and enums) and the
modules here do the arithmetic. Parameters keep their logical axes apart so they can be split
for tensor parallelism: q is [embed, heads, head_dim], k/v [embed, kv_heads, head_dim], the
output projection [heads, head_dim, embed], and a gated MLP has separate gate and up kernels
[embed, mlp]. The layer stack is scanned: layers that share a structure are traced once over
parameters stacked on a leading `layers` axis (see `scan_plan`). Norms and softmax run in
float32 whatever the parameter dtype, so bfloat16 inference stays close to float32.

Two hooks let a family add what the shared blocks cannot know: a `ScoreBias` (an additive term
on every layer's attention logits computed from that layer's own q/k and projections, plus
inputs computed once per stack: DeBERTa's disentangled attention), and a `ConvSpec` for layers
whose variant convolves the layer's input into its output (DeBERTa-v2's first layer).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from typing import Any, Callable, Protocol, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .attention import alibi_slopes, attend
from .rope import RopeScalingSpec

# Weights always come from a checkpoint, never from an initializer. Flax still evaluates a
# parameter's initializer (abstractly) on every trace to check its shape, so a trivial one
# keeps tracing each compiled shape cheap (random initializers cost ~3 ms per parameter).
CHECKPOINT_ONLY = nn.initializers.zeros_init()


class NormKind(str, enum.Enum):
    LAYER = "layernorm"
    RMS = "rmsnorm"
    RMS_PLUS_ONE = "rmsnorm_plus_one"  # RMSNorm scaled by (1 + weight) (Gemma)


class PositionKind(str, enum.Enum):
    """How a stack knows token order."""

    ABSOLUTE = "absolute"  # a learned position table added to the embeddings (BERT)
    ROTARY = "rotary"  # q/k rotated by position (decoders, Nomic, GTE, ModernBERT)
    ALIBI = "alibi"  # a per-head linear distance penalty (JinaBERT)
    RELATIVE = "relative"  # a learned table plus a bucketed relative bias per head (MPNet)
    NONE = "none"  # nothing in the embeddings or on q/k: a ScoreBias carries order (DeBERTa-v3)


class MLPKind(str, enum.Enum):
    PLAIN = "plain"  # down(act(up x))
    GATED = "gated"  # down(act(gate x) * up x)


class QKNorm(str, enum.Enum):
    NONE = "none"
    PER_HEAD = "per_head"  # the stack's norm over each head's q and k (Qwen3)
    FULL_WIDTH = "full_width"  # a LayerNorm over all heads of q and of k (JinaBERT qk-post-norm)


class RopeScaling(str, enum.Enum):
    NONE = "none"
    NTK = "ntk"  # Alibaba GTE's fixed NTK-aware scaling


_SQRT_HALF = 0.7071067811865476


def _gelu_exact(x):
    """x * Phi(x) written as torch writes it, 0.5 * x * (1 + erf(x / sqrt 2)): XLA's CPU
    backend expands erf into one short rational polynomial, while `jax.nn.gelu`'s erfc form
    costs more (quiet-box profiles of a [4, 256] MiniLM batch, hours apart: 10.3 ms in it,
    6.3 ms in this one; end to end, with the pooling layout, +5.5% at 256 tokens); both are
    within 1.2e-6 of torch's float32 gelu on [-12, 12]."""
    return x * (0.5 + 0.5 * jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


def _gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


class Activation(str, enum.Enum):
    """Activations under their config.json spellings (several spell the same function)."""

    GELU = "gelu"
    GELU_NEW = "gelu_new"
    GELU_PYTORCH_TANH = "gelu_pytorch_tanh"
    GELU_FAST = "gelu_fast"
    RELU = "relu"
    SILU = "silu"
    SWISH = "swish"
    SWIGLU = "swiglu"  # a hidden_act spelling of SiLU gating
    TANH = "tanh"
    SIGMOID = "sigmoid"  # sentence-transformers Dense modules
    IDENTITY = "identity"

    @property
    def fn(self) -> Callable:
        return _ACTIVATION_FNS[self]


_ACTIVATION_FNS: dict[Activation, Callable] = {
    Activation.GELU: _gelu_exact,
    Activation.GELU_NEW: _gelu_tanh,
    Activation.GELU_PYTORCH_TANH: _gelu_tanh,
    Activation.GELU_FAST: _gelu_tanh,
    Activation.RELU: jax.nn.relu,
    Activation.SILU: jax.nn.silu,
    Activation.SWISH: jax.nn.silu,
    Activation.SWIGLU: jax.nn.silu,
    Activation.TANH: jnp.tanh,
    Activation.SIGMOID: jax.nn.sigmoid,
    Activation.IDENTITY: lambda x: x,
}


def activation(name: str | Activation) -> Callable:
    """The function of an activation given by its enum or config.json name."""
    try:
        return Activation(name).fn
    except ValueError:
        raise ValueError(f"unsupported activation '{name}'") from None


# The architecture as data ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NormSpec:
    kind: NormKind = NormKind.LAYER
    eps: float = 1e-12
    bias: bool = True


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    heads: int
    head_dim: int
    kv_heads: int | None = None  # grouped-query attention; None: as many as heads
    qkv_bias: bool = True
    out_bias: bool = True
    causal: bool = False
    qk_norm: QKNorm = QKNorm.NONE
    implementation: str = "xla"
    scale: float | None = None  # softmax scale; None: head_dim ** -0.5 (Gemma: query_pre_attn_scalar)

    @property
    def num_kv_heads(self) -> int:
        return self.kv_heads or self.heads


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    width: int
    activation: Activation = Activation.GELU
    kind: MLPKind = MLPKind.PLAIN
    bias: bool = True  # of up (and gate)
    out_bias: bool = True  # of down
    experts: int = 0  # mixture-of-experts layers (LayerVariant.moe): experts and top k
    top_k: int = 0


@dataclasses.dataclass(frozen=True)
class RotarySpec:
    dim: int
    theta: float = 10000.0
    local_theta: float | None = None  # the rotary base of local layers (ModernBERT)
    scaling: RopeScaling = RopeScaling.NONE
    factor: float = 1.0
    mixed_b: float | None = None  # GTE's "mixed" NTK variant
    scaled: RopeScalingSpec | None = None  # linear / dynamic / yarn / llama3 (rope.py), global layers only


@dataclasses.dataclass(frozen=True)
class LayerVariant:
    """What may differ between the layers of one stack; layers with equal variants are
    scanned together."""

    window: int | None = None  # local attention: keys at most this many positions away
    local_rope: bool = False  # rotary with RotarySpec.local_theta
    moe: bool = False  # a mixture of experts instead of the MLP
    attn_norm: bool = True  # pre-norm stacks: ModernBERT's layer 0 has no attention norm
    input_conv: bool = False  # add StackSpec.conv of the layer's input to its output (DeBERTa-v2 layer 0)


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A 1-D convolution over each sequence (never across packed neighbours), then the
    activation, added to the layer's output and normalised: norm(out + act(conv(x)))."""

    kernel_size: int
    activation: Activation = Activation.TANH


class ScoreBias(Protocol):
    """An additive term on the attention logits (after the softmax scale) that a family
    computes from each layer's q and k ([batch, seq, heads, head_dim]), that layer's q/k
    projections (callables on [..., embed], so a family may project its own tables with
    them) and a context built once per stack from the positions and segment ids.

    `context` returns a module (position_ids, segment_ids) -> any pytree, run once in the
    Transformer; `layer` returns a module (q, k, projections {"q", "k"}, context) ->
    [batch, heads, q, k] float32, run inside each layer's attention (so its parameters are
    per layer). Implementations are frozen dataclasses (hashable, like the StackSpec)."""

    def context(self, spec: "StackSpec", name: str) -> nn.Module: ...

    def layer(self, spec: "StackSpec", name: str) -> nn.Module: ...


@dataclasses.dataclass(frozen=True)
class StackSpec:
    """One encoder/decoder stack: embeddings, layers (one variant each), an optional final norm."""

    hidden_size: int
    vocab_size: int
    attention: AttentionSpec
    mlp: MLPSpec
    variants: tuple[LayerVariant, ...]
    norm: NormSpec = NormSpec()
    positions: PositionKind = PositionKind.ABSOLUTE
    prenorm: bool = False  # pre-norm (decoders, ModernBERT) or post-norm (BERT)
    max_positions: int = 0
    type_vocab_size: int = 0
    position_offset: int = 0  # added to position ids before the learned table (MPNet)
    embedding_norm: bool = True
    final_norm: bool = False
    attn_renorm: bool = False  # JinaBERT qk-post-norm: normalise (attention block + input) again
    post_norms: bool = False  # pre-norm stacks that also normalise each block's output (Gemma)
    embedding_scale: float = 1.0  # word embeddings times this (Gemma: sqrt(hidden_size))
    rotary: RotarySpec | None = None
    relative_buckets: int = 0  # PositionKind.RELATIVE: the bias table's buckets and reach
    relative_max_distance: int = 128
    score_bias: ScoreBias | None = None
    conv: ConvSpec | None = None  # for variants with input_conv
    dtype: Any = jnp.float32

    @property
    def num_layers(self) -> int:
        return len(self.variants)


def uniform(num_layers: int, variant: LayerVariant = LayerVariant()) -> tuple[LayerVariant, ...]:
    return (variant,) * num_layers


# Which layers are scanned together ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Segment:
    """Layers start .. start + period * repeats - 1, run as `repeats` scan steps of `period`
    layers each (a group: e.g. ModernBERT's local, local, global)."""

    start: int
    period: int
    repeats: int

    def layer(self, step: int, position: int) -> int:
        return self.start + step * self.period + position


def scan_plan(variants: Sequence[LayerVariant], max_period: int = 8) -> tuple[Segment, ...]:
    """Cover the layers with as few scanned segments as possible: from each layer, the period
    (group size) whose repetition covers the most layers; a layer that repeats nothing is a
    segment of one step."""
    segments, start, n = [], 0, len(variants)
    while start < n:
        best = Segment(start, 1, 1)
        for period in range(1, min(max_period, n - start) + 1):
            repeats = 1
            while (start + (repeats + 1) * period <= n
                   and variants[start + repeats * period: start + (repeats + 1) * period]
                   == variants[start: start + period]):
                repeats += 1
            if repeats > 1 and period * repeats > best.period * best.repeats:
                best = Segment(start, period, repeats)
        segments.append(best)
        start += best.period * best.repeats
    return tuple(segments)


# Modules -----------------------------------------------------------------------------------------
class Norm(nn.Module):
    """LayerNorm or RMSNorm over the last `axes` axes, computed in float32, returned in the
    working dtype. Any kind but a NormKind is an error, never a silent LayerNorm."""

    kind: NormKind | str
    eps: float
    use_bias: bool = True
    dtype: Any = jnp.float32
    axes: int = 1

    @nn.compact
    def __call__(self, x):
        kind = NormKind(self.kind)
        shape = x.shape[-self.axes:]
        reduce = tuple(range(-self.axes, 0))
        scale = self.param("scale", nn.initializers.ones, shape, self.dtype)
        x32 = x.astype(jnp.float32)
        if kind in (NormKind.RMS, NormKind.RMS_PLUS_ONE):
            y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=reduce, keepdims=True) + self.eps)
            weight = scale.astype(jnp.float32) + (1.0 if kind is NormKind.RMS_PLUS_ONE else 0.0)
            return (y * weight).astype(self.dtype)
        mean = jnp.mean(x32, axis=reduce, keepdims=True)
        centered = x32 - mean
        var = jnp.mean(centered * centered, axis=reduce, keepdims=True)
        y = centered * jax.lax.rsqrt(var + self.eps) * scale.astype(jnp.float32)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, shape, self.dtype).astype(jnp.float32)
        return y.astype(self.dtype)


def norm_of(spec: NormSpec, dtype, name: str) -> Norm:
    return Norm(spec.kind, spec.eps, spec.bias, dtype, name=name)


def dense(features: int, use_bias: bool, dtype, name: str) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=dtype, name=name,
                    kernel_init=CHECKPOINT_ONLY)


def projection(features: int | tuple[int, ...], use_bias: bool, dtype, name: str,
               axis: int | tuple[int, ...] = -1) -> nn.DenseGeneral:
    """A linear map that keeps its axes apart: [embed] -> [heads, head_dim], or back."""
    return nn.DenseGeneral(features, axis=axis, use_bias=use_bias, dtype=dtype, param_dtype=dtype,
                           name=name, kernel_init=CHECKPOINT_ONLY)


def rotary_inv_freq(rotary_dim: int, theta: float, scaling: RopeScaling | str = RopeScaling.NONE,
                    factor: float = 1.0, mixed_b: float | None = None) -> jax.Array:
    """Rotary inverse frequencies [rotary_dim/2], plain or with fixed NTK-aware scaling.

    NTK (Alibaba GTE): the base grows to theta*factor and every frequency is divided by
    factor^(2/d); the "mixed" variant (mixed_b set) keeps the base and divides frequency m
    by exp(a * m^b) with a = log(factor) / (d/2)^b.
    """
    exponents = jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim
    if RopeScaling(scaling) is RopeScaling.NONE:
        return 1.0 / (theta ** exponents)
    if mixed_b is None:
        return 1.0 / ((theta * factor) ** exponents) / factor ** (2 / rotary_dim)
    a = math.log(factor) / (rotary_dim / 2) ** mixed_b
    lambdas = jnp.exp(a * jnp.arange(1, rotary_dim // 2 + 1, dtype=jnp.float32) ** mixed_b)
    return 1.0 / (theta ** exponents) / lambdas


def rotary_tables(position_ids: jax.Array, rotary_dim: int, theta: float,
                  scaling: RopeScaling | str = RopeScaling.NONE, factor: float = 1.0,
                  mixed_b: float | None = None, scaled: RopeScalingSpec | None = None):
    """cos/sin tables [batch, seq, rotary_dim/2] for the given positions (float32); a
    `scaled` spec (rope.py) supplies the frequencies and YaRN's attention factor."""
    if scaled is not None:
        inv_freq = jnp.asarray(scaled.inv_freq(rotary_dim, theta))
    else:
        inv_freq = rotary_inv_freq(rotary_dim, theta, scaling, factor, mixed_b)
    angles = position_ids.astype(jnp.float32)[..., None] * inv_freq
    if scaled is not None and scaled.attention_factor != 1.0:
        return jnp.cos(angles) * scaled.attention_factor, jnp.sin(angles) * scaled.attention_factor
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half rotary embedding on the first 2*cos.shape[-1] dims of each head."""
    rot = cos.shape[-1] * 2
    x32 = x.astype(jnp.float32)
    x_rot, x_pass = x32[..., :rot], x32[..., rot:]
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2:]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    rotated = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    return jnp.concatenate([rotated, x_pass], axis=-1).astype(x.dtype)


class SelfAttention(nn.Module):
    """q [embed, heads, head_dim], k/v [embed, kv_heads, head_dim], out [heads, head_dim, embed]."""

    spec: StackSpec

    @nn.compact
    def __call__(self, x, segment_ids, rotary=None, bias=None, window=None, context=None):
        stack, a = self.spec, self.spec.attention
        h, kvh, d, dtype = a.heads, a.num_kv_heads, a.head_dim, stack.dtype
        q_proj = projection((h, d), a.qkv_bias, dtype, "q")
        k_proj = projection((kvh, d), a.qkv_bias, dtype, "k")
        q, k = q_proj(x), k_proj(x)
        v = projection((kvh, d), a.qkv_bias, dtype, "v")(x)
        if a.qk_norm is QKNorm.FULL_WIDTH:
            q = Norm(NormKind.LAYER, stack.norm.eps, True, dtype, axes=2, name="q_layernorm")(q)
            k = Norm(NormKind.LAYER, stack.norm.eps, True, dtype, axes=2, name="k_layernorm")(k)
        elif a.qk_norm is QKNorm.PER_HEAD:
            q = norm_of(stack.norm, dtype, "q_norm")(q)
            k = norm_of(stack.norm, dtype, "k_norm")(k)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if stack.score_bias is not None:
            extra = stack.score_bias.layer(stack, "score_bias")(q, k, {"q": q_proj, "k": k_proj}, context)
            bias = extra if bias is None else bias + extra
        alibi = alibi_slopes(h) if stack.positions is PositionKind.ALIBI else None
        out = attend(q, k, v, segment_ids, causal=a.causal, bias=bias, alibi=alibi, window=window,
                     scale=a.scale, implementation=a.implementation)
        return projection(stack.hidden_size, a.out_bias, dtype, "out", axis=(-2, -1))(out)


class MLP(nn.Module):
    """Plain (up, down) or gated (gate, up, down) feed-forward with a separate `mlp` axis."""

    spec: StackSpec

    @nn.compact
    def __call__(self, x):
        m, dtype = self.spec.mlp, self.spec.dtype
        act = m.activation.fn
        hidden = act(dense(m.width, m.bias, dtype, "up" if m.kind is MLPKind.PLAIN else "gate")(x))
        if m.kind is MLPKind.GATED:
            hidden = hidden * dense(m.width, m.bias, dtype, "up")(x)
        return dense(self.spec.hidden_size, m.out_bias, dtype, "down")(hidden)


class MoEMLP(nn.Module):
    """Mixture of experts (Nomic v2): a softmax router picks the top-k experts per token, their
    outputs are summed with the router's probabilities (not renormalised), then one bias shared
    by all experts is added.

    With static shapes every expert runs on every token and tokens outside an expert's top k
    get weight zero: exact, at num_experts/top_k times the ideal cost of these layers.
    """

    spec: StackSpec

    @nn.compact
    def __call__(self, x):
        m, dtype, hidden = self.spec.mlp, self.spec.dtype, self.spec.hidden_size
        logits = dense(m.experts, False, dtype, "router")(x).astype(jnp.float32)
        top_weights, top_experts = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), m.top_k)
        gates = jnp.sum(jax.nn.one_hot(top_experts, m.experts, dtype=jnp.float32) * top_weights[..., None], axis=-2)
        w_in = self.param("w_in", CHECKPOINT_ONLY, (m.experts, hidden, m.width), dtype)
        w_out = self.param("w_out", CHECKPOINT_ONLY, (m.experts, m.width, hidden), dtype)
        bias = self.param("bias", nn.initializers.zeros, (hidden,), dtype)
        act = m.activation.fn

        def add_expert(total, expert):
            weight_in, weight_out, gate = expert
            y = act(jnp.einsum("...h,hf->...f", x, weight_in))
            y = jnp.einsum("...f,fh->...h", y, weight_out, preferred_element_type=jnp.float32)
            return total + y * gate[..., None], None

        total, _ = jax.lax.scan(add_expert, jnp.zeros(x.shape, jnp.float32), (w_in, w_out, jnp.moveaxis(gates, -1, 0)))
        return (total + bias.astype(jnp.float32)).astype(dtype)


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

    spec: StackSpec

    @nn.compact
    def __call__(self, seq_len: int):
        s = self.spec
        table = self.param("embedding", CHECKPOINT_ONLY, (s.relative_buckets, s.attention.heads), s.dtype)
        buckets = relative_position_buckets(seq_len, s.relative_buckets, s.relative_max_distance)
        return jnp.transpose(table[buckets], (2, 0, 1))[None].astype(jnp.float32)  # [1, heads, q, k]


class InputConv(nn.Module):
    """norm(out + act(conv(x))) with a `kernel_size` convolution of the layer input `x` over
    each sequence: a neighbour counts only if it has the same (non-zero) segment id, as if
    every sequence were alone and zero-padded. The kernel is [kernel, in, out]."""

    spec: StackSpec

    @nn.compact
    def __call__(self, x, out, segment_ids):
        s, c = self.spec, self.spec.conv
        kernel = self.param("kernel", CHECKPOINT_ONLY, (c.kernel_size, s.hidden_size, s.hidden_size), s.dtype)
        bias = self.param("bias", nn.initializers.zeros, (s.hidden_size,), s.dtype)
        half, width = (c.kernel_size - 1) // 2, x.shape[1]
        padded_x = jnp.pad(x, ((0, 0), (half, half), (0, 0)))
        padded_seg = jnp.pad(segment_ids, ((0, 0), (half, half)))
        y = jnp.zeros(x.shape, jnp.float32)
        for m in range(c.kernel_size):  # tap m reads position t + m - half
            neighbour = jax.lax.dynamic_slice_in_dim(padded_x, m, width, axis=1)
            same = (jax.lax.dynamic_slice_in_dim(padded_seg, m, width, axis=1) == segment_ids) & (segment_ids > 0)
            y = y + jnp.where(same[..., None], jnp.einsum("bte,ef->btf", neighbour, kernel[m],
                                                          preferred_element_type=jnp.float32), 0.0)
        y = c.activation.fn((y + bias.astype(jnp.float32)).astype(s.dtype))
        return norm_of(s.norm, s.dtype, "norm")(out + y)


class Layer(nn.Module):
    """Attention + MLP with residuals, post-norm (BERT) or pre-norm (decoders, ModernBERT)."""

    spec: StackSpec
    variant: LayerVariant = LayerVariant()

    @nn.compact
    def __call__(self, x, segment_ids, rotary=None, local_rotary=None, bias=None, context=None):
        s, variant = self.spec, self.variant

        def norm(name):
            return norm_of(s.norm, s.dtype, name)

        def attention(h):
            tables = local_rotary if variant.local_rope else rotary
            return SelfAttention(s, name="attention")(h, segment_ids, tables, bias, variant.window, context)

        def mlp(h):
            return MoEMLP(s, name="moe")(h) if variant.moe else MLP(s, name="mlp")(h)

        if s.prenorm and s.post_norms:
            h = x + norm("attn_post_norm")(attention(norm("attn_norm")(x)))
            out = h + norm("mlp_post_norm")(mlp(norm("mlp_norm")(h)))
        elif s.prenorm:
            h = x + attention(norm("attn_norm")(x) if variant.attn_norm else x)
            out = h + mlp(norm("mlp_norm")(h))
        else:
            h = norm("attn_norm")(x + attention(x))
            if s.attn_renorm:
                h = norm("attn_renorm")(h + x)
            out = norm("mlp_norm")(h + mlp(h))
        return InputConv(s, name="conv")(x, out, segment_ids) if variant.input_conv else out


class LayerGroup(nn.Module):
    """One scan step: `len(variants)` consecutive layers (usually one)."""

    spec: StackSpec
    variants: tuple[LayerVariant, ...]

    @nn.compact
    def __call__(self, x, segment_ids, rotary, local_rotary, bias, context):
        for j, variant in enumerate(self.variants):
            x = Layer(self.spec, variant, name=f"layer_{j}")(x, segment_ids, rotary, local_rotary, bias, context)
        return x, None


@functools.lru_cache(maxsize=None)
def scanned_group(length: int):
    """LayerGroup scanned `length` times over parameters stacked on a leading axis."""
    return nn.scan(
        LayerGroup, variable_axes={"params": 0}, split_rngs={"params": False},
        in_axes=(nn.broadcast,) * 5, length=length,
    )


class Embeddings(nn.Module):
    """Word (+ learned position) (+ token type) embeddings, optionally normalised."""

    spec: StackSpec

    @nn.compact
    def __call__(self, input_ids, type_ids, position_ids):
        s = self.spec

        def table(rows: int, name: str) -> nn.Embed:
            return nn.Embed(rows, s.hidden_size, dtype=s.dtype, param_dtype=s.dtype,
                            embedding_init=CHECKPOINT_ONLY, name=name)

        x = table(s.vocab_size, "word")(input_ids)
        if s.embedding_scale != 1.0:
            x = x * jnp.asarray(s.embedding_scale, s.dtype)
        if s.positions in (PositionKind.ABSOLUTE, PositionKind.RELATIVE):
            x = x + table(s.max_positions, "position")(position_ids + s.position_offset)
        if s.type_vocab_size:
            x = x + table(s.type_vocab_size, "token_type")(type_ids)
        if s.embedding_norm:
            x = norm_of(s.norm, s.dtype, "norm")(x)
        return x


def block_name(index: int) -> str:
    return f"blocks_{index}"


class Transformer(nn.Module):
    """Embeddings + the scanned layer stack -> hidden states [batch, seq, hidden].

    Parameters of segment k of `scan_plan(spec.variants)` live under blocks_k/layer_j with a
    leading axis of the segment's repeats.
    """

    spec: StackSpec

    @nn.compact
    def __call__(self, input_ids, type_ids, position_ids, segment_ids):
        s = self.spec
        x = Embeddings(s, name="embeddings")(input_ids, type_ids, position_ids)
        rotary = local_rotary = None
        if s.rotary is not None:
            r = s.rotary
            rotary = rotary_tables(position_ids, r.dim, r.theta, r.scaling, r.factor, r.mixed_b, r.scaled)
            local_rotary = rotary if r.local_theta is None else rotary_tables(position_ids, r.dim, r.local_theta)
        bias = None
        if s.positions is PositionKind.RELATIVE:
            bias = RelativePositionBias(s, name="relative_attention_bias")(input_ids.shape[1])
        context = None
        if s.score_bias is not None:
            context = s.score_bias.context(s, "score_context")(position_ids, segment_ids)
        for k, segment in enumerate(scan_plan(s.variants)):
            group = s.variants[segment.start: segment.start + segment.period]
            x, _ = scanned_group(segment.repeats)(s, group, name=block_name(k))(
                x, segment_ids, rotary, local_rotary, bias, context)
        if s.final_norm:
            x = norm_of(s.norm, s.dtype, "final_norm")(x)
        return x
