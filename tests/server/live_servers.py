"""Real servers for the HTTP tests: `python -m app.cli` subprocesses on reserved ports
(tests/ports.py), and the session's fleet of them (its fixtures are in conftest.py).

Test modules import what they need from here, not from `conftest`: that name is whichever
conftest.py pytest loaded last, so `pytest tests/server tests/sharding` made
`from conftest import free_port` find tests/sharding/conftest.py and fail.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import tiny_models as tm
from ports import reserve_port

# TEI_JAX_SERVER_REPO: serve from another checkout (the slow load test's "before" figures).
REPO = Path(os.environ.get("TEI_JAX_SERVER_REPO") or Path(__file__).resolve().parents[2])
API_KEY = "test-secret"
READY_TIMEOUT_S = 300


def free_port() -> int:
    """A port reserved for this test process (tests/ports.py: safe beside other xdist workers)."""
    return reserve_port()


class Server:
    """One server process; `url`, `wait_ready()`, `stop()`."""

    def __init__(self, name: str, args: list[str], env: dict | None = None, grpc: bool = False):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # With `grpc`, the same process also serves tei.v1 on `grpc_target` (--grpc-port).
        self.grpc_port = free_port() if grpc else None
        self.grpc_target = f"127.0.0.1:{self.grpc_port}" if grpc else None
        if grpc:
            args = [*args, "--grpc-port", str(self.grpc_port)]
        self.log_path = Path(tempfile.mkdtemp(prefix=f"tei-jax-{name}-")) / "server.log"
        # The session's compile cache (tests/conftest.py) is inherited: a server started again
        # on a model an earlier one compiled loads its programs instead.
        environment = dict(os.environ, TOKENIZERS_PARALLELISM="false", JAX_PLATFORMS="cpu", **(env or {}))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "--hostname", "127.0.0.1", "--port", str(self.port), *args],
            cwd=REPO, env=environment, stdout=self._log, stderr=subprocess.STDOUT)
        self._ready = False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> "Server":
        deadline = time.monotonic() + timeout
        while not self._ready:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {self.name} not ready after {timeout}s:\n{self.log()[-4000:]}")
            try:
                self._ready = requests.get(self.url + "/health", timeout=5).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # busy machine: ask again
                pass
            if not self._ready:
                time.sleep(0.25)
        return self

    def wait_warmed(self, timeout: float = READY_TIMEOUT_S) -> str:
        """Wait until every warmup shape is built (/health is 200 earlier, once requests are
        coverable); the compile counter only counts after that. Returns the /metrics text."""
        self.wait_ready(timeout)
        deadline = time.monotonic() + timeout
        while True:
            metrics = requests.get(self.url + "/metrics", timeout=10).text
            ready = float(re.search(r"^te_warmup_shapes_ready (\S+)$", metrics, re.M).group(1))
            total = float(re.search(r"^te_warmup_shapes (\S+)$", metrics, re.M).group(1))
            if total > 0 and ready >= total:
                return metrics
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {self.name}: {ready:.0f} of {total:.0f} shapes after {timeout}s")
            time.sleep(0.1)

    def terminate(self) -> None:
        """Send SIGTERM without waiting (`stop` then waits): servers drain side by side."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


FLEET = {
    # Tiny BERT, mean pooling; guarded by an api key and a small payload limit.
    "embed": lambda: ["--model-id", str(tm.embedding_model()), "--max-batch-tokens", "256",
                      "--api-key", API_KEY, "--payload-limit", "200000", "--served-model-name", "tiny-embed"],
    "classifier": lambda: ["--model-id", str(tm.make_model("bert", "classification", num_labels=3)),
                           "--max-batch-tokens", "256"],
    # 8 permits: a gRPC Rerank of 10 texts is refused (RESOURCE_EXHAUSTED).
    "reranker": lambda: ["--model-id", str(tm.make_model("bert", "classification", num_labels=1)),
                         "--max-batch-tokens", "256", "--max-concurrent-requests", "8"],
    # SPLADE with only 4 permits, for 429.
    "splade": lambda: ["--model-id", str(tm.make_model("bert", "masked_lm")), "--pooling", "splade",
                       "--max-batch-tokens", "256", "--max-concurrent-requests", "4"],
    # The bundled real model with its default settings but a small token budget and one input
    # per batch: its one test (test_model_kinds) embeds one text, and one-row batches leave 18
    # shapes to build instead of 28 (2 instead of 6 before /health answers). Its warmup went
    # from 24.5 to 16.3 CPU-s, most of it in the background while the other tests run.
    "minilm": lambda: ["--max-batch-tokens", "256", "--max-batch-requests", "1"],
}
# Fleet servers that also serve gRPC beside HTTP (tests/server/test_grpc_*.py).
GRPC_FLEET = ("embed", "classifier", "reranker", "splade")
