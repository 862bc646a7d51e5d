"""`python -m tei_jax.embed`: embed a corpus into Parquet shards (see tei_jax.corpus)."""

import sys

from .corpus.cli import main

if __name__ == "__main__":
    sys.exit(main())
