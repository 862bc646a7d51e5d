"""The multi-device tests run JAX in subprocesses forced to several host devices, so the
rest of the suite keeps its one device."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
