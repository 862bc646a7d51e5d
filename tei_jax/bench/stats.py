"""Summaries of timed runs: percentiles and per-round throughput."""

from __future__ import annotations

import statistics
from typing import Sequence

import numpy as np


def percentiles_ms(latencies_s: Sequence[float]) -> dict:
    """p50/p90/p99/mean/max of latencies in milliseconds."""
    if not latencies_s:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    values = np.asarray(latencies_s, dtype=np.float64) * 1e3
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
        "max_ms": float(values.max()),
    }


def summarize_rounds(rounds: Sequence[dict], key: str) -> dict:
    """Median and best of a per-round rate (higher is better)."""
    values = [r[key] for r in rounds]
    return {"median": statistics.median(values), "best": max(values), "all": values}


def paired_ratios(ours: Sequence[dict], peer: Sequence[dict], key: str) -> list[float]:
    """Ours / peer within each round: both ran back to back, so slow drifts in background
    load cancel out better than in a ratio of medians."""
    return [a[key] / b[key] for a, b in zip(ours, peer)]
