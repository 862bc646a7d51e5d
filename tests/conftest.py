"""Shared test set-up: tests/ on sys.path (for tiny_models), one JAX compilation cache."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
