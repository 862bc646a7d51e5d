"""TEI's error types -> gRPC status codes (TEI's router/src/grpc/server.rs mapping)."""

from __future__ import annotations

import grpc

from tei_jax.errors import TEIError

CODES = {
    "Validation": grpc.StatusCode.INVALID_ARGUMENT,
    "Empty": grpc.StatusCode.INVALID_ARGUMENT,
    "Backend": grpc.StatusCode.FAILED_PRECONDITION,
    "Tokenizer": grpc.StatusCode.FAILED_PRECONDITION,
    "Overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "Unhealthy": grpc.StatusCode.UNAVAILABLE,
}
UNAUTHENTICATED_MESSAGE = "No valid auth token"


def code_for(error: TEIError) -> grpc.StatusCode:
    """The status a TEI error is answered with (FAILED_PRECONDITION for anything unknown)."""
    return CODES.get(error.error_type, grpc.StatusCode.FAILED_PRECONDITION)
