"""Reading config.json into a family's typed, frozen config, with errors that name the field.

A family declares its config as a frozen dataclass deriving from `FamilyConfig`, each field
saying which config.json names hold it (`json_field`); `parse` reads and converts every field
by its type (int, float, bool, str, an enum such as `Activation`, or `X | None`), so the rest of
the family works with typed values, never with the raw dict. Families whose checkpoints come in
two config spellings (remote code on the hub, and transformers' native class) list every name a
value may have; every value a family cannot honour is refused at load time with the field's
name, never turned into wrong numbers.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, Iterable

from ..errors import ModelLoadError
from .layers import Activation

_MISSING = object()


def value(config: dict, *names: str, default: Any = _MISSING) -> Any:
    """The value of the first of `names` present (not None) in config; `default` otherwise."""
    for name in names:
        if config.get(name) is not None:
            return config[name]
    if default is _MISSING:
        raise ModelLoadError(f"config.json: field '{names[0]}' is missing")
    return default


def nested(config: dict, path: str, default: Any = _MISSING) -> Any:
    """A value under a dotted path such as 'rope_parameters.rope_theta'."""
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            if default is _MISSING:
                raise ModelLoadError(f"config.json: field '{path}' is missing")
            return default
        node = node[part]
    return node


def unsupported(field: str, found: Any, supported: str) -> ModelLoadError:
    return ModelLoadError(f"config.json: field '{field}' = {found!r} is not supported ({supported})")


def require(config: dict, field: str, allowed: Iterable[Any], default: Any = None) -> Any:
    """The field's value (default if absent), which must be one of `allowed`."""
    allowed = tuple(allowed)
    found = config.get(field, default)
    if found is None:
        found = default
    if found not in allowed:
        raise unsupported(field, found, "supported: " + ", ".join(repr(a) for a in allowed))
    return found


def activation_name(field: str, name: Any) -> Activation:
    """An activation by its config.json spelling, refused by field name if unknown."""
    return _enum(Activation, name, field)


def _enum(kind: type[enum.Enum], raw: Any, field: str) -> enum.Enum:
    try:
        return kind(raw)
    except ValueError:
        raise unsupported(field, raw, "supported: " + ", ".join(repr(m.value) for m in kind)) from None


def json_field(*names: str, default: Any = _MISSING, allowed: Iterable[Any] | None = None) -> Any:
    """A FamilyConfig field read from the first of `names` present in config.json; `allowed`
    restricts the values a family runs (anything else is refused by name)."""
    return dataclasses.field(metadata={"names": names, "default": default,
                                       "allowed": None if allowed is None else tuple(allowed)})


def derived() -> Any:
    """A FamilyConfig field the family computes itself and passes to `parse`."""
    return dataclasses.field(metadata={"names": ()})


def _convert(raw: Any, kind: Any, field: str) -> Any:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if raw is None:
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return _enum(kind, raw, field)
    if kind is bool:
        if not isinstance(raw, (bool, int)):
            raise unsupported(field, raw, "expected true or false")
        return bool(raw)
    if kind in (int, float):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (kind is int and raw != int(raw)):
            raise unsupported(field, raw, f"expected {'an integer' if kind is int else 'a number'}")
        return kind(raw)
    return raw


class FamilyConfig:
    """Base of a family's frozen config dataclass: `parse(config.json dict, **derived values)`."""

    @classmethod
    def parse(cls, config: dict, **computed: Any):
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in computed:
                values[f.name] = computed[f.name]
                continue
            names, allowed = f.metadata.get("names"), f.metadata.get("allowed")
            if not names:
                raise TypeError(f"{cls.__name__}.{f.name} is derived: pass it to parse()")
            raw = value(config, *names, default=f.metadata["default"])
            if allowed is not None and raw not in allowed:
                raise unsupported(names[0], raw, "supported: " + ", ".join(repr(a) for a in allowed))
            values[f.name] = _convert(raw, hints[f.name], names[0])
        return cls(**values)


class WidthSplitHeads:
    """Mixin for configs without a head width in config.json: head_dim = hidden_size //
    num_heads (a family that reads one declares a `head_dim` field instead)."""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads  # type: ignore[attr-defined]


def default_rope(config: dict, field: str = "rope_parameters") -> None:
    """transformers 5 rope_parameters (or a legacy rope_scaling) must describe plain rotary."""
    params = config.get(field)
    if isinstance(params, dict) and params.get("rope_type", "default") != "default":
        raise unsupported(f"{field}.rope_type", params["rope_type"], "only 'default' rotary")
    if config.get("rope_scaling") is not None:
        raise unsupported("rope_scaling", config["rope_scaling"], "no rotary scaling for this family")
