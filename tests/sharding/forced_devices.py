"""The environment of a subprocess that sees several forced CPU devices."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def forced_devices_env(count: int) -> dict:
    """The environment of a subprocess that sees `count` CPU devices and imports this checkout."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


# Measured on the 2-core box: the multi-device checks used 211 CPU-seconds in 101 s when they had
# the cores to themselves, and 75 in 105 s beside other work. Their many device threads spin while
# they wait for each other, and beside a pytest-xdist worker that spinning takes the worker's
# core. Run at a lower priority, they get every cycle the tests leave and no more.
NICENESS = 10


def python_command(*args: str) -> list[str]:
    """`python ARGS` for a forced-devices subprocess, run at lower priority (`nice`) when the
    machine has `nice`."""
    command = [sys.executable, *args]
    nice = shutil.which("nice")
    return [nice, "-n", str(NICENESS), *command] if nice else command
