"""What a model family hands the engine: modules, the weight table, and a few facts."""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn

from ..weights import WeightReader
from .fields import FamilyConfig
from .table import Place, WeightTable


@dataclasses.dataclass
class Architecture:
    """A built model family.

    encoder: (input_ids, type_ids, position_ids, segment_ids) -> hidden [rows, seq, hidden].
    head: a ClassificationHead on pooled vectors (classifier/reranker) or a MaskedLMHead on
      hidden states (SPLADE), or None.
    table: every parameter of {"encoder": ..., "head": ...}: checkpoint names, conversion, axes.
    config: the family's typed config, as parsed from config.json.
    """

    encoder: nn.Module
    table: WeightTable
    config: FamilyConfig | None = None
    head: nn.Module | None = None
    classifier_pooling: str = "cls"
    uses_token_types: bool = False
    checkpoint_prefixes: tuple[str, ...] = ("",)
    output_size: int | None = None  # per-token width when a projection follows the stack (Qwen3 `linear`)
    # A fixed map of every pooled embedding, after any Dense modules (pplx's int8 levels).
    pooled_transform: Callable | None = None

    def load_params(self, reader: WeightReader, place: Place | None = None) -> dict:
        """{"encoder": ..., "head": ...} in the modules' layout; raises ModelLoadError listing
        the missing and the unused checkpoint tensors if the checkpoint does not match.
        `place(axes, host_array)` moves each parameter to its devices as it is read."""
        return self.table.load(reader, place)

    def param_axes(self) -> dict:
        """The logical axis names of every parameter, shaped like load_params' tree."""
        return self.table.axes()
