"""What the numbers were measured on: CPU, cores, accelerator, library versions, date; and the
measured peak matmul FLOP/s that model FLOP/s are compared with."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


NVIDIA_FIELDS = ("name", "memory.total", "driver_version", "clocks.max.sm", "clocks.sm", "power.limit",
                 "temperature.gpu", "utilization.gpu", "compute_cap")


def nvidia_smi() -> list[dict] | None:
    """One dict per GPU from `nvidia-smi --query-gpu` (None without the tool); read only."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, f"--query-gpu={','.join(NVIDIA_FIELDS)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return [{"error": str(error)}]
    if out.returncode != 0:
        return [{"error": (out.stderr or out.stdout).strip()[-500:]}]
    return [dict(zip(NVIDIA_FIELDS, (v.strip() for v in line.split(",")))) for line in out.stdout.splitlines() if line.strip()]


def accelerator() -> dict:
    """The GPU side: nvidia-smi, the CUDA versions JAX's plugin and torch were built with."""
    info: dict = {"nvidia_smi": nvidia_smi()}
    info["versions"] = {name: _version(name) for name in (
        "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt", "nvidia-cudnn-cu13",
        "nvidia-cudnn-cu12", "triton")}
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["torch_sees_gpu"] = bool(torch.cuda.is_available())
        info["torch_cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    except ImportError:
        info["torch_cuda"] = None
    return info


def describe() -> dict:
    """A JSON-ready description of this machine and the software under test."""
    import jax

    devices = jax.devices()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "jax_backend": jax.default_backend(),
        "devices": [str(getattr(d, "device_kind", d)) for d in devices],
        "versions": {name: _version(name) for name in (
            "jax", "jaxlib", "flax", "tei-jax", "torch", "transformers", "sentence-transformers",
            "tokenizers", "infinity-emb")},
    }


def peak_matmul_flops(dtype: str | None = None, size: int | None = None, repeats: int = 5) -> dict:
    """Best FLOP/s of a square jnp matmul: bfloat16 8192^2 on accelerators, float32 2048^2 on CPU."""
    import jax

    on_cpu = jax.default_backend() == "cpu"
    dtype = dtype or ("float32" if on_cpu else "bfloat16")
    size = size or (2048 if on_cpu else 8192)
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (size, size), dtype=dtype)
    b = jax.random.normal(key_b, (size, size), dtype=dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, b).block_until_ready()
    times = []
    inner = 1 if on_cpu else 10
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = matmul(a, b)
        out.block_until_ready()
        times.append((time.perf_counter() - start) / inner)
    flop = 2.0 * size**3
    return {"dtype": dtype, "size": size, "flops_per_s": flop / min(times),
            "median_flops_per_s": flop / sorted(times)[len(times) // 2], "repeats": repeats, "inner": inner,
            "inputs": "random normal"}
