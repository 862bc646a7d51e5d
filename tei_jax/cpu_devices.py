"""One JAX CPU device per core: the CPU default, set before JAX's backend starts.

Why: XLA's CPU backend spreads a matmul over every core, but many of a forward's other ops
(element-wise fusions, the layer scan's bookkeeping, transposes) run on one thread and leave
the other cores idle. With one CPU device per core and a batch's rows split over them (data
parallelism, tei_jax/sharding.py), the devices' executions run side by side and fill those
gaps (MiniLM, 2-core box: see README "Benchmarks").

JAX fixes its CPU device count when its backend starts (the first array, `jax.devices()`,
`jax.default_backend()`), so this only works before that, and it never overrides a count the
user chose (`jax_num_cpu_devices`, `JAX_NUM_CPU_DEVICES`, or XLA_FLAGS'
`--xla_force_host_platform_device_count`). `TEI_JAX_CPU_DEVICES=1` (or `cpu_devices=1` in
`tei_jax.load`) keeps JAX's single CPU device; `TEI_JAX_CPU_DEVICES=N` asks for N.
"""

from __future__ import annotations

import enum
import importlib.metadata
import importlib.util
import logging
import os

import jax

log = logging.getLogger(__name__)

ENV = "TEI_JAX_CPU_DEVICES"
MAX_DEFAULT = 8  # measured only up to 2 cores; past this a machine's cores are better spent on larger batches
_FORCE_FLAG = "--xla_force_host_platform_device_count"
_ACCELERATOR_PACKAGES = ("libtpu", "jax-cuda12-plugin", "jax-cuda13-plugin", "jax-rocm60-plugin",
                         "jax-rocm7-plugin", "jax-metal")
_advised = False


class Outcome(str, enum.Enum):
    """What `configure` did, and why."""

    APPLIED = "applied"  # the CPU device count was set
    USER_SET = "user_set"  # the user chose a count (JAX config, env or XLA_FLAGS): left alone
    OPTED_OUT = "opted_out"  # asked for one device (TEI_JAX_CPU_DEVICES=1 / cpu_devices=1), or one core
    INITIALISED = "initialised"  # JAX's backend had already started: its devices are kept
    ACCELERATOR = "accelerator"  # a GPU/TPU plugin or JAX_PLATFORMS other than cpu: not a CPU-only process


def core_count() -> int:
    """Cores this process may run on (its CPU affinity, which a container's cpuset limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def requested_count(count: int | None = None) -> int:
    """The device count asked for: `count`, else $TEI_JAX_CPU_DEVICES, else one per core (at
    most MAX_DEFAULT)."""
    if count is None:
        raw = os.environ.get(ENV, "").strip()
        if raw and raw.lower() != "auto":
            try:
                count = int(raw)
            except ValueError:
                raise ValueError(f"{ENV} must be a positive integer or 'auto', got {raw!r}") from None
    if count is None:
        return max(1, min(core_count(), MAX_DEFAULT))
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"cpu_devices must be a positive integer, got {count!r}")
    return count


def user_count() -> int | None:
    """The CPU device count the user configured, if any (JAX config/env, or XLA_FLAGS)."""
    configured = jax.config.jax_num_cpu_devices
    if configured is not None and configured >= 0:
        return int(configured)
    for part in os.environ.get("XLA_FLAGS", "").split():
        if part.startswith(_FORCE_FLAG + "="):
            try:
                return int(part.split("=", 1)[1])
            except ValueError:
                return None
    return None


def accelerator_possible() -> bool:
    """Whether JAX may start a GPU or TPU backend here (then the default backend is not CPU)."""
    platforms = os.environ.get("JAX_PLATFORMS", "") or (jax.config.jax_platforms or "")
    if platforms:
        return platforms.split(",")[0].strip().lower() != "cpu"
    for name in _ACCELERATOR_PACKAGES:
        try:
            importlib.metadata.version(name)
            return True
        except importlib.metadata.PackageNotFoundError:
            continue
    return _has_jax_plugins()


def _has_jax_plugins() -> bool:
    """PJRT plugins as JAX discovers them: modules of the `jax_plugins` namespace package, or
    `jax_plugins` entry points."""
    import pkgutil

    if any(True for _ in importlib.metadata.entry_points(group="jax_plugins")):
        return True
    if importlib.util.find_spec("jax_plugins") is None:
        return False
    import jax_plugins

    return any(True for _ in pkgutil.iter_modules(jax_plugins.__path__))


def backend_started() -> bool:
    """Whether JAX's backends are initialised (the device count can no longer change)."""
    from jax._src import xla_bridge  # no public API tells this without starting the backend

    return xla_bridge.backends_are_initialized()


def configure(count: int | None = None) -> Outcome:
    """Set JAX's CPU device count to `count` (default: $TEI_JAX_CPU_DEVICES, else one per core)
    if that is still possible and nobody chose one. Safe to call often; never raises for a
    started backend (it logs, once, how to get the setup)."""
    wanted = requested_count(count)
    if user_count() is not None:
        return Outcome.USER_SET
    if wanted == 1:
        return Outcome.OPTED_OUT
    if backend_started():
        _advise(wanted)
        return Outcome.INITIALISED
    if accelerator_possible():
        return Outcome.ACCELERATOR
    try:
        jax.config.update("jax_num_cpu_devices", wanted)
    except RuntimeError:  # the backend started between the check and the update
        _advise(wanted)
        return Outcome.INITIALISED
    log.info("JAX CPU devices: %d (one per core; %s=1 keeps one)", wanted, ENV)
    return Outcome.APPLIED


def _advise(wanted: int) -> None:
    """Once per process: on a CPU backend with fewer devices than asked for, say how to get them."""
    global _advised
    if _advised or jax.default_backend() != "cpu" or len(jax.devices()) >= wanted:
        return
    _advised = True
    log.info("JAX's backend started before tei_jax could give it %d CPU devices (one per core, faster "
             "on CPU); running on %d. Call tei_jax.configure_cpu_devices() (or "
             "jax.config.update('jax_num_cpu_devices', %d)) before any JAX work, or set %s=1 to "
             "silence this.", wanted, len(jax.devices()), wanted, ENV)
