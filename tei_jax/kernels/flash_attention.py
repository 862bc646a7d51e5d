"""Flash attention in Pallas for packed and padded encoder/decoder batches.

Why our own kernel: the stock Pallas GPU `mha` has no bias input (so no ALiBi), no local
windows, and computes every key block of a padded row; cuDNN masks by row lengths only, so it
cannot serve packed rows (several sequences per row). This kernel takes the masks the engine
already builds (per-token segment ids, 0 = padding) and

- skips key blocks that no query of a query block can see: before the kernel runs, each
  (row, query block) gets a [first, last) range of key blocks from the min/max segment ids of
  the query block and of every key block, narrowed further by the causal diagonal and the
  local window. Padding blocks and blocks of other sequences are never loaded (the range is
  exact when a row's sequences are laid out in order, as the packer does; otherwise it is a
  superset). The Triton backend has no scalar prefetch, so the ranges are a small int32 input;
- masks exactly inside the blocks it does compute (segment equality, causal, window);
- adds ALiBi computed in-kernel from per-head slopes and token positions, and/or a general
  additive bias broadcastable to [batch, heads, q, k];
- keeps the softmax online in float32 (running max and sum, base-2 exponentials) and the
  accumulator in float32 whatever the input dtype (float32, bfloat16, float16);
- supports grouped-query attention (fewer kv heads than q heads) without repeating k/v;
- writes zeros for queries that see no key at all (padding), never NaN.

Layout is [batch, seq, heads, head_dim], as `tei_jax.models.attention.attend` receives it.
On GPU it lowers through Pallas' Triton backend: every tile is a power of two and at least 16
(Triton's dot needs M, N, K >= 16), so the wrapper pads sequence lengths up to a multiple of
the block and head_dim up to a power of two (padding keys carry segment 0, are masked, and
their blocks are skipped). Elsewhere it runs in Pallas interpret mode (slow; for tests).

Positions used by causal, ALiBi and the window are the token's index in the row. Within one
packed sequence these differ from per-sequence positions by a constant offset, so distances
and order, which is all these masks use, are the same.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

LOG2E = math.log2(math.e)
# Masked logits and the running max start here: finite, so exp2(x - max) never sees inf - inf.
_MASK_VALUE = -1e30
MIN_BLOCK = 16  # Triton's tl.dot needs every dimension >= 16


def _next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _tile(block: int, length: int) -> int:
    """The tile actually used: the requested block, shrunk for short sequences."""
    if block < MIN_BLOCK or block & (block - 1):
        raise ValueError(f"block sizes must be powers of two >= {MIN_BLOCK}, got {block}")
    return min(block, max(MIN_BLOCK, _next_power_of_2(length)))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _default_interpret() -> bool:
    """Compile through Triton on GPU; interpret (plain HLO loops) on every other backend."""
    return jax.default_backend() != "gpu"


def _segment_defaults(segment_ids, kv_segment_ids, batch, q_len, kv_len):
    """Segment ids for q and kv: given ones, or one segment covering every token."""
    if segment_ids is None:
        if kv_segment_ids is not None:
            raise ValueError("kv_segment_ids needs segment_ids")
        segment_ids = jnp.ones((batch, q_len), jnp.int32)
        kv_segment_ids = jnp.ones((batch, kv_len), jnp.int32)
    elif kv_segment_ids is None:
        if q_len != kv_len:
            raise ValueError("kv_segment_ids is required when q and kv lengths differ")
        kv_segment_ids = segment_ids
    segment_ids = jnp.asarray(segment_ids, jnp.int32)
    kv_segment_ids = jnp.asarray(kv_segment_ids, jnp.int32)
    if segment_ids.shape != (batch, q_len) or kv_segment_ids.shape != (batch, kv_len):
        raise ValueError(
            f"segment ids must be [batch, seq]: got {segment_ids.shape} and {kv_segment_ids.shape} "
            f"for q length {q_len} and kv length {kv_len}"
        )
    return segment_ids, kv_segment_ids


def _bias_4d(bias, batch, heads, q_len, kv_len) -> jax.Array:
    """An additive bias broadcastable to [batch, heads, q, k] as float32 [b|1, h|1, q, k]."""
    bias = jnp.asarray(bias, jnp.float32)
    if bias.ndim > 4:
        raise ValueError(f"bias must have at most 4 dims, got shape {bias.shape}")
    bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
    full = (batch, heads, q_len, kv_len)
    for size, want in zip(bias.shape, full):
        if size not in (1, want):
            raise ValueError(f"bias of shape {bias.shape} does not broadcast to {full}")
    return jnp.broadcast_to(bias, bias.shape[:2] + (q_len, kv_len))


def kv_block_ranges(
    q_segment_ids: jax.Array,
    kv_segment_ids: jax.Array,
    block_q: int,
    block_k: int,
    *,
    causal: bool = False,
    window: int | None = None,
) -> jax.Array:
    """[batch, q_blocks, 2] int32: the [first, last) key blocks each query block must visit.

    A key block is visited when its non-zero segment ids overlap the query block's range of
    non-zero ids, it is not wholly above the causal diagonal, and it reaches into the window.
    For rows whose segments are laid out in increasing order (padded and packed rows alike)
    this is exactly the set of blocks holding a visible key; for any other order it is a
    superset, and the in-kernel mask keeps the result exact. Lengths must be multiples of
    the blocks. Query blocks that see nothing (all padding) get (0, 0).
    """
    batch, q_len = q_segment_ids.shape
    kv_len = kv_segment_ids.shape[1]
    nq, nk = q_len // block_q, kv_len // block_k
    big = jnp.iinfo(jnp.int32).max

    def bounds(ids, n, block):
        ids = ids.reshape(batch, n, block)
        return jnp.min(jnp.where(ids > 0, ids, big), axis=-1), jnp.max(ids, axis=-1)

    q_min, q_max = bounds(q_segment_ids, nq, block_q)
    k_min, k_max = bounds(kv_segment_ids, nk, block_k)
    visit = (k_min[:, None, :] <= q_max[:, :, None]) & (k_max[:, None, :] >= q_min[:, :, None])
    q_first = jnp.arange(nq)[:, None] * block_q
    q_last = q_first + block_q - 1
    k_first = jnp.arange(nk)[None, :] * block_k
    k_last = k_first + block_k - 1
    if causal:
        visit &= (k_first <= q_last)[None]
    if window is not None:
        visit &= ((k_first <= q_last + window) & (k_last >= q_first - window))[None]
    any_visit = jnp.any(visit, axis=-1)
    first = jnp.argmax(visit, axis=-1)
    last = nk - jnp.argmax(visit[..., ::-1], axis=-1)
    first = jnp.where(any_visit, first, 0)
    last = jnp.where(any_visit, last, 0)
    return jnp.stack([first, last], axis=-1).astype(jnp.int32)


def _flash_kernel(
    range_ref, q_seg_ref, kv_seg_ref, q_ref, k_ref, v_ref, *refs,
    sm_scale: float, causal: bool, window: int | None, block_q: int, block_k: int,
    has_bias: bool, has_alibi: bool, precision,
):
    """One (query block, row, head): loop over this block's key-block range."""
    refs = list(refs)
    bias_ref = refs.pop(0) if has_bias else None
    slope_ref = refs.pop(0) if has_alibi else None
    (o_ref,) = refs
    head_dim = q_ref.shape[-1]

    q = q_ref[...]
    q_seg = q_seg_ref[...]
    # Padding queries get segment -1, which no key has: they see nothing.
    q_seg = jnp.where(q_seg == 0, -1, q_seg)
    q_pos = pl.program_id(0) * block_q + jnp.arange(block_q, dtype=jnp.int32)
    qk_scale = sm_scale * LOG2E
    slope = slope_ref[0] * LOG2E if has_alibi else None

    def body(kb, carry):
        acc, m_prev, l_prev = carry
        start = pl.multiple_of(kb * block_k, block_k)
        k = k_ref[pl.ds(start, block_k), :]
        v = v_ref[pl.ds(start, block_k), :]
        kv_seg = kv_seg_ref[pl.ds(start, block_k)]
        s = lax.dot_general(q, k, (((1,), (1,)), ((), ())), precision=precision,
                            preferred_element_type=jnp.float32) * qk_scale
        mask = q_seg[:, None] == kv_seg[None, :]
        if causal or window is not None or has_alibi:
            k_pos = start + jnp.arange(block_k, dtype=jnp.int32)
            delta = q_pos[:, None] - k_pos[None, :]
            if causal:
                mask &= delta >= 0
            if window is not None:
                mask &= jnp.abs(delta) <= window
            if has_alibi:
                s = s - slope * jnp.abs(delta.astype(jnp.float32))
        if has_bias:
            s = s + bias_ref[:, pl.ds(start, block_k)] * LOG2E
        s = jnp.where(mask, s, _MASK_VALUE)
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=1))
        p = jnp.where(mask, jnp.exp2(s - m_next[:, None]), 0.0)
        correction = jnp.exp2(m_prev - m_next)
        l_next = l_prev * correction + jnp.sum(p, axis=1)
        pv = lax.dot_general(p.astype(v.dtype), v, (((1,), (0,)), ((), ())), precision=precision,
                             preferred_element_type=jnp.float32)
        return acc * correction[:, None] + pv, m_next, l_next

    init = (
        jnp.zeros((block_q, head_dim), jnp.float32),
        jnp.full((block_q,), _MASK_VALUE, jnp.float32),
        jnp.zeros((block_q,), jnp.float32),
    )
    acc, _, l = lax.fori_loop(range_ref[0], range_ref[1], body, init)
    l = jnp.where(l == 0.0, 1.0, l)  # queries that saw no key: acc is 0, so the output is 0
    o_ref[...] = (acc / l[:, None]).astype(o_ref.dtype)


@functools.partial(
    jax.jit,
    static_argnames=("causal", "window", "sm_scale", "block_q", "block_k", "interpret",
                     "num_warps", "num_stages"),
)
def _flash_attention(q, k, v, segment_ids, kv_segment_ids, bias, alibi_slopes, *, causal, window,
                     sm_scale, block_q, block_k, interpret, num_warps, num_stages):
    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    group = heads // kv_heads
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    segment_ids, kv_segment_ids = _segment_defaults(segment_ids, kv_segment_ids, batch, q_len, kv_len)

    bq, bk = _tile(block_q, q_len), _tile(block_k, kv_len)
    q_pad, kv_pad = _round_up(q_len, bq), _round_up(kv_len, bk)
    dim = max(MIN_BLOCK, _next_power_of_2(head_dim))  # zero columns change no dot product
    q = jnp.pad(q, ((0, 0), (0, q_pad - q_len), (0, 0), (0, dim - head_dim)))
    k = jnp.pad(k, ((0, 0), (0, kv_pad - kv_len), (0, 0), (0, dim - head_dim)))
    v = jnp.pad(v, ((0, 0), (0, kv_pad - kv_len), (0, 0), (0, dim - head_dim)))
    segment_ids = jnp.pad(segment_ids, ((0, 0), (0, q_pad - q_len)))
    kv_segment_ids = jnp.pad(kv_segment_ids, ((0, 0), (0, kv_pad - kv_len)))
    ranges = kv_block_ranges(segment_ids, kv_segment_ids, bq, bk, causal=causal, window=window)

    def kv_head(h):
        return h if group == 1 else lax.div(h, group)

    inputs = [ranges, segment_ids, kv_segment_ids, q, k, v]
    in_specs = [
        pl.BlockSpec((None, None, 2), lambda i, b, h: (b, i, 0)),
        pl.BlockSpec((None, bq), lambda i, b, h: (b, i)),
        pl.BlockSpec((None, kv_pad), lambda i, b, h: (b, 0)),
        pl.BlockSpec((None, bq, None, dim), lambda i, b, h: (b, i, h, 0)),
        pl.BlockSpec((None, kv_pad, None, dim), lambda i, b, h: (b, 0, kv_head(h), 0)),
        pl.BlockSpec((None, kv_pad, None, dim), lambda i, b, h: (b, 0, kv_head(h), 0)),
    ]
    if bias is not None:
        bias = _bias_4d(bias, batch, heads, q_len, kv_len)
        bias = jnp.pad(bias, ((0, 0), (0, 0), (0, q_pad - q_len), (0, kv_pad - kv_len)))
        per_row, per_head = bias.shape[0] > 1, bias.shape[1] > 1
        inputs.append(bias)
        in_specs.append(pl.BlockSpec(
            (None, None, bq, kv_pad),
            lambda i, b, h: (b if per_row else 0, h if per_head else 0, i, 0),
        ))
    if alibi_slopes is not None:
        alibi_slopes = jnp.asarray(alibi_slopes, jnp.float32)
        if alibi_slopes.shape != (heads,):
            raise ValueError(f"alibi_slopes must be [heads] = ({heads},), got {alibi_slopes.shape}")
        inputs.append(alibi_slopes)
        in_specs.append(pl.BlockSpec((1,), lambda i, b, h: (h,)))

    kernel = functools.partial(
        _flash_kernel, sm_scale=sm_scale, causal=causal, window=window, block_q=bq, block_k=bk,
        has_bias=bias is not None, has_alibi=alibi_slopes is not None,
        # float32 inputs: IEEE products (Triton would otherwise use TF32); 16-bit: native MMA.
        precision=lax.Precision.HIGHEST if q.dtype == jnp.float32 else None,
    )
    compiler_params = None
    if not interpret:
        from jax.experimental.pallas import triton as plgpu

        compiler_params = plgpu.CompilerParams(
            num_warps=num_warps or (4 if dim <= 64 else 8), num_stages=num_stages)
    out = pl.pallas_call(
        kernel,
        grid=(q_pad // bq, batch, heads),
        in_specs=in_specs,
        out_specs=pl.BlockSpec((None, bq, None, dim), lambda i, b, h: (b, i, h, 0)),
        out_shape=jax.ShapeDtypeStruct((batch, q_pad, heads, dim), q.dtype),
        compiler_params=compiler_params,
        interpret=interpret,
        name="tei_flash_attention",
    )(*inputs)
    return out[:, :q_len, :, :head_dim]


def _check_shapes(q, k, v) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(f"q, k, v must be [batch, seq, heads, head_dim] with v like k: got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    if k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3]:
        raise ValueError(f"q and k disagree on batch or head_dim: {q.shape} vs {k.shape}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"q heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]})")


def flash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    bias: jax.Array | None = None,
    alibi_slopes: jax.Array | None = None,
    causal: bool = False,
    window: int | None = None,
    sm_scale: float | None = None,
    block_q: int = 64,
    block_k: int = 64,
    interpret: bool | None = None,
    num_warps: int | None = None,
    num_stages: int = 2,
) -> jax.Array:
    """Attention over q [batch, q_len, heads, d] and k, v [batch, kv_len, kv_heads, d].

    segment_ids [batch, q_len] / kv_segment_ids [batch, kv_len] (int, >= 0; 0 = padding): a
    query sees only keys with its own non-zero id; kv ids default to the q ids. `bias` is
    additive, broadcastable to [batch, heads, q_len, kv_len]; `alibi_slopes` [heads] adds
    -slope * |i - j|; `causal` keeps keys j <= i; `window` keeps |i - j| <= window. Queries
    that see no key return zeros. Returns [batch, q_len, heads, d] in q's dtype.

    block_q/block_k are powers of two >= 16 (shrunk for short sequences); `interpret` None
    means interpret everywhere but on GPU.
    """
    _check_shapes(q, k, v)
    if window is not None and window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    scale = float(sm_scale) if sm_scale is not None else q.shape[-1] ** -0.5
    return _flash_attention(
        q, k, v, segment_ids, kv_segment_ids, bias, alibi_slopes,
        causal=bool(causal), window=None if window is None else int(window), sm_scale=scale,
        block_q=int(block_q), block_k=int(block_k),
        interpret=_default_interpret() if interpret is None else bool(interpret),
        num_warps=num_warps, num_stages=int(num_stages),
    )


def reference_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    bias: jax.Array | None = None,
    alibi_slopes: jax.Array | None = None,
    causal: bool = False,
    window: int | None = None,
    sm_scale: float | None = None,
    block_q: int = 64,
    block_k: int = 64,
    interpret: bool | None = None,
    num_warps: int | None = None,
    num_stages: int = 2,
) -> jax.Array:
    """`flash_attention`'s contract in plain jnp (float32, full [q, k] logits), for tests.

    The tiling arguments are accepted and ignored so both functions take the same call.
    """
    del block_q, block_k, interpret, num_warps, num_stages
    _check_shapes(q, k, v)
    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    scale = float(sm_scale) if sm_scale is not None else head_dim ** -0.5
    segment_ids, kv_segment_ids = _segment_defaults(segment_ids, kv_segment_ids, batch, q_len, kv_len)
    qf = q.astype(jnp.float32)
    kf = jnp.repeat(k.astype(jnp.float32), heads // kv_heads, axis=2)
    vf = jnp.repeat(v.astype(jnp.float32), heads // kv_heads, axis=2)
    hi = lax.Precision.HIGHEST
    logits = jnp.einsum("bqnd,bknd->bnqk", qf, kf, precision=hi) * scale
    delta = jnp.arange(q_len)[:, None] - jnp.arange(kv_len)[None, :]
    allowed = (segment_ids[:, :, None] == kv_segment_ids[:, None, :]) & (segment_ids[:, :, None] > 0)
    if causal:
        allowed &= (delta >= 0)[None]
    if window is not None:
        allowed &= (jnp.abs(delta) <= window)[None]
    if bias is not None:
        logits = logits + _bias_4d(bias, batch, heads, q_len, kv_len)
    if alibi_slopes is not None:
        logits = logits - jnp.asarray(alibi_slopes, jnp.float32)[None, :, None, None] * jnp.abs(delta)[None, None]
    allowed = allowed[:, None]
    logits = jnp.where(allowed, logits, -jnp.inf)
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    probs = jnp.where(allowed, jnp.exp(logits - row_max), 0.0)
    total = jnp.sum(probs, axis=-1, keepdims=True)
    probs = probs / jnp.where(total == 0.0, 1.0, total)
    return jnp.einsum("bnqk,bknd->bqnd", probs, vf, precision=hi).astype(q.dtype)
