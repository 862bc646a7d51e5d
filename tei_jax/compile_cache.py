"""JAX's persistent compilation cache, on by default.

Compiling every (task, shape) of a model takes most of a server's start-up. JAX can keep the
compiled executables on disk, keyed by the program and the device, so a second start (or a
second process on the same machine) loads them instead of compiling. The cache folder is
process-wide JAX state, so it is set once, before the first compilation that should use it.

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
    """Point JAX's persistent compilation cache at the resolved folder (idempotent).

    Every compilation is cached, however quick: a bucketed model compiles dozens of small
    programs and together they are what a restart waits for. An unwritable folder turns the
    cache off with a warning instead of failing the load.
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
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _active = folder
    log.info("compile cache: %s", folder)
    return folder


def active() -> Path | None:
    """The folder in use, or None when caching is off or not yet enabled."""
    return _active
