"""`text-embeddings-router` / `tei-jax`: TEI's command line, served by gunicorn."""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from . import logging_setup
from .settings import parse_settings

log = logging.getLogger("app.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and env vars, then serve until SIGTERM/SIGINT."""
    settings = parse_settings(argv)
    logging_setup.configure(settings.json_output, settings.disable_spans)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if settings.data_parallel_size != 1:
        _one_cpu_device_per_core()
    log.info("Args %s", {k: ("<redacted>" if k in ("api_key", "hf_token") and v else v)
                         for k, v in vars(settings).items()})
    if settings.grpc:
        from .grpc.lifecycle import serve_alone

        return serve_alone(settings)
    from .gunicorn_app import TEIApplication

    TEIApplication(settings).run()
    return 0


def _one_cpu_device_per_core() -> None:
    """The CPU default (tei_jax/cpu_devices.py), set before the worker forks and starts JAX;
    a bad TEI_JAX_CPU_DEVICES is a startup error, not a traceback."""
    from tei_jax.cpu_devices import configure

    try:
        configure()
    except ValueError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    sys.exit(main())
