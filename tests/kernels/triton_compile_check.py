"""Compile the flash-attention kernel's Triton IR to a CUDA binary without a GPU (dev check).

The default test run only checks that the kernel lowers to Triton IR. This script goes one step
further on a CPU-only machine. It captures the textual Triton module that Pallas prints with
`debug=True` and compiles it with the `triton` package to a cubin for a chosen compute
capability (ptxas ships in the triton wheel). Triton rejects, at this step, shapes and layouts
it cannot tile, and it reports the shared memory each block needs.

    pip install --target /tmp/tritonpkg --no-deps triton
    PYTHONPATH=/tmp/tritonpkg python tests/kernels/triton_compile_check.py [--cc 90]

This is not a pytest module: it needs a 1 GB package the project does not depend on, and it
parses Pallas' debug output. XLA compiles with its own Triton revision, so a pass here is
evidence, not proof; the GPU-marked tests are the real check.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import tempfile
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from cuda_target import lowering_target
from tei_jax.kernels import flash_attention as fa
from tei_jax.models.attention import alibi_slopes

BATCH, SEQ, HEADS = 2, 176, 4
LOCATION = re.compile(r'\s+(\[unknown\]|"[^"]*"\(#loc\d+\)|#loc\d*|loc\([^)]*\))')
CONFIGS = [  # name, dtype, head_dim, kv_heads, options
    ("bf16-d64", jnp.bfloat16, 64, 4, {}),
    ("bf16-d128-gqa-causal-window", jnp.bfloat16, 128, 2, {"causal": True, "window": 15}),
    ("f16-d32-alibi", jnp.float16, 32, 4, {"alibi_slopes": alibi_slopes(HEADS)}),
    ("bf16-d72-alibi", jnp.bfloat16, 72, 4, {"alibi_slopes": alibi_slopes(HEADS)}),
    ("f32-d64-bias", jnp.float32, 64, 4, {"bias": jnp.zeros((1, HEADS, SEQ, SEQ))}),
]


def triton_ir(dtype, head_dim: int, kv_heads: int, options: dict, cc: int = 90) -> str:
    """The kernel's Triton module as text, without location info."""
    real_call = pl.pallas_call

    def with_debug(*args, **kwargs):
        return real_call(*args, **{**kwargs, "debug": True})

    q = jax.ShapeDtypeStruct((BATCH, SEQ, HEADS, head_dim), dtype)
    kv = jax.ShapeDtypeStruct((BATCH, SEQ, kv_heads, head_dim), dtype)
    seg = jax.ShapeDtypeStruct((BATCH, SEQ), jnp.int32)

    def run(q, k, v, s):
        return fa.flash_attention(q, k, v, segment_ids=s, interpret=False, **options)

    printed = io.StringIO()
    with mock.patch.object(fa.pl, "pallas_call", with_debug), contextlib.redirect_stdout(printed), \
            lowering_target(cc):
        jax.jit(run).trace(q, kv, kv, seg).lower(lowering_platforms=("cuda",))
    text = printed.getvalue()
    lines = [line for line in text[text.index("module @"):].splitlines() if not line.startswith("#loc")]
    # Drop the trailing location annotations: `[unknown]`, `"name:"(#locN)`, `#locN`, `loc(...)`,
    # then whatever Pallas printed after the module's closing brace.
    module = LOCATION.sub("", "\n".join(lines)) + "\n"
    return module[: module.rindex("\n}\n") + 3]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cc", type=int, default=90, choices=(80, 90), help="compute capability")
    args = parser.parse_args()
    import triton
    from triton.backends.compiler import GPUTarget

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, dtype, head_dim, kv_heads, options in CONFIGS:
            path = Path(tmp) / f"{name}.ttir"
            path.write_text(triton_ir(dtype, head_dim, kv_heads, options, args.cc))
            warps = 4 if head_dim <= 64 else 8  # the kernel's own default
            try:
                kernel = triton.compile(str(path), target=GPUTarget("cuda", args.cc, 32),
                                        options={"num_warps": warps, "num_stages": 2})
            except Exception as error:  # report every configuration, then fail
                failures += 1
                print(f"FAIL {name}: {type(error).__name__}: {str(error)[:2000]}")
                continue
            print(f"ok   {name}: sm_{args.cc} cubin {len(kernel.asm['cubin'])} bytes, "
                  f"shared memory {kernel.metadata.shared} bytes")
    print(f"jax {jax.__version__}, triton {triton.__version__}: {len(CONFIGS) - failures}/{len(CONFIGS)} compiled")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
