"""The Pallas flash-attention kernel against the jnp reference and the XLA attention path.

On CPU the kernel runs in Pallas interpret mode (the same kernel body, executed as HLO loops),
so these tests check its arithmetic and masking at small shapes; `test_lowers_to_triton`
checks that every configuration also lowers to Triton IR for CUDA. Inputs are fresh random
numbers each run; the seed is in every failure message (set TEI_JAX_TEST_SEED to replay).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cuda_target import lowering_target
from tei_jax.kernels import flash_attention as fa
from tei_jax.kernels.flash_attention import flash_attention, kv_block_ranges
from tei_jax.models import attention

alibi_slopes, resolve_implementation = attention.alibi_slopes, attention.resolve_implementation
# The comparisons run jitted: one compile per configuration instead of op-by-op dispatch.
reference_attention = jax.jit(fa.reference_attention, static_argnames=("causal", "window", "sm_scale"))
attend = jax.jit(attention.attend, static_argnames=("causal", "window", "scale", "implementation"))

SEED = int(os.environ.get("TEI_JAX_TEST_SEED") or np.random.SeedSequence().entropy % 2**32)
F32_TOL = 1e-5  # online softmax vs one-pass softmax in float32: rounding only
# 16-bit inputs: the kernel rounds the probabilities to the input dtype for the PV product
# (as every flash kernel does) and rounds the output; the reference keeps float32 throughout.
TOL_16 = {jnp.bfloat16: 2e-2, jnp.float16: 3e-3}


def rng_for(test_id: int) -> np.random.Generator:
    return np.random.default_rng([SEED, test_id])


def qkv(rng, batch, seq, heads, dim, kv_heads=None, dtype=jnp.float32):
    kv_heads = kv_heads or heads
    q = rng.standard_normal((batch, seq, heads, dim), np.float32)
    k = rng.standard_normal((batch, seq, kv_heads, dim), np.float32)
    v = rng.standard_normal((batch, seq, kv_heads, dim), np.float32)
    return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def packed_segments(rng, batch: int, seq: int, max_parts: int = 4) -> jnp.ndarray:
    """Rows holding 1..max_parts sequences of random lengths back to back, then padding."""
    ids = np.zeros((batch, seq), np.int32)
    for row in range(batch):
        start = 0
        for slot in range(int(rng.integers(1, max_parts + 1))):
            length = int(rng.integers(1, seq // 2))
            if start + length > seq:
                break
            ids[row, start : start + length] = slot + 1
            start += length
    return jnp.asarray(ids)


def padded_segments(rng, batch: int, seq: int) -> jnp.ndarray:
    lengths = rng.integers(1, seq + 1, size=batch)
    return jnp.asarray((np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32))


def max_err(a, b, segment_ids=None) -> float:
    """Max abs difference, over real (non-padding) query positions when segment ids are given."""
    diff = jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))
    if segment_ids is not None:
        diff = jnp.where((segment_ids > 0)[:, :, None, None], diff, 0.0)
    return float(jnp.max(diff))


def check(name: str, err: float, tol: float) -> None:
    assert err < tol, f"{name}: max abs error {err:.3g} >= {tol:g} (TEI_JAX_TEST_SEED={SEED})"


@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_padded_and_packed_match_reference_and_xla(head_dim):
    """Rows 0-1 padded (one sequence each), rows 2-3 packed (several sequences, then padding)."""
    rng = rng_for(head_dim)
    batch, seq, heads = 4, 80, 2  # 80 is no multiple of the 32-blocks: the wrapper pads
    q, k, v = qkv(rng, batch, seq, heads, head_dim)
    seg = jnp.concatenate([padded_segments(rng, 2, seq), packed_segments(rng, 2, seq)])
    out = flash_attention(q, k, v, segment_ids=seg, block_q=32, block_k=32)
    ref = reference_attention(q, k, v, segment_ids=seg)
    check(f"d={head_dim} vs reference", max_err(out, ref), F32_TOL)
    xla = attend(q, k, v, seg, implementation="xla")
    check(f"d={head_dim} vs xla", max_err(out, xla, seg), F32_TOL)
    padding = (seg == 0)[:, :, None, None]
    assert bool(jnp.all(jnp.where(padding, out == 0, True))), "padding queries must be zero"


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "fp16"])
def test_half_precision(dtype):
    rng = rng_for(7 if dtype == jnp.bfloat16 else 8)
    q, k, v = qkv(rng, 2, 64, 2, 64, dtype=dtype)
    seg = packed_segments(rng, 2, 64)
    out = flash_attention(q, k, v, segment_ids=seg, block_q=16, block_k=32)
    assert out.dtype == dtype
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]  # the same rounded inputs, exact arithmetic
    ref = reference_attention(*f32, segment_ids=seg)
    check(f"{jnp.dtype(dtype).name} vs float32 reference", max_err(out, ref), TOL_16[dtype])


def test_causal_grouped_query_decoder():
    """Qwen-style: causal, 4 query heads sharing 2 kv heads, packed rows."""
    rng = rng_for(11)
    q, k, v = qkv(rng, 2, 64, 4, 32, kv_heads=2)
    seg = packed_segments(rng, 2, 64)
    out = attend(q, k, v, seg, causal=True, implementation="pallas")
    check("causal gqa vs reference", max_err(out, reference_attention(q, k, v, segment_ids=seg, causal=True)), F32_TOL)
    check("causal gqa vs xla", max_err(out, attend(q, k, v, seg, causal=True, implementation="xla"), seg), F32_TOL)


def test_causal_sliding_window():
    """Decoder sliding window (Qwen2/Mistral): causal plus |i - j| <= window."""
    rng = rng_for(12)
    q, k, v = qkv(rng, 2, 96, 2, 32)
    seg = padded_segments(rng, 2, 96)
    kwargs = dict(causal=True, window=9)
    out = attend(q, k, v, seg, implementation="pallas", **kwargs)
    check("causal window vs xla", max_err(out, attend(q, k, v, seg, implementation="xla", **kwargs), seg), F32_TOL)


def test_alibi_jina():
    """JinaBERT: symmetric ALiBi from the model's slopes (6 heads: the non-power-of-two case)."""
    rng = rng_for(13)
    q, k, v = qkv(rng, 2, 48, 6, 32)
    seg = packed_segments(rng, 2, 48)
    slopes = alibi_slopes(6)
    out = attend(q, k, v, seg, alibi=slopes, implementation="pallas")
    check("alibi vs xla", max_err(out, attend(q, k, v, seg, alibi=slopes, implementation="xla"), seg), F32_TOL)
    ref = reference_attention(q, k, v, segment_ids=seg, alibi_slopes=slopes)
    check("alibi vs reference", max_err(out, ref), F32_TOL)


def test_local_window_modernbert():
    """ModernBERT local layers: bidirectional window; blocks outside it are skipped."""
    rng = rng_for(14)
    q, k, v = qkv(rng, 2, 128, 2, 64)
    seg = packed_segments(rng, 2, 128)
    out = attend(q, k, v, seg, window=8, implementation="pallas")
    check("window vs xla", max_err(out, attend(q, k, v, seg, window=8, implementation="xla"), seg), F32_TOL)


@pytest.mark.parametrize("shape", [(1, 2, 40, 40), (3, 1, 40, 40), (40, 40)], ids=["per-head", "per-row", "shared"])
def test_additive_bias(shape):
    """MPNet's relative-position bias is [1, heads, q, k]; other broadcasts work the same."""
    rng = rng_for(15 + len(shape) + shape[0])
    q, k, v = qkv(rng, 3, 40, 2, 32)
    seg = packed_segments(rng, 3, 40)
    bias = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    out = attend(q, k, v, seg, bias=bias, implementation="pallas")
    check(f"bias {shape} vs xla", max_err(out, attend(q, k, v, seg, bias=bias, implementation="xla"), seg), F32_TOL)


def test_fully_padded_rows_are_zero_not_nan():
    rng = rng_for(21)
    q, k, v = qkv(rng, 3, 32, 2, 32)
    seg = jnp.asarray(np.array([[0] * 32, [1] * 5 + [0] * 27, [0] * 32], np.int32))
    for kwargs in ({}, {"causal": True, "alibi_slopes": alibi_slopes(2), "window": 3}):
        out = flash_attention(q, k, v, segment_ids=seg, block_q=16, block_k=16, **kwargs)
        assert bool(jnp.all(jnp.isfinite(out))), kwargs
        assert float(jnp.max(jnp.abs(out[0]))) == 0.0 and float(jnp.max(jnp.abs(out[2]))) == 0.0, kwargs
        check(f"padded rows {kwargs}", max_err(out, reference_attention(q, k, v, segment_ids=seg, **kwargs)), F32_TOL)


def test_padding_blocks_are_never_read():
    """NaN in every key/value block past a row's real length: a kernel that loaded any of them
    would spread NaN (0 * NaN in the PV product), so a finite, correct output shows they were
    skipped."""
    rng = rng_for(22)
    q, k, v = qkv(rng, 2, 64, 2, 32)
    seg = jnp.asarray(np.array([[1] * 16 + [0] * 48, [1] * 10 + [2] * 20 + [0] * 34], np.int32))
    clean = reference_attention(q, k, v, segment_ids=seg)
    block_of_padding = (jnp.arange(64) >= jnp.array([[16], [32]]))[:, :, None, None]
    k_nan = jnp.where(block_of_padding, jnp.nan, k)
    v_nan = jnp.where(block_of_padding, jnp.nan, v)
    out = flash_attention(q, k_nan, v_nan, segment_ids=seg, block_q=16, block_k=16)
    assert bool(jnp.all(jnp.isfinite(out)))
    check("NaN padding blocks", max_err(out, clean), F32_TOL)


def test_kv_block_ranges_skip_other_segments_and_padding():
    # One row: segment 1 in block 0, segment 2 in blocks 1-2, padding in block 3.
    seg = jnp.asarray([[1] * 16 + [2] * 32 + [0] * 16], jnp.int32)
    ranges = np.asarray(kv_block_ranges(seg, seg, 16, 16))[0]
    assert ranges.tolist() == [[0, 1], [1, 3], [1, 3], [0, 0]]
    causal = np.asarray(kv_block_ranges(seg, seg, 16, 16, causal=True))[0]
    assert causal.tolist() == [[0, 1], [1, 2], [1, 3], [0, 0]]
    # A long single sequence with a 3-token window: only neighbouring blocks are visited.
    long = jnp.ones((1, 64), jnp.int32)
    windowed = np.asarray(kv_block_ranges(long, long, 16, 16, window=3))[0]
    assert windowed.tolist() == [[0, 2], [0, 3], [1, 4], [2, 4]]


def test_rejects_bad_arguments():
    q, k, v = qkv(rng_for(23), 1, 16, 4, 32, kv_heads=3)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        flash_attention(q, k, v)
    q, k, v = qkv(rng_for(24), 1, 16, 2, 32)
    with pytest.raises(ValueError, match="powers of two"):
        flash_attention(q, k, v, block_q=24)
    with pytest.raises(ValueError, match="broadcast"):
        flash_attention(q, k, v, bias=jnp.zeros((3, 16, 16)))


def test_auto_keeps_xla_on_cpu():
    assert resolve_implementation("auto", "cpu") == "xla"
    assert resolve_implementation(None, "cpu") == "xla"
    assert resolve_implementation("pallas", "cpu") == "pallas"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=["f32", "bf16", "fp16"])
def test_lowers_to_triton(dtype):
    """Every feature combination lowers to a Triton kernel for CUDA (no GPU needed to lower;
    Triton's own compile to PTX happens only on a GPU)."""
    batch, seq, heads = 2, 176, 4  # 176: a non-power-of-two bucket of the engine's ladder
    for head_dim, kv_heads, extra in (
        (32, 4, {}),
        (64, 2, {"causal": True, "window": 15}),
        (72, 4, {"alibi_slopes": alibi_slopes(heads)}),
        (128, 1, {"bias": jnp.zeros((1, heads, seq, seq))}),
    ):
        q = jax.ShapeDtypeStruct((batch, seq, heads, head_dim), dtype)
        kv = jax.ShapeDtypeStruct((batch, seq, kv_heads, head_dim), dtype)
        seg = jax.ShapeDtypeStruct((batch, seq), jnp.int32)

        def run(q, k, v, s, extra=extra):
            return flash_attention(q, k, v, segment_ids=s, interpret=False, **extra)

        with lowering_target():
            text = jax.jit(run).trace(q, kv, kv, seg).lower(lowering_platforms=("cuda",)).as_text()
        assert "__gpu$xla.gpu.triton" in text, (head_dim, extra)


def test_tiny_bert_pallas_matches_xla():
    """End to end: tei_jax.load(..., attention="pallas") (interpreted on CPU) embeds like XLA."""
    from tiny_models import load_cached, make_model, random_texts

    folder = make_model("bert")
    texts = random_texts(rng_for(31), 6, max_words=30)
    xla = load_cached(folder, attention="xla")
    pallas = load_cached(folder, attention="pallas")
    a, b = xla.embed(texts), pallas.embed(texts)
    check("tiny BERT embeddings pallas vs xla", float(np.max(np.abs(a - b))), F32_TOL)


from gpu_env import HAS_GPU, needs_gpu  # noqa: E402 - GPU tests, or the CPU with TEI_JAX_GPU_TESTS_ON_CPU=1

# On the CPU backend (the dry run) the same checks run in interpret mode at smaller shapes.
GPU_SHAPE = (8, 512, 12, 64) if HAS_GPU else (1, 64, 2, 32)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=["f32", "bf16", "fp16"])
def test_gpu_compiled_kernel(dtype):
    """The Triton-compiled kernel on a real GPU, at encoder shapes, against the reference:
    packed rows with each feature (causal, ALiBi, window, bias) at every input dtype."""
    rng = rng_for(41)
    batch, seq, heads, dim = GPU_SHAPE
    q, k, v = qkv(rng, batch, seq, heads, dim, dtype=dtype)
    seg = packed_segments(rng, batch, seq)
    bias = jnp.asarray(rng.standard_normal((1, heads, seq, seq)), jnp.float32)
    for kwargs in ({}, {"causal": True}, {"alibi_slopes": alibi_slopes(heads)}, {"window": seq // 8}, {"bias": bias}):
        out = flash_attention(q, k, v, segment_ids=seg, interpret=None if not HAS_GPU else False, **kwargs)
        ref = reference_attention(*[x.astype(jnp.float32) for x in (q, k, v)], segment_ids=seg, **kwargs)
        assert bool(jnp.all(jnp.isfinite(out.astype(jnp.float32)))), f"non-finite output {kwargs}"
        tol = F32_TOL * 10 if dtype == jnp.float32 else TOL_16[dtype]  # GPU exp2 is approximate
        name = ", ".join(sorted(kwargs)) or "plain"
        check(f"gpu {jnp.dtype(dtype).name} {name}", max_err(out, ref, seg), tol)


@pytest.mark.gpu
@needs_gpu
def test_gpu_timing_bf16():
    """Prints kernel vs XLA attention time at a bge-base shape (informational, no assertion on time)."""
    rng = rng_for(42)
    batch, seq, heads, dim = (32, 512, 12, 64) if HAS_GPU else (1, 64, 2, 32)
    q, k, v = qkv(rng, batch, seq, heads, dim, dtype=jnp.bfloat16)
    seg = padded_segments(rng, batch, seq)
    kernel = jax.jit(lambda q, k, v, s: attend(q, k, v, s, implementation="pallas"))
    xla = jax.jit(lambda q, k, v, s: attend(q, k, v, s, implementation="xla"))
    for name, fn in (("pallas", kernel), ("xla", xla)):
        fn(q, k, v, seg).block_until_ready()
        start = time.perf_counter()
        repeats = 20 if HAS_GPU else 2
        for _ in range(repeats):
            out = fn(q, k, v, seg)
        out.block_until_ready()
        print(f"{name}: {(time.perf_counter() - start) / repeats * 1e3:.3f} ms per call")
    check("gpu bf16 pallas vs xla", max_err(kernel(q, k, v, seg), xla(q, k, v, seg), seg), TOL_16[jnp.bfloat16])
