"""Model FLOPs from shapes (config.json), to turn tokens/s into a fraction of peak FLOP/s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

GATED = ("qwen2", "qwen3", "mistral", "llama", "gemma", "gemma2", "gemma3_text")
CAUSAL = GATED


def layer_shapes(model_dir: Path) -> dict:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    return {
        "hidden": hidden,
        "layers": config["num_hidden_layers"],
        "heads": heads,
        "kv_heads": config.get("num_key_value_heads") or heads,
        "head_dim": head_dim,
        "intermediate": config["intermediate_size"],
        "gated": config.get("model_type") in GATED,
        "causal": config.get("model_type") in CAUSAL,
    }


def sequence_flops(shapes: dict, length: int) -> float:
    """Forward FLOPs of one sequence (matmuls and attention; embeddings and pooling ignored).

    Per token and layer: Q, K, V, O projections and the MLP (2 FLOPs per multiply-add);
    attention scores and the weighted sum add 4 * length * heads * head_dim per token
    (half that for a causal model)."""
    h, hd = shapes["hidden"], shapes["head_dim"]
    q_out, kv_out = shapes["heads"] * hd, shapes["kv_heads"] * hd
    mlp_mats = 3 if shapes["gated"] else 2
    per_token = 2 * (h * q_out + 2 * h * kv_out + q_out * h + mlp_mats * h * shapes["intermediate"])
    attention = 4 * length * q_out * (0.5 if shapes["causal"] else 1.0)
    return float(shapes["layers"] * length * (per_token + attention))


def workload_flops(model_dir: Path, lengths: Iterable[int]) -> float:
    """Useful FLOPs of a workload: real tokens only, whatever padding a system adds."""
    shapes = layer_shapes(model_dir)
    return sum(sequence_flops(shapes, n) for n in lengths)
