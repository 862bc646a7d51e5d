"""Embed a whole corpus into Parquet shards: on this machine (`run_local`) or on Ray Data
(`run_ray`, with `pip install 'tei-jax[ray]'`). The command line is `python -m tei_jax.embed`.

    from tei_jax.corpus import CorpusJob, run_local
    summary = run_local(CorpusJob(model_id="BAAI/bge-small-en-v1.5", input="docs/", output="vectors/"))
"""

from .job import CorpusJob, Summary
from .local import run_local
from .readers import CorpusError, Format
from .tasks import Task, TaskOptions
from .writer import OutputError

__all__ = ["CorpusJob", "Summary", "run_local", "run_ray", "CorpusError", "OutputError", "Format", "Task",
           "TaskOptions"]


def run_ray(*args, **kwargs):
    """`ray_runner.run_ray`, imported on first use so Ray stays optional."""
    from .ray_runner import run_ray as run

    return run(*args, **kwargs)
