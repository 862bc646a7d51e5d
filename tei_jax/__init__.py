"""tei-jax: text-embeddings inference in pure JAX.

    import tei_jax
    model = tei_jax.load("sentence-transformers/all-MiniLM-L6-v2")
    vectors = model.embed(["What is Deep Learning?"])
"""

from .errors import (BackendError, EmptyInputError, ModelLoadError, OverloadedError, TEIError,
                     TokenizerError, UnhealthyError, ValidationError)
from .hub import DEFAULT_MODEL_ID
from .model import Model, load

__version__ = "0.1.0"
__all__ = [
    "load", "Model", "DEFAULT_MODEL_ID", "TEIError", "ValidationError", "EmptyInputError",
    "TokenizerError", "BackendError", "OverloadedError", "UnhealthyError", "ModelLoadError",
]
