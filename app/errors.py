"""TEI's error responses: JSON {"error", "error_type"} (OpenAI routes: {"message", "code",
"type"}) with the status of each ErrorType, and the plain-text bodies TEI's web framework gives
for malformed requests (bad JSON 400, wrong shape 422, wrong content type 415, too large 413).
"""

from __future__ import annotations

import orjson
from flask import Response

from tei_jax.errors import TEIError, ValidationError

STATUS = {
    "Unhealthy": 503,
    "Backend": 424,
    "Overloaded": 429,
    "Tokenizer": 422,
    "Validation": 422,
    "Empty": 400,
}

# te_request_failure{err=...} for each ErrorType (model-type errors are counted by the caller).
FAILURE_LABEL = {
    "Unhealthy": "inference",
    "Backend": "inference",
    "Overloaded": "overloaded",
    "Tokenizer": "tokenization",
    "Validation": "validation",
    "Empty": "validation",
}


class PlainError(Exception):
    """A request the framework refuses before TEI's handler runs: a plain-text body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        return Response(self.message, status=self.status, mimetype="text/plain")


class BareValidationError(ValidationError):
    """A refusal TEI's handler words itself (an `ErrorResponse` built there, such as a /vertex
    instance serde refused): its text goes out without the core's prefix."""

    prefix = ""


class BatchSizeError(ValidationError):
    """More inputs than --max-client-batch-size: TEI's handlers check it, in their own words."""

    prefix = ""


def batch_size_error(size: int, limit: int) -> TEIError:
    return BatchSizeError(f"batch size {size} > maximum allowed batch size {limit}")


def tei_response(error: TEIError, openai: bool = False) -> Response:
    """The JSON body and status of a TEI error (OpenAI shape on the OpenAI routes)."""
    status = STATUS.get(error.error_type, 424)
    message = error.message  # worded by its type (tei_jax.errors)
    if openai:
        body = {"message": message, "code": status, "type": error.error_type}
    else:
        body = {"error": message, "error_type": error.error_type}
    return Response(orjson.dumps(body), status=status, mimetype="application/json")
