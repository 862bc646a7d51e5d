"""One attention entry point for every family.

Masks are expressed as per-token segment ids ([batch, seq] int32, 0 = padding): a query sees
only keys of its own non-zero segment. Padded batches use one segment per row; packed batches
put several sequences in a row. Behind the entry point:
  - "xla": einsum attention with an additive mask (exact; the only CPU path, fastest there);
  - "cudnn": jax.nn.dot_product_attention(implementation="cudnn") for padded rows on GPU;
  - "pallas": our flash-attention kernel (tei_jax.kernels.flash_attention).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "pallas")
# What "auto" picks per backend. CPU: XLA's einsum is the only compiled path (Pallas would run
# interpreted). GPU: XLA as well until a device benchmark shows otherwise, because
#   - the Pallas kernel has not run or been timed on a GPU yet (its lowering to Triton IR is
#     tested; tests/kernels/triton_compile_check.py compiles that IR for sm_80/sm_90 offline);
#   - cuDNN takes bfloat16/float16 only (a float32 load would fail), masks by row lengths so
#     it turns packing off (lower padding efficiency), and its custom partitioning is known to
#     miss the persistent compilation cache;
#   - published evidence for BERT shapes (L <= 512, head_dim 64) puts attention at a few
#     percent of encoder FLOPs, so XLA's fused softmax attention costs little end to end.
# Change an entry only with `python -m tei_jax.bench --attention ...` numbers to quote.
AUTO_BY_BACKEND = {"cpu": "xla", "gpu": "xla", "cuda": "xla", "rocm": "xla", "tpu": "xla"}
_MASK_VALUE = -1e30


def resolve_implementation(name: str | None, backend: str | None = None) -> str:
    """Map 'auto' (or None) to the implementation to use on this backend."""
    name = (name or "auto").lower()
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"attention must be one of {', '.join(IMPLEMENTATIONS)}, got {name!r}")
    if name != "auto":
        return name
    return AUTO_BY_BACKEND.get((backend or "cpu").lower(), "xla")


def alibi_slopes(num_heads: int) -> jnp.ndarray:
    """ALiBi head slopes (Press et al.), including the non-power-of-two interleave."""
    import math

    def powers(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = powers(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = powers(closest) + powers(2 * closest)[0::2][: num_heads - closest]
    return jnp.asarray(slopes, dtype=jnp.float32)


def _within_window(q_len: int, window: int) -> jax.Array:
    """[q, k] boolean: key within `window` positions of the query (either side, inclusive)."""
    pos = jnp.arange(q_len)
    return jnp.abs(pos[:, None] - pos[None, :]) <= window


def _window_bias(q_len: int, window: int) -> jax.Array:
    """The local-attention window as an additive [1, 1, q, k] bias, for paths without a mask."""
    return jnp.where(_within_window(q_len, window), 0.0, _MASK_VALUE)[None, None].astype(jnp.float32)


def _xla_attention(q, k, v, segment_ids, causal, bias, slopes, scale, window=None):
    """Plain XLA attention, laid out for speed on CPU.

    Heads move in front ([b, n, q, h]) before the two batched matmuls: XLA's CPU backend runs
    the equivalent "bqnh,bknh->bnqk" einsum about 5x slower. Masks are one additive bias
    built once, and the softmax is normalised after the value matmul (a [q, h] division, not
    a [q, k] one). A query with every key masked gets a uniform average, never NaN.
    """
    batch, q_len, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    if kv_heads != heads:  # grouped-query attention: repeat kv heads
        k = jnp.repeat(k, heads // kv_heads, axis=2)
        v = jnp.repeat(v, heads // kv_heads, axis=2)
    qt = jnp.transpose(q, (0, 2, 1, 3))  # [b, n, q, h]
    kt = jnp.transpose(k, (0, 2, 3, 1))  # [b, n, h, k]
    vt = jnp.transpose(v, (0, 2, 1, 3))  # [b, n, k, h]
    logits = jnp.matmul(qt, kt, preferred_element_type=jnp.float32) * scale
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
    if causal:
        allowed = allowed & jnp.tril(jnp.ones((q_len, q_len), dtype=bool))[None]
    if window is not None:
        allowed = allowed & _within_window(q_len, window)[None]
    mask = jnp.where(allowed, 0.0, _MASK_VALUE).astype(jnp.float32)[:, None]  # [b, 1, q, k]
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if slopes is not None:
        pos = jnp.arange(q_len)
        distance = jnp.abs(pos[:, None] - pos[None, :]).astype(jnp.float32)
        logits = logits - slopes[None, :, None, None] * distance[None, None]
    logits = logits + mask
    weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    total = jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.matmul(weights.astype(v.dtype), vt, preferred_element_type=jnp.float32) / total
    return jnp.transpose(out, (0, 2, 1, 3)).astype(v.dtype)


def _cudnn_attention(q, k, v, segment_ids, causal, bias, scale):
    lengths = jnp.sum(segment_ids > 0, axis=1).astype(jnp.int32)
    mesh = _active_mesh()
    if mesh is not None:
        # cuDNN's custom partitioner runs on each device's rows and heads, and refuses q, k, v
        # sharded differently ("Query, key and value should have same sharding"): kv heads
        # left whole (fewer than the model axis) are repeated and all three are pinned alike.
        k, v, spec = _split_like_queries(mesh, q, k, v)
        q, k, v = (jax.lax.with_sharding_constraint(x, spec) for x in (q, k, v))
        lengths = jax.lax.with_sharding_constraint(lengths, PartitionSpec(spec[0]))
    if bias is not None:
        bias = bias.astype(q.dtype)
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias, scale=scale, is_causal=causal,
        query_seq_lengths=lengths, key_value_seq_lengths=lengths, implementation="cudnn",
    )


def _active_mesh():
    """The mesh the engine traces under (tei_jax/sharding.py), if it has several devices."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or not {"data", "model"} <= set(mesh.axis_names):
        return None
    return mesh


def _split_like_queries(mesh, q, k, v):
    """k and v ready to split like q on the mesh, and that [batch, seq, heads, head_dim] spec:
    rows over `data`, heads over `model`. KV heads that do not split (fewer than the model
    axis) are repeated up to the query heads first."""
    heads, data, model = q.shape[2], mesh.shape["data"], mesh.shape["model"]
    row = "data" if q.shape[0] % data == 0 else None
    head = "model" if heads % model == 0 else None
    if head is not None and k.shape[2] % model:
        k = jnp.repeat(k, heads // k.shape[2], axis=2)
        v = jnp.repeat(v, heads // v.shape[2], axis=2)
    return k, v, PartitionSpec(row, None, head, None)


def _sharded_kernel(kernel, mesh, q, k, v, segment_ids, bias, alibi):
    """A Pallas kernel is opaque to XLA's partitioner, so run it under `shard_map`: rows over
    `data`, heads over `model`, each device attending its own rows and heads."""
    k, v, qkv = _split_like_queries(mesh, q, k, v)
    row, head = qkv[0], qkv[2]
    args, specs = [q, k, v, segment_ids], [qkv, qkv, qkv, PartitionSpec(row, None)]
    if bias is not None:
        bias = jnp.reshape(bias, (1,) * (4 - bias.ndim) + bias.shape)
        args.append(bias)
        specs.append(PartitionSpec(row if bias.shape[0] > 1 else None, head if bias.shape[1] > 1 else None))
    if alibi is not None:
        args.append(alibi)
        specs.append(PartitionSpec(head))

    def local(q, k, v, segment_ids, *rest):
        rest = list(rest)
        local_bias = rest.pop(0) if bias is not None else None
        local_alibi = rest.pop(0) if alibi is not None else None
        return kernel(q, k, v, segment_ids=segment_ids, bias=local_bias, alibi_slopes=local_alibi)

    return jax.shard_map(local, mesh=mesh, in_specs=tuple(specs), out_specs=qkv, check_vma=False)(*args)


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array,
    *,
    causal: bool = False,
    bias: jax.Array | None = None,
    alibi: jax.Array | None = None,
    scale: float | None = None,
    window: int | None = None,
    implementation: str = "xla",
) -> jax.Array:
    """Attention over [batch, seq, heads, head_dim] tensors with segment-id masking.

    `bias` is additive, broadcastable to [batch, heads, q, k]; `alibi` is a [heads] slope
    vector (symmetric -slope*|i-j|); `window` restricts each query to keys at most that many
    positions away (local attention). Returns [batch, seq, heads, head_dim] in q's dtype.
    """
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    if implementation == "pallas":
        # Windows, ALiBi and segments are applied in-kernel (and let it skip key blocks);
        # off GPU the kernel runs in Pallas interpret mode. On a mesh it runs per shard.
        from ..kernels.flash_attention import flash_attention

        kernel = functools.partial(flash_attention, causal=causal, window=window, sm_scale=scale)
        mesh = _active_mesh()
        if mesh is None:
            return kernel(q, k, v, segment_ids=segment_ids, bias=bias, alibi_slopes=alibi)
        return _sharded_kernel(kernel, mesh, q, k, v, segment_ids, bias, alibi)
    if window is not None and implementation != "xla":
        local = _window_bias(q.shape[1], window)
        bias = local if bias is None else bias.astype(jnp.float32) + local
    if implementation == "cudnn":
        if alibi is not None:
            pos = jnp.arange(q.shape[1])
            distance = jnp.abs(pos[:, None] - pos[None, :]).astype(jnp.float32)
            alibi_bias = -alibi[None, :, None, None] * distance[None, None]
            bias = alibi_bias if bias is None else bias + alibi_bias
        return _cudnn_attention(q, k, v, segment_ids, causal, bias, scale)
    return _xla_attention(q, k, v, segment_ids, causal, bias, alibi, scale, window)
