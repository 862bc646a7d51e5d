"""Rotary scalings as config.json declares them (linear, dynamic NTK, YaRN, Llama 3).

A scaling changes only the rotary inverse frequencies (and, for YaRN, multiplies cos/sin by an
attention factor), so it is data: `RopeScalingSpec` is parsed once from `rope_parameters`
(transformers 5) or the legacy `rope_scaling` + `rope_theta`, and computes its frequencies on
the host in float32, in the order transformers' rope initialisers use, so the tables agree.

Dynamic NTK recomputes frequencies only for inputs longer than `max_position_embeddings`;
since no input longer than the model's limit is run, it is plain rotary here, and a model
whose input limit exceeds that length is refused rather than run batch-dependently.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

import numpy as np

from ..errors import ModelLoadError


class RopeType(str, enum.Enum):
    DEFAULT = "default"
    LINEAR = "linear"
    DYNAMIC = "dynamic"
    YARN = "yarn"
    LLAMA3 = "llama3"


@dataclasses.dataclass(frozen=True)
class RopeScalingSpec:
    """One rotary scaling; `inv_freq(dim, theta)` and `attention_factor` are all a stack needs."""

    kind: RopeType
    factor: float = 1.0
    original_max_positions: int | None = None  # llama3, yarn
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    truncate: bool = True  # yarn: round the correction range outwards
    attention_factor: float = 1.0  # yarn: cos/sin are multiplied by it

    def inv_freq(self, dim: int, theta: float) -> np.ndarray:
        """Inverse frequencies [dim/2], float32."""
        exponents = np.arange(0, dim, 2).astype(np.float32) / np.float32(dim)
        base = (np.float32(theta) ** exponents).astype(np.float32)
        plain = (np.float32(1.0) / base).astype(np.float32)
        if self.kind in (RopeType.DEFAULT, RopeType.DYNAMIC):
            return plain
        if self.kind is RopeType.LINEAR:
            return (plain / np.float32(self.factor)).astype(np.float32)
        if self.kind is RopeType.LLAMA3:
            return self._llama3(plain)
        return self._yarn(base, dim, theta)

    def _llama3(self, inv_freq: np.ndarray) -> np.ndarray:
        old = float(self.original_max_positions)
        low_wavelen, high_wavelen = old / self.low_freq_factor, old / self.high_freq_factor
        wavelen = (np.float32(2 * math.pi) / inv_freq).astype(np.float32)
        scaled = np.where(wavelen > low_wavelen, inv_freq / np.float32(self.factor), inv_freq).astype(np.float32)
        smooth = ((old / wavelen - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)).astype(np.float32)
        smoothed = (1 - smooth) * scaled / np.float32(self.factor) + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)

    def _yarn(self, pos_freqs: np.ndarray, dim: int, theta: float) -> np.ndarray:
        def correction_dim(rotations: float) -> float:
            return (dim * math.log(self.original_max_positions / (rotations * 2 * math.pi))) / (2 * math.log(theta))

        low, high = correction_dim(self.beta_fast), correction_dim(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)
        extrapolation = (np.float32(1.0) / pos_freqs).astype(np.float32)
        interpolation = (np.float32(1.0) / (np.float32(self.factor) * pos_freqs)).astype(np.float32)
        keep = (1 - ramp).astype(np.float32)
        return (interpolation * (1 - keep) + extrapolation * keep).astype(np.float32)


def _field(params: dict, name: str, where: str, default: Any = None) -> Any:
    found = params.get(name, default)
    if found is None:
        raise ModelLoadError(f"config.json: field '{where}.{name}' is missing")
    if isinstance(found, bool) or not isinstance(found, (int, float)):
        raise ModelLoadError(f"config.json: field '{where}.{name}' = {found!r} is not a number")
    return found


def _mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def parse(config: dict, max_input_length: int | None = None) -> tuple[float, RopeScalingSpec | None]:
    """(rope theta, scaling or None for plain rotary) from `rope_parameters` or the legacy
    `rope_theta` + `rope_scaling`; every other rope type is refused by field name."""
    params = config.get("rope_parameters")
    legacy = config.get("rope_scaling")
    where, source = ("rope_parameters", params) if isinstance(params, dict) else ("rope_scaling", legacy)
    if isinstance(params, dict) and isinstance(legacy, dict):
        legacy_kind = legacy.get("rope_type", legacy.get("type", "default"))
        if legacy_kind != params.get("rope_type", "default"):
            where, source = "rope_scaling", {**params, **legacy}
    theta = float(config.get("rope_theta") or (params or {}).get("rope_theta") or 10000.0)
    if not isinstance(source, dict):
        if source is not None:
            raise ModelLoadError(f"config.json: field '{where}' = {source!r} is not supported")
        return theta, None
    raw = source.get("rope_type", source.get("type", "default"))
    try:
        kind = RopeType(raw)
    except ValueError:
        raise ModelLoadError(
            f"config.json: field '{where}.rope_type' = {raw!r} is not supported "
            f"(supported: {', '.join(repr(t.value) for t in RopeType)})") from None
    if kind is RopeType.DEFAULT:
        return theta, None
    if kind is RopeType.LINEAR:
        return theta, RopeScalingSpec(kind, factor=float(_field(source, "factor", where)))
    if kind is RopeType.DYNAMIC:
        limit = config.get("max_position_embeddings")
        if max_input_length is not None and isinstance(limit, int) and max_input_length > limit:
            raise ModelLoadError(
                f"config.json: field '{where}.rope_type' = 'dynamic' with an input limit ({max_input_length}) "
                f"beyond max_position_embeddings ({limit}) is not supported (frequencies would depend on the batch)")
        return theta, RopeScalingSpec(kind, factor=float(_field(source, "factor", where)))
    if kind is RopeType.LLAMA3:
        return theta, RopeScalingSpec(
            kind, factor=float(_field(source, "factor", where)),
            original_max_positions=int(_field(source, "original_max_position_embeddings", where)),
            low_freq_factor=float(_field(source, "low_freq_factor", where)),
            high_freq_factor=float(_field(source, "high_freq_factor", where)))
    original = int(_field(source, "original_max_position_embeddings", where))
    factor = source.get("factor")
    factor = float(config["max_position_embeddings"] / original if factor is None else _field(source, "factor", where))
    attention = source.get("attention_factor")
    if attention is None:
        mscale, mscale_all = source.get("mscale"), source.get("mscale_all_dim")
        attention = _mscale(factor, mscale) / _mscale(factor, mscale_all) if mscale and mscale_all else _mscale(factor)
    return theta, RopeScalingSpec(
        kind, factor=factor, original_max_positions=original, beta_fast=float(source.get("beta_fast") or 32),
        beta_slow=float(source.get("beta_slow") or 1), truncate=bool(source.get("truncate", True)),
        attention_factor=float(attention))
