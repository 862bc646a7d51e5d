"""Registry: config.json model_type (and a few config hints) -> family module.

A family module is data plus a forward: a frozen config dataclass parsed from config.json
(fields.FamilyConfig), a weight table with the logical axes of every parameter (table.py), and
a StackSpec for the shared, scanned layers (layers.py). Adding a family means one module with
MODEL_TYPES and build(spec, dtype, attention) -> Architecture, and one entry in _FAMILIES.
"""

from __future__ import annotations

from types import ModuleType

from ..config import ModelSpec
from ..errors import ModelLoadError
from . import bert, deberta, decoder, distilbert, gemma3, gte, jina, modernbert, mpnet, nomic, pplx
from .architecture import Architecture

_FAMILIES: list[ModuleType] = [bert, distilbert, decoder, nomic, jina, gte, modernbert, mpnet, pplx, gemma3, deberta]


def _matches(module: ModuleType, spec: ModelSpec) -> bool:
    custom = getattr(module, "matches", None)
    return custom(spec) if custom is not None else spec.model_type in module.MODEL_TYPES


def family_for(spec: ModelSpec) -> ModuleType:
    """The family module that serves this spec (families with their own `matches`, such as
    JinaBERT, which is a 'bert' config with remote code, are asked first)."""
    for module in sorted(_FAMILIES, key=lambda m: not hasattr(m, "matches")):
        if _matches(module, spec):
            return module
    raise ModelLoadError(
        f"config.json: field 'model_type' = {spec.model_type!r} is not supported "
        f"(supported: {', '.join(supported_model_types())})"
    )


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    return family_for(spec).build(spec, dtype, attention)


def supported_model_types() -> list[str]:
    return sorted({t for m in _FAMILIES for t in m.MODEL_TYPES})
