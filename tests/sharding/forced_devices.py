"""The environment of a subprocess that sees several forced CPU devices."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# Eigen's matmul/convolution thread pool off in forced-device subprocesses: their `count`
# devices already run side by side on the 2 cores, and the pool's threads on top of them only
# contend. Quiet box, cold compile cache, the parity checks (tests/sharding/test_parity.py):
# 51.3 / 52.5 s wall and 68.3 / 71.7 CPU-s with it, 44.2 s and 60.7 CPU-s without, same 37 records.
# The single-device references they compare with run in the same process, with the same flags.
SUBPROCESS_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false"


def forced_devices_env(count: int) -> dict:
    """The environment of a subprocess that sees `count` CPU devices and imports this checkout."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count} "
                        + SUBPROCESS_XLA_FLAGS).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


# Measured on the 2-core box (an earlier head): the multi-device checks used 211 CPU-seconds in
# 101 s when they had the cores to themselves, and 75 in 105 s beside other work (now about 70 in
# 52 s alone, above). Beside a pytest-xdist worker their device threads take the worker's core.
# Run at a lower priority, they get every cycle the tests leave and no more.
NICENESS = 10


def python_command(*args: str) -> list[str]:
    """`python ARGS` for a forced-devices subprocess, run at lower priority (`nice`) when the
    machine has `nice`."""
    command = [sys.executable, *args]
    nice = shutil.which("nice")
    return [nice, "-n", str(NICENESS), *command] if nice else command
