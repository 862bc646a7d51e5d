"""tei-jax: text-embeddings inference in pure JAX.

    import tei_jax
    model = tei_jax.load("sentence-transformers/all-MiniLM-L6-v2")
    vectors = model.embed(["What is Deep Learning?"])

Each operation of `Model` hands its work to an executor (tei_jax/executor.py): a direct one by
default, the server's batching `Scheduler` behind `model.with_executor(...)`.
"""

from .errors import (BackendError, EmptyInputError, ModelLoadError, OverloadedError, TEIError,
                     TokenizerError, UnhealthyError, ValidationError)
from .cpu_devices import configure as configure_cpu_devices
from .executor import Call, DirectExecutor, Executor, Job
from .hub import DEFAULT_MODEL_ID
from .model import Model, load
from .tasks import ModelKind, Operation, Task

__version__ = "0.1.0"
__all__ = [
    "load", "Model", "DEFAULT_MODEL_ID", "TEIError", "ValidationError", "EmptyInputError",
    "TokenizerError", "BackendError", "OverloadedError", "UnhealthyError", "ModelLoadError",
    "configure_cpu_devices", "Call", "Job", "Executor", "DirectExecutor", "ModelKind", "Operation", "Task",
]
