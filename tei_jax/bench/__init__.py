"""`python -m tei_jax.bench`: measure tei-jax against its peers on the same weights and inputs.

Engine mode compares `tei_jax.load(...).embed` with sentence-transformers in one process,
alternating rounds so machine noise hits both; server mode drives HTTP load at our
`text-embeddings-router` and, where installed, at infinity-emb serving the same folder.
Results go to a table on stdout, JSON and PNG plots (see bench/README.md).
"""
