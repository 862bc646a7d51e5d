"""The compile-cache folder, on by default: where compiled programs are kept across starts.

Compiling every (task, shape) of a model takes most of a server's start-up. The folder holds
tei_jax's executable store (tei_jax/executables.py, in `executables/`): whole compiled
executables, so a second start (or a second process on the same machine) loads them without
tracing, lowering or compiling. JAX's own persistent compilation cache, which still traces and
lowers every shape before its lookup, is switched off while a folder is in use: the store
replaces it, and XLA:CPU cannot re-serialize the executables that cache reads back. The
setting is process-wide, so it is made once, before the first compilation.

Where it goes, in order: the `path` given to `enable`, the `TEI_JAX_COMPILE_CACHE` environment
variable, then `~/.cache/tei-jax/jax`. The value `none` (or `off`, `false`, `0`, empty) turns
caching off.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax

log = logging.getLogger(__name__)

ENV_VAR = "TEI_JAX_COMPILE_CACHE"
DEFAULT_DIR = Path.home() / ".cache" / "tei-jax" / "jax"
_DISABLED = {"none", "off", "false", "0", ""}
_active: Path | None = None


def resolve(path: str | os.PathLike | None = None) -> Path | None:
    """The cache folder to use, or None when caching is turned off."""
    value = os.fspath(path) if path is not None else os.environ.get(ENV_VAR)
    if value is None:
        return DEFAULT_DIR
    if value.strip().lower() in _DISABLED:
        return None
    return Path(value).expanduser()


def enable(path: str | os.PathLike | None = None) -> Path | None:
    """Use the resolved folder for compiled executables (idempotent); returns it, or None
    when caching is off.

    Every program is kept, however quick to compile: a bucketed model compiles dozens of
    small programs and together they are what a restart waits for. An unwritable folder
    turns caching off with a warning instead of failing the load.
    """
    global _active
    folder = resolve(path)
    if folder == _active:
        return folder
    if folder is None:
        jax.config.update("jax_enable_compilation_cache", False)
        _active = None
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("compile cache disabled: cannot create %s (%s)", folder, exc)
        jax.config.update("jax_enable_compilation_cache", False)
        _active = None
        return None
    jax.config.update("jax_enable_compilation_cache", False)  # the executable store replaces it
    _active = folder
    log.info("compile cache: %s", folder)
    return folder


def active() -> Path | None:
    """The folder in use, or None when caching is off or not yet enabled."""
    return _active
