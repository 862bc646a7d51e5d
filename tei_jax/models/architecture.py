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


def param_loader(load_encoder: Callable[[WeightReader, object], dict], cfg: object,
                 load_head: Callable[[WeightReader], dict] | None = None) -> Callable[[WeightReader], dict]:
    """The `load_params` most families need: their encoder's weights, then the head's if any."""

    def load_params(reader: WeightReader) -> dict:
        params = {"encoder": load_encoder(reader, cfg)}
        if load_head is not None:
            params["head"] = load_head(reader)
        return params

    return load_params
