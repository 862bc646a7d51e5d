"""Every flag of TEI's `text-embeddings-router`, with its env var and default, plus ours.

Parsing mirrors clap's: a flag on the command line wins over its env var (the UPPER_SNAKE of
the flag name), which wins over the default. Parsing imports nothing heavy, so `--help` is
instant and the gunicorn master never touches JAX.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
from pathlib import Path
from typing import Sequence

from tei_jax.compile_cache import DEFAULT_DIR as DEFAULT_COMPILE_CACHE
from tei_jax.compile_cache import ENV_VAR as COMPILE_CACHE_ENV
from tei_jax.hub import DEFAULT_MODEL_ID

log = logging.getLogger(__name__)

POOLING_CHOICES = ("cls", "mean", "splade", "last-token", "last_token", "max", "weightedmean", "mean_sqrt_len")
ATTENTION_CHOICES = ("auto", "xla", "cudnn", "pallas")
DTYPE_CHOICES = ("float16", "float32", "bfloat16")


@dataclasses.dataclass
class Settings:
    """The parsed command line (TEI's names, snake_case)."""

    model_id: str = DEFAULT_MODEL_ID
    revision: str | None = None
    tokenization_workers: int = 1
    dtype: str | None = None
    served_model_name: str | None = None
    pooling: str | None = None
    max_concurrent_requests: int = 512
    max_batch_tokens: int = 16384
    max_batch_requests: int | None = None
    max_client_batch_size: int = 32
    auto_truncate: bool = True
    default_prompt_name: str | None = None
    default_prompt: str | None = None
    dense_path: str | None = None
    hf_token: str | None = None
    hostname: str = "0.0.0.0"
    port: int = 3000
    uds_path: str = "/tmp/text-embeddings-inference-server"
    huggingface_hub_cache: str | None = None
    payload_limit: int = 2_000_000
    api_key: str | None = None
    json_output: bool = False
    disable_spans: bool = False
    otlp_endpoint: str | None = None
    otlp_service_name: str = "text-embeddings-inference.server"
    prometheus_port: int = 9000
    cors_allow_origin: list[str] | None = None
    # Ours
    attention: str = "auto"
    compile_cache_dir: str = str(DEFAULT_COMPILE_CACHE)  # "none" turns the cache off
    worker_threads: int = 64
    graceful_timeout: int = 30
    chunk_long_inputs: bool = False  # opt-in: TEI truncates or refuses long inputs
    chunk_overlap: int = 0
    grpc: bool = False  # serve TEI's gRPC API instead of HTTP on --port
    grpc_port: int | None = None  # serve gRPC on this port beside HTTP
    data_parallel_size: int | None = None  # None: every local device left after tensor parallelism
    tensor_parallel_size: int = 1

    @property
    def model_name(self) -> str:
        """What /info and the OpenAI `model` field call the model."""
        return self.served_model_name or self.model_id

    @property
    def bind(self) -> str:
        """gunicorn's bind address (IPv6 in brackets)."""
        host = self.hostname
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def parse_bool(value: str | bool) -> bool:
    """clap's bool parser: true/false (we also take 1/0, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value '{value}' [possible values: true, false]")


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def non_negative_int(value: str) -> int:
    """argparse type: an integer >= 0."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return number


def default_tokenization_workers() -> int:
    """TEI: number of CPU cores minus one, clamped to [1, 64]."""
    return max(1, min(64, (os.cpu_count() or 2) - 1))


def _origins(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class _EnvDefaults(argparse.ArgumentParser):
    """Adds `env=` to add_argument: the env var's value becomes the default (clap's `env`)."""

    def add_argument(self, *names, env: str | None = None, **kwargs):
        if env is not None:
            kwargs["help"] = f"{kwargs.get('help', '')} [env: {env}=]".strip()
            if env in os.environ:
                raw = os.environ[env]
                convert = kwargs.get("type")
                if kwargs.get("action") == "store_true":
                    kwargs["default"] = parse_bool(raw)
                elif kwargs.get("nargs") in ("+", "*"):
                    kwargs["default"] = _origins(raw)
                else:
                    kwargs["default"] = convert(raw) if convert else raw
            if "default" in kwargs and kwargs["default"] is not None and kwargs.get("action") != "store_true":
                kwargs["help"] += f" [default: {kwargs['default']}]"
        return super().add_argument(*names, **kwargs)


class _Version(argparse.Action):
    """`--version`: prints `text-embeddings-router <tei-jax version>` (clap's format), exit 0."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=kwargs.get("help"))

    def __call__(self, parser, namespace, values, option_string=None):
        from tei_jax import __version__

        print(f"{parser.prog} {__version__}")
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _EnvDefaults(
        prog="text-embeddings-router",
        description="Text Embeddings Webserver (tei-jax: TEI's HTTP API on a JAX engine)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("-V", "--version", action=_Version, help="Print the version (tei-jax's) and exit")
    add("--model-id", env="MODEL_ID", default=DEFAULT_MODEL_ID,
        help="The name of the model to load. Can be a MODEL_ID as listed on <https://hf.co/models> like "
             "`BAAI/bge-large-en-v1.5`, or a local directory containing the model files. Without it, the "
             "bundled sentence-transformers/all-MiniLM-L6-v2 is served")
    add("--revision", env="REVISION",
        help="The actual revision of the model if you're referring to a model on the hub. You can use a "
             "specific commit id or a branch like `refs/pr/2`")
    add("--tokenization-workers", env="TOKENIZATION_WORKERS", type=positive_int,
        default=default_tokenization_workers(),
        help="Optionally control the number of tokenizer workers used for payload tokenization, validation "
             "and truncation. Concurrent requests take turns on them a few inputs at a time, so a short "
             "request never waits for another one's whole batch. Defaults to the number of CPU cores minus one")
    add("--dtype", env="DTYPE", choices=DTYPE_CHOICES,
        help="The dtype to be forced upon the model (default: float32 on CPU, bfloat16 on accelerators)")
    add("--served-model-name", env="SERVED_MODEL_NAME",
        help="The name of the model that is being served. If not specified, defaults to `--model-id`. It "
             "is only used for the OpenAI-compatible endpoints via HTTP")
    add("--pooling", env="POOLING", choices=POOLING_CHOICES,
        help="Optionally control the pooling method for embedding models. If `pooling` is not set, the "
             "pooling configuration will be parsed from the model `1_Pooling/config.json` configuration. "
             "If `pooling` is set, it will override the model pooling configuration")
    add("--max-concurrent-requests", env="MAX_CONCURRENT_REQUESTS", type=positive_int, default=512,
        help="The maximum amount of concurrent requests for this particular deployment. Having a low "
             "limit will refuse clients requests instead of having them wait for too long and is usually "
             "good to handle backpressure correctly")
    add("--max-batch-tokens", env="MAX_BATCH_TOKENS", type=positive_int, default=16384,
        help="The maximum number of tokens computed in one forward batch (padding included). This is "
             "the critical parameter: it bounds device memory and latency per batch")
    add("--max-batch-requests", env="MAX_BATCH_REQUESTS", type=positive_int,
        help="Optionally control the maximum number of individual requests in a batch")
    add("--max-client-batch-size", env="MAX_CLIENT_BATCH_SIZE", type=positive_int, default=32,
        help="Control the maximum number of inputs that a client can send in a single request")
    add("--auto-truncate", env="AUTO_TRUNCATE", type=parse_bool, nargs="?", const=True, default=True,
        metavar="BOOL",
        help="Control automatic truncation of inputs that exceed the model's maximum supported size. "
             "Defaults to `true` (truncation is enabled); `--auto-truncate false` disables it")
    prompts = parser.add_mutually_exclusive_group()
    prompts.add_argument("--default-prompt-name", default=os.environ.get("DEFAULT_PROMPT_NAME"),
                         help="The name of the prompt that should be used by default for encoding. If not set, "
                              "no prompt will be applied. Must be a key in the `sentence-transformers` "
                              "configuration `prompts` dictionary [env: DEFAULT_PROMPT_NAME=]")
    prompts.add_argument("--default-prompt", default=os.environ.get("DEFAULT_PROMPT"),
                         help="The prompt that should be used by default for encoding. If not set, no prompt "
                              "will be applied [env: DEFAULT_PROMPT=]")
    add("--dense-path", env="DENSE_PATH",
        help="Optionally, define the path to the Dense module required for some embedding models "
             "(e.g. `2_Dense_768`)")
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument("--hf-token", default=os.environ.get("HF_TOKEN"),
                        help="Your Hugging Face Hub token [env: HF_TOKEN=]")
    tokens.add_argument("--hf-api-token", default=os.environ.get("HF_API_TOKEN"), help=argparse.SUPPRESS)
    add("--hostname", env="HOSTNAME", default="0.0.0.0",
        help="The IP address to listen on (a value that is not an IP address falls back to 0.0.0.0)")
    add("-p", "--port", env="PORT", type=int, default=3000, help="The port to listen on")
    add("--uds-path", env="UDS_PATH", default="/tmp/text-embeddings-inference-server",
        help="The name of the unix socket some text-embeddings-inference backends will use as they "
             "communicate internally with gRPC (accepted for compatibility; unused)")
    add("--huggingface-hub-cache", env="HUGGINGFACE_HUB_CACHE",
        help="The location of the huggingface hub cache. Used to override the location if you want to "
             "provide a mounted disk for instance")
    add("--payload-limit", env="PAYLOAD_LIMIT", type=positive_int, default=2_000_000,
        help="Payload size limit in bytes")
    add("--api-key", env="API_KEY",
        help="Set an api key for request authorization. By default the server responds to every request. "
             "With an api key set, the requests must have the Authorization header set with the api key "
             "as Bearer token")
    add("--json-output", env="JSON_OUTPUT", action="store_true", default=False,
        help="Outputs the logs in JSON format (useful for telemetry)")
    add("--disable-spans", env="DISABLE_SPANS", action="store_true", default=False,
        help="Whether or not to include the log trace through spans")
    add("--otlp-endpoint", env="OTLP_ENDPOINT",
        help="The grpc endpoint for opentelemetry. Telemetry is sent to this endpoint as OTLP over gRPC. "
             "e.g. `http://localhost:4317` (needs `pip install tei-jax[otlp]`)")
    add("--otlp-service-name", env="OTLP_SERVICE_NAME", default="text-embeddings-inference.server",
        help="The service name for opentelemetry")
    add("--prometheus-port", env="PROMETHEUS_PORT", type=int, default=9000,
        help="The Prometheus port to listen on (accepted for compatibility: as in TEI's HTTP server, "
             "metrics are served on /metrics of the main port)")
    add("--cors-allow-origin", env="CORS_ALLOW_ORIGIN", nargs="+", type=str,
        help="Unused for gRPC servers. Origins allowed by CORS (several values, or comma-separated in "
             "the env var); any origin when unset")
    ours = parser.add_argument_group("tei-jax options")
    ours.add_argument("--attention", choices=ATTENTION_CHOICES,
                      default=os.environ.get("ATTENTION", "auto"),
                      help="Attention implementation: auto (the best for the device), xla, cudnn or pallas "
                           "[env: ATTENTION=] [default: auto]")
    ours.add_argument("--compile-cache-dir",
                      default=os.environ.get(COMPILE_CACHE_ENV, str(DEFAULT_COMPILE_CACHE)),
                      help="JAX persistent compilation cache folder, so a restart does not recompile "
                           f"(`none` disables it) [env: {COMPILE_CACHE_ENV}=] "
                           f"[default: {DEFAULT_COMPILE_CACHE}]")
    ours.add_argument("--worker-threads", type=positive_int, default=int(os.environ.get("WORKER_THREADS", 64)),
                      help="HTTP threads of the single server worker; they parse, tokenize and wait on the "
                           "batcher [env: WORKER_THREADS=] [default: 64]")
    ours.add_argument("--graceful-timeout", type=positive_int,
                      default=int(os.environ.get("GRACEFUL_TIMEOUT", 30)),
                      help="Seconds a stopping server (SIGTERM) keeps answering requests it already "
                           "accepted [env: GRACEFUL_TIMEOUT=] [default: 30]")
    ours.add_argument("--chunk-long-inputs", type=parse_bool, nargs="?", const=True, metavar="BOOL",
                      default=parse_bool(os.environ.get("CHUNK_LONG_INPUTS", "false")),
                      help="Embed an input longer than the model's limit as overlapping token windows pooled "
                           "by a token-weighted mean, instead of truncating it (embedding models only) "
                           "[env: CHUNK_LONG_INPUTS=] [default: false]")
    ours.add_argument("--chunk-overlap", type=non_negative_int, default=int(os.environ.get("CHUNK_OVERLAP", 0)),
                      help="Tokens shared by consecutive windows with --chunk-long-inputs "
                           "[env: CHUNK_OVERLAP=] [default: 0]")
    ours.add_argument("--grpc", action="store_true", default=parse_bool(os.environ.get("GRPC", "false")),
                      help="Serve TEI's gRPC API (tei.v1, with health and reflection) instead of HTTP on "
                           "--port, as TEI's gRPC image does [env: GRPC=]")
    ours.add_argument("--grpc-port", type=positive_int,
                      default=int(os.environ["GRPC_PORT"]) if os.environ.get("GRPC_PORT") else None,
                      help="Also serve the gRPC API on this port, beside HTTP on --port, from the same model, "
                           "queue and permits [env: GRPC_PORT=]")
    ours.add_argument("--data-parallel-size", type=positive_int,
                      default=int(os.environ["DATA_PARALLEL_SIZE"]) if os.environ.get("DATA_PARALLEL_SIZE") else None,
                      help="Devices a batch's rows are split over; data x tensor parallel sizes must equal the "
                           "devices used [env: DATA_PARALLEL_SIZE=] [default: every local device left after "
                           "tensor parallelism]")
    ours.add_argument("--tensor-parallel-size", type=positive_int,
                      default=int(os.environ.get("TENSOR_PARALLEL_SIZE", 1)),
                      help="Devices each layer's heads and MLP width are split over (for models too large "
                           "for one device) [env: TENSOR_PARALLEL_SIZE=] [default: 1]")
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """The command line (argv, default sys.argv[1:]) and env vars -> Settings."""
    args = build_parser().parse_args(argv)
    values = vars(args)
    hf_api_token = values.pop("hf_api_token")
    values["hf_token"] = values["hf_token"] or hf_api_token
    values["hostname"] = _parse_hostname(values["hostname"])
    if values["pooling"]:
        values["pooling"] = values["pooling"].replace("-", "_")
    cache = (values["compile_cache_dir"] or "").strip()
    values["compile_cache_dir"] = "none" if cache.lower() in ("", "none") else str(Path(cache).expanduser())
    origins = values["cors_allow_origin"]
    if origins:
        values["cors_allow_origin"] = [o for value in origins for o in _origins(value)]
    if values["grpc"] and values["grpc_port"] not in (None, values["port"]):
        build_parser().error("--grpc serves gRPC on --port; --grpc-port is for gRPC beside HTTP")
    if values["grpc_port"] is not None and values["grpc_port"] == values["port"] and not values["grpc"]:
        build_parser().error("--grpc-port must differ from --port (HTTP listens there)")
    return Settings(**values)


def _parse_hostname(value: str) -> str:
    """TEI parses the hostname as an IP address and falls back to 0.0.0.0 (Docker sets
    HOSTNAME to the container name)."""
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        log.warning("Invalid hostname `%s`, defaulting to 0.0.0.0", value)
        return "0.0.0.0"
