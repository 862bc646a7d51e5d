"""Shared test set-up: tests/ on sys.path (for tiny_models), a per-session compile cache."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One fresh persistent compile cache per test session: the many tiny models built alike in
# different tests compile each program once, and nothing carries over from an earlier run.
# (Engines count their own compilations, so cache hits do not change what tests assert.)
# Tests that exercise the cache pass their own folder.
if "TEI_JAX_COMPILE_CACHE" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="tei-jax-test-cache-")
    atexit.register(shutil.rmtree, _cache, True)
    os.environ["TEI_JAX_COMPILE_CACHE"] = _cache
