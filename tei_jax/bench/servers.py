"""Start, probe and stop the HTTP servers under test as subprocesses.

Ours is `text-embeddings-router` (TEI's CLI and /embed contract); the peer is infinity-emb
(`infinity_emb v2`, OpenAI-style POST /embeddings), run from its own virtual environment.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

INFINITY_CANDIDATES = ("/work/venvs/infinity/bin/infinity_emb",)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Target:
    """How to talk to one server: route and request body for a list of texts."""

    name: str
    port: int
    path: str
    served_name: str | None = None  # OpenAI-style servers need the model name in the body

    def body(self, texts: list[str]) -> bytes:
        if self.served_name is None:
            payload = {"inputs": texts if len(texts) > 1 else texts[0], "normalize": True}
        else:
            payload = {"input": texts, "model": self.served_name}
        return json.dumps(payload).encode()


def router_command() -> list[str] | None:
    """How to start our server: `python -m app.cli` when this interpreter can import the app
    (a source checkout, where the installed entry point may predate it), else the
    `text-embeddings-router` entry point on PATH."""
    import importlib.util

    try:
        if importlib.util.find_spec("app.cli") is not None:
            return [sys.executable, "-m", "app.cli"]
    except ModuleNotFoundError:
        pass
    found = shutil.which("text-embeddings-router")
    return [found] if found else None


def infinity_version(binary: str) -> str | None:
    python = Path(binary).parent / "python"
    try:
        out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('infinity_emb'))"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def find_infinity() -> str | None:
    found = shutil.which("infinity_emb")
    if found:
        return found
    return next((c for c in INFINITY_CANDIDATES if os.access(c, os.X_OK)), None)


class ServerProcess:
    """A server subprocess with its log file; `stop()` ends it (and only it)."""

    def __init__(self, name: str, command: Sequence[str], log_path: Path, env: dict | None = None,
                 cwd: Path | None = None):
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})}, start_new_session=True, cwd=cwd)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, target: Target, timeout: float) -> float:
        """Poll until one real embed request succeeds; returns the seconds it took."""
        start = time.monotonic()
        body = target.body(["warm up"])
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
                conn.request("POST", target.path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == 200:
                    return time.monotonic() - start
            except OSError:
                pass
            time.sleep(1.0)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, grace: float = 15.0) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and its workers
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def start_ours(folder: Path, port: int, log_dir: Path, dtype: str | None, extra: Sequence[str] = (),
               router: Sequence[str] | None = None) -> tuple[ServerProcess, Target]:
    router = list(router or router_command() or [])
    if not router:
        raise RuntimeError("text-embeddings-router is not on PATH (pip install -e . in this checkout)")
    command = [*router, "--model-id", str(folder), "--port", str(port)]
    if dtype:
        command += ["--dtype", dtype]
    command += list(extra)
    return ServerProcess("tei-jax", command, log_dir / "tei-jax.log"), Target("tei-jax", port, "/embed")


def start_infinity(folder: Path, port: int, log_dir: Path, device: str, extra: Sequence[str] = (),
                   engine: str = "torch") -> tuple[ServerProcess, Target]:
    binary = find_infinity()
    if binary is None:
        raise RuntimeError("infinity_emb is not installed")
    # The optimum engine finds the ONNX file by globbing the model folder and hands optimum that
    # path, which optimum only accepts relative to the folder: so run it from inside the folder.
    cwd = Path(folder) if engine == "optimum" else None
    command = [binary, "v2", "--model-id", "." if cwd else str(folder), "--served-model-name", "bench",
               "--port", str(port), "--engine", engine, "--device", device, *extra]
    env = {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    return (ServerProcess("infinity-emb", command, log_dir / "infinity.log", env, cwd=cwd),
            Target("infinity-emb", port, "/embeddings", served_name="bench"))


def folder_with_onnx(folder: Path, dest: Path) -> Path:
    """A copy of the model folder (files linked, ONNX files of its own left out) with
    `model.onnx` added, exported by tei_jax.bench.onnx_peer without its own fusions:
    infinity-emb's optimum engine takes the ONNX file it finds in the model folder and
    optimises it itself."""
    from .onnx_peer import export

    dest.mkdir(parents=True, exist_ok=True)
    for item in Path(folder).iterdir():
        target = dest / item.name
        if not target.exists() and item.name != "onnx" and item.suffix != ".onnx":
            target.symlink_to(item.resolve(), target_is_directory=item.is_dir())
    exported = export(folder, Path(tempfile.mkdtemp(prefix="tei-jax-onnx-")), optimize=False)
    shutil.move(str(exported.path), str(dest / "model.onnx"))
    return dest


def scrape_metric(port: int, fragment: str) -> float | None:
    """The first sample of a Prometheus metric whose name contains `fragment`, if exposed."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode(errors="replace")
        conn.close()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("#") or fragment not in line.split(" ")[0]:
            continue
        try:
            return float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
    return None
