"""Shared test set-up: tests/ on sys.path (for tiny_models), no persistent compile cache."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tests count compilations; a persistent cache shared across runs would make that depend on
# what ran before. Tests that exercise the cache pass their own folder.
os.environ.setdefault("TEI_JAX_COMPILE_CACHE", "none")
