"""Errors with TEI's error types.

The engine raises these; the web layer maps `error_type` to an HTTP status. Keeping the
type names here (PascalCase, exactly as TEI serialises them) and the wording by type means a
notebook user and an HTTP client see the same words for the same failure.

TEI's core words its errors "<prefix><detail>" by type ("Input validation error: ...",
"Backend error: ...", "tokenizer error ..."), while checks its HTTP handlers make themselves
(an empty list of texts, the client batch size) go out bare. So the type, not the text, decides
the prefix: raise with the detail only, and `message` is what TEI would answer.
"""


class TEIError(Exception):
    """Base class: `error_type` is one of TEI's ErrorType names; `message` is TEI's text
    (the type's `prefix`, then the detail raised with)."""

    error_type = "Backend"
    prefix = ""

    def __init__(self, detail: str):
        self.detail = detail
        self.message = self.prefix + detail
        super().__init__(self.message)


class ValidationError(TEIError, ValueError):
    """Bad request content: too many tokens, bad dimensions, unknown prompt (422)."""

    error_type = "Validation"
    prefix = "Input validation error: "


class EmptyInputError(TEIError, ValueError):
    """An empty text or id list (400)."""

    error_type = "Empty"
    prefix = "Input validation error: "


class EmptyBatchError(EmptyInputError):
    """An empty list of texts (`texts`, `inputs.sentences`, /tokenize's `inputs`): TEI's
    handlers refuse these themselves, in their own words (no prefix)."""

    prefix = ""


class TokenizerError(TEIError, ValueError):
    """The tokenizer refused the input (422)."""

    error_type = "Tokenizer"
    prefix = "tokenizer error "


class BackendError(TEIError):
    """Wrong model type for the call, or inference failed (424)."""

    error_type = "Backend"
    prefix = "Backend error: "


class NaNScoreError(BackendError):
    """A classifier or reranker score came out NaN: TEI's handlers check the scores themselves
    and answer "score is NaN" (no prefix)."""

    prefix = ""


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
