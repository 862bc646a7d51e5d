"""`python -m tei_jax.embed` / `tei-jax-embed`: embed a corpus into Parquet shards.

    tei-jax-embed --model-id BAAI/bge-base-en-v1.5 --input docs/ --output vectors/
    tei-jax-embed ... --ray                       # the same job on a local Ray cluster
    tei-jax-embed ... --ray ray://head:10001      # ... or on an existing one
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from ..hub import DEFAULT_MODEL_ID
from .job import CorpusJob
from .readers import Format
from .tasks import Task, TaskOptions

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


def _bool(value: str) -> bool:
    lowered = str(value).lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {value!r} (true or false)")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tei-jax-embed", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io = parser.add_argument_group("corpus")
    io.add_argument("--input", required=True, help="a .jsonl/.parquet/.csv/.txt file, or a folder of them")
    io.add_argument("--output", required=True, help="output folder of Parquet shards (resumed if it holds this job)")
    io.add_argument("--input-format", choices=[f.value for f in Format], help="override the format given by suffixes")
    io.add_argument("--text-field", default="text", help="field or column holding the text (not for .txt)")
    io.add_argument("--id-field", help="field or column holding the id, written as a string (default: row number)")
    io.add_argument("--task", choices=[t.value for t in Task], default=Task.EMBED.value,
                    help="embed: dense vectors; sparse: SPLADE index/value lists; predict: labels and scores")
    io.add_argument("--shard-size", type=_positive, default=10_000, help="input rows per output shard")
    io.add_argument("--batch-docs", type=_positive, default=1024, help="documents per model call")
    io.add_argument("--strict", action="store_true", help="fail on the first bad row instead of skipping it")
    io.add_argument("--no-progress", action="store_true", help="no progress bar")
    io.add_argument("--summary-json", help="also write the summary as JSON to this file")

    model = parser.add_argument_group("model (tei_jax.load options)")
    model.add_argument("--model-id", default=DEFAULT_MODEL_ID, help="a hub id or a local model folder")
    model.add_argument("--revision")
    model.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="default: float32 on CPU, "
                       "bfloat16 on accelerators")
    model.add_argument("--pooling", help="cls, mean, last_token, splade, max, weightedmean, mean_sqrt_len")
    model.add_argument("--max-batch-tokens", type=_positive, default=16384)
    model.add_argument("--max-batch-requests", type=_positive)
    model.add_argument("--batch-tokens", type=_positive, help="tokens a batch aims at (default: 1024 on CPU)")
    model.add_argument("--auto-truncate", type=_bool, default=True, metavar="BOOL")
    model.add_argument("--attention", choices=("auto", "xla", "cudnn", "pallas"), default="auto")
    model.add_argument("--packing", type=_bool, default=True, metavar="BOOL")
    model.add_argument("--dense-path")
    model.add_argument("--default-prompt-name")
    model.add_argument("--default-prompt")
    model.add_argument("--compile-cache-dir", help="JAX compile cache (default ~/.cache/tei-jax/jax; none: off)")
    model.add_argument("--hf-token")
    model.add_argument("--huggingface-hub-cache")
    model.add_argument("--chunk-long-inputs", action="store_true",
                       help="embed a text longer than the model's limit as token windows pooled by a "
                            "token-weighted mean, instead of truncating it")
    model.add_argument("--chunk-overlap", type=int, default=0, help="tokens shared by consecutive windows")

    call = parser.add_argument_group("per-document options (as in /embed and /predict)")
    call.add_argument("--normalize", type=_bool, default=True, metavar="BOOL")
    call.add_argument("--truncate", type=_bool, metavar="BOOL", help="default: --auto-truncate")
    call.add_argument("--truncation-direction", choices=("right", "left"), default="right")
    call.add_argument("--prompt-name")
    call.add_argument("--dimensions", type=_positive, help="Matryoshka truncation of the vectors")
    call.add_argument("--raw-scores", action="store_true", help="--task predict: logits, not probabilities")

    ray = parser.add_argument_group("Ray Data (pip install 'tei-jax[ray]')")
    ray.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="run on Ray Data: a cluster address (ray://host:10001, auto), or none for a local cluster")
    ray.add_argument("--ray-actors", type=_positive, help="engines (default: one per GPU/TPU; on CPU, CPUs - 1)")
    ray.add_argument("--ray-accelerator", choices=("auto", "cpu", "gpu", "tpu"), default="auto",
                     help="what each actor reserves (auto: GPUs if the cluster has them, else TPUs, else CPUs)")
    ray.add_argument("--ray-cpus-per-actor", type=float, default=1.0, help="CPUs per actor on CPU clusters")
    ray.add_argument("--ray-num-cpus", type=_positive, help="CPUs of the local cluster started without an address")
    return parser


def job_from_args(args: argparse.Namespace) -> CorpusJob:
    load = dict(revision=args.revision, dtype=args.dtype, pooling=args.pooling, max_batch_tokens=args.max_batch_tokens,
                max_batch_requests=args.max_batch_requests, batch_tokens=args.batch_tokens,
                auto_truncate=args.auto_truncate, attention=args.attention, packing=args.packing,
                dense_path=args.dense_path, default_prompt_name=args.default_prompt_name,
                default_prompt=args.default_prompt, compile_cache=args.compile_cache_dir, token=args.hf_token,
                cache_dir=args.huggingface_hub_cache, chunk_long_inputs=args.chunk_long_inputs,
                chunk_overlap=args.chunk_overlap)
    options = TaskOptions(normalize=args.normalize, truncate=args.truncate,
                          truncation_direction=args.truncation_direction, prompt_name=args.prompt_name,
                          dimensions=args.dimensions, raw_scores=args.raw_scores)
    return CorpusJob(model_id=args.model_id, input=args.input, output=args.output, task=Task(args.task),
                     task_options=options, load_options={k: v for k, v in load.items() if v is not None},
                     input_format=Format(args.input_format) if args.input_format else None,
                     text_field=args.text_field, id_field=args.id_field, shard_size=args.shard_size,
                     batch_docs=args.batch_docs, strict=args.strict)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    job = job_from_args(args)
    from ..errors import ModelLoadError, TEIError
    from .readers import CorpusError
    from .writer import OutputError

    try:
        if args.ray is not None:
            from .ray_runner import RayOptions, run_ray

            summary = run_ray(job, RayOptions(address=args.ray or None, actors=args.ray_actors,
                                              accelerator=args.ray_accelerator,
                                              cpus_per_actor=args.ray_cpus_per_actor, num_cpus=args.ray_num_cpus),
                              progress=not args.no_progress)
        else:
            from .local import run_local

            summary = run_local(job, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the shards written so far are kept; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CorpusError, OutputError, ModelLoadError, TEIError, ImportError) as exc:
        print(f"error: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return EXIT_ERROR
    print(summary.text())
    if args.summary_json:
        with open(args.summary_json, "w") as handle:
            json.dump(summary.as_dict(), handle, indent=2)
    return 0
