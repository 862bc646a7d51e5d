"""Reading config.json fields for a family, with errors that name the field.

Families whose checkpoints come in two config spellings (remote code on the hub, and
transformers' native class) read each value under all of its names; every value a family
cannot honour is refused at load time with the field's name, never turned into wrong numbers.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..errors import ModelLoadError
from .layers import ACTIVATIONS

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


def activation_name(field: str, name: Any) -> str:
    if name not in ACTIVATIONS:
        raise unsupported(field, name, "supported: " + ", ".join(sorted(ACTIVATIONS)))
    return name


def default_rope(config: dict, field: str = "rope_parameters") -> None:
    """transformers 5 rope_parameters (or a legacy rope_scaling) must describe plain rotary."""
    params = config.get(field)
    if isinstance(params, dict) and params.get("rope_type", "default") != "default":
        raise unsupported(f"{field}.rope_type", params["rope_type"], "only 'default' rotary")
    if config.get("rope_scaling") is not None:
        raise unsupported("rope_scaling", config["rope_scaling"], "no rotary scaling for this family")
