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
    log.info("Args %s", {k: ("<redacted>" if k in ("api_key", "hf_token") and v else v)
                         for k, v in vars(settings).items()})
    if settings.grpc:
        from .grpc.lifecycle import serve_alone

        return serve_alone(settings)
    from .gunicorn_app import TEIApplication

    TEIApplication(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
