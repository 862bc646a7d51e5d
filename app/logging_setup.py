"""Log format for the server: TEI-like text lines, or JSON lines with `--json-output`.

The same formatter is handed to gunicorn (its `logconfig_dict`), so the master, the worker and
our own modules all log one way. In JSON mode, a record emitted while a request is handled
carries that request's span (method, path, trace id) unless `--disable-spans`.
"""

from __future__ import annotations

import contextvars
import datetime
import logging
import os

import orjson

# The span of the request being handled on this thread (set by the web layer).
current_span: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tei_jax_span", default=None)


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`2026-01-01T00:00:00.000000Z  INFO app.service: message` (tracing-subscriber's look)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:>5} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, message, target (+ span, exception)."""

    def __init__(self, with_spans: bool = True):
        super().__init__()
        self.with_spans = with_spans

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "message": record.getMessage(),
            "target": record.name,
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        span = current_span.get()
        if self.with_spans and span:
            data["span"] = span
        return orjson.dumps(data, default=str).decode()


def formatter_config(json_output: bool, disable_spans: bool) -> dict:
    """A dictConfig `formatters` entry for our formatter."""
    if json_output:
        return {"()": JSONFormatter, "with_spans": not disable_spans}
    return {"()": TextFormatter}


def log_level() -> str:
    """TEI reads LOG_LEVEL (default info)."""
    level = os.environ.get("LOG_LEVEL", "info").upper()
    return level if level in logging.getLevelNamesMapping() else "INFO"


def dict_config(json_output: bool, disable_spans: bool) -> dict:
    """logging.config.dictConfig for the whole process (also used as gunicorn's logconfig_dict)."""
    level = log_level()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tei": formatter_config(json_output, disable_spans)},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "tei", "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
            "jax": {"level": "WARNING"},
            "absl": {"level": "WARNING"},
        },
    }


def configure(json_output: bool, disable_spans: bool) -> None:
    import logging.config

    logging.config.dictConfig(dict_config(json_output, disable_spans))
