"""Errors with TEI's error types.

The engine raises these; the web layer maps `error_type` to an HTTP status. Keeping the
type names here (PascalCase, exactly as TEI serialises them) means a notebook user and an HTTP
client see the same words for the same failure.
"""


class TEIError(Exception):
    """Base class: `error_type` is one of TEI's ErrorType names."""

    error_type = "Backend"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ValidationError(TEIError, ValueError):
    """Bad request content: too many tokens, bad dimensions, unknown prompt (422)."""

    error_type = "Validation"


class EmptyInputError(TEIError, ValueError):
    """An empty input, batch or id list (400)."""

    error_type = "Empty"


class TokenizerError(TEIError, ValueError):
    """The tokenizer refused the input (422)."""

    error_type = "Tokenizer"


class BackendError(TEIError):
    """Wrong model type for the call, or inference failed (424)."""

    error_type = "Backend"


class OverloadedError(TEIError):
    """No concurrency permit free (429)."""

    error_type = "Overloaded"


class UnhealthyError(TEIError):
    """The backend is not ready or failed its health check (503)."""

    error_type = "Unhealthy"


class ModelLoadError(TEIError):
    """A model folder that cannot be served: names the file and field at fault. Raised by
    `load()` (the server exits at start with it), so no request ever answers with it; its
    type is TEI's Backend."""

    error_type = "Backend"
