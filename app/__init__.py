"""The web face of tei-jax: TEI's HTTP API (Flask on gunicorn) over the `tei_jax` engine."""
