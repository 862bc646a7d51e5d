"""What a model family hands the engine: modules, a parameter loader, and a few facts."""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn

from ..weights import WeightReader


@dataclasses.dataclass
class Architecture:
    """A built model family.

    encoder: (input_ids, type_ids, position_ids, segment_ids) -> hidden [rows, seq, hidden].
    head: a ClassificationHead on pooled vectors (classifier/reranker) or a MaskedLMHead on
      hidden states (SPLADE), or None.
    load_params: reader -> {"encoder": ..., "head": ...} in the modules' layout.
    """

    encoder: nn.Module
    load_params: Callable[[WeightReader], dict]
    head: nn.Module | None = None
    classifier_pooling: str = "cls"
    uses_token_types: bool = False
    checkpoint_prefixes: tuple[str, ...] = ("",)
    output_size: int | None = None  # per-token width when a projection follows the stack (Qwen3 `linear`)

