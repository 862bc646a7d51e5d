"""`--mode startup`: how long until a fresh process serves, cold and warm, against
sentence-transformers' own start in the same run.

Why: autoscaling and crash recovery pay the start-up time on every new replica. Each figure
comes from a fresh process, so nothing is shared but the disk (and the OS page cache):

- server: `text-embeddings-router` started on the preset; seconds from launch to the first
  `/health` 200 (every request can be served) and to warmup complete (the
  `te_warmup_shapes_ready` gauge reaching `te_warmup_shapes`; a server without the
  gauges is complete at its first 200). "cold" runs on an empty compile-cache folder, "warm"
  on the folder the cold round just filled.
- library: a Python process that imports tei_jax, `load()`s the preset and embeds 32 texts
  (a notebook's first cell), timed phase by phase inside the process, cold and warm.
- peer: the same with sentence-transformers (import, `SentenceTransformer(folder)`, first
  `encode` of the same 32 texts). It has no compile cache: every round is its warm start.

Rounds alternate (cold, warm, peer), and the median of each is reported.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from . import presets, servers, workloads
from .progress import Progress, Silent

PARTS = ("server", "library", "peer")
POLL_S = 0.05
TEXTS = 32

_LIBRARY = """
import json, sys, time
t0 = time.perf_counter()
import tei_jax
t1 = time.perf_counter()
model = tei_jax.load(sys.argv[1], compile_cache=sys.argv[2], **json.loads(sys.argv[4]))
t2 = time.perf_counter()
texts = json.load(open(sys.argv[3]))
vectors = model.embed(texts)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_embed_s": t3 - t2, "total_s": t3 - t0,
                  "first": [float(x) for x in vectors[0][:4]]}))
"""

_PEER = """
import json, sys, time
t0 = time.perf_counter()
import torch
from sentence_transformers import SentenceTransformer
t1 = time.perf_counter()
model = SentenceTransformer(sys.argv[1], device="cpu")
t2 = time.perf_counter()
texts = json.load(open(sys.argv[2]))
vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_embed_s": t3 - t2, "total_s": t3 - t0,
                  "first": [float(x) for x in vectors[0][:4]]}))
"""


@dataclasses.dataclass(frozen=True)
class StartupOptions:
    preset: str = "minilm"
    rounds: int = 3
    parts: tuple[str, ...] = PARTS
    dtype: str | None = None
    server_args: tuple[str, ...] = ()
    router: tuple[str, ...] = ()
    timeout: float = 600.0
    seed: int = 0
    work_dir: Path | None = None


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _gauge(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ", 1)[1])
    return None


def server_start(folder: Path, cache: Path, options: StartupOptions, log_dir: Path) -> dict:
    """Launch the server, poll /health and /metrics; seconds to first 200 and to warmup done."""
    port = servers.free_port()
    extra = [*options.server_args, "--compile-cache-dir", str(cache)]
    start = time.monotonic()
    process, target = servers.start_ours(folder, port, log_dir, options.dtype, extra, options.router or None)
    result: dict = {}
    try:
        deadline = start + options.timeout
        while "health_s" not in result:
            if process.process.poll() is not None:
                raise RuntimeError(f"server exited with {process.process.returncode}:\n{process.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no /health 200 after {options.timeout:.0f}s:\n{process.log_tail()}")
            try:
                if _get(port, "/health")[0] == 200:
                    result["health_s"] = time.monotonic() - start
            except OSError:
                pass
            time.sleep(POLL_S)
        while "complete_s" not in result:
            if time.monotonic() > deadline:
                raise RuntimeError(f"warmup not complete after {options.timeout:.0f}s")
            text = _get(port, "/metrics")[1].decode()
            ready, total = _gauge(text, "te_warmup_shapes_ready"), _gauge(text, "te_warmup_shapes")
            if ready is None or total is None:  # a server without the gauges: ready means complete
                result["complete_s"] = result["health_s"]
            elif ready >= total:
                result["complete_s"] = time.monotonic() - start
                result["shapes"] = int(total)
            else:
                time.sleep(POLL_S)
        # One real request, so a figure never comes from a server that answers wrongly.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/embed", target.body(["What is Deep Learning?"]), {"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"/embed answered {response.status}: {body[:200]!r}")
        result["first"] = json.loads(body)[0][:4]
    finally:
        process.stop()
    return result


def _python(script: str, args: Sequence[str], timeout: float) -> dict:
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    wall = time.monotonic() - start
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def library_start(folder: Path, cache: Path, texts_file: Path, options: StartupOptions) -> dict:
    load_args = {"dtype": options.dtype} if options.dtype else {}
    return _python(_LIBRARY, [str(folder), str(cache), str(texts_file), json.dumps(load_args)], options.timeout)


def peer_start(folder: Path, texts_file: Path, options: StartupOptions) -> dict:
    return _python(_PEER, [str(folder), str(texts_file)], options.timeout)


def _medians(rounds: list[dict]) -> dict:
    keys = [k for k, v in rounds[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: statistics.median(r[k] for r in rounds) for k in keys}


def run(options: StartupOptions, progress: Progress | None = None) -> dict:
    """Every part, `rounds` times each; returns the rounds and their medians."""
    progress = progress or Silent()
    preset = presets.PRESETS[options.preset]
    folder = presets.materialize(preset, options.work_dir, options.seed)
    from ..config import load_spec

    max_length = load_spec(folder).max_input_length
    texts = workloads.make_workload("mixed", TEXTS, folder, max_length, options.seed).texts
    scratch = Path(tempfile.mkdtemp(prefix="tei-jax-startup-"))
    texts_file = scratch / "texts.json"
    texts_file.write_text(json.dumps(texts))
    rounds: dict[str, list[dict]] = {}
    try:
        for index in range(options.rounds):
            for part in options.parts:
                if part == "peer":
                    rounds.setdefault("peer", []).append(peer_start(folder, texts_file, options))
                    progress.step("sentence-transformers")
                    continue
                cache = scratch / f"{part}-cache-{index}"
                for temperature in ("cold", "warm"):
                    if part == "server":
                        figures = server_start(folder, cache, options, scratch / "logs")
                    else:
                        figures = library_start(folder, cache, texts_file, options)
                    rounds.setdefault(f"{part}_{temperature}", []).append(figures)
                    progress.step(f"{part} {temperature}")
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"mode": "startup", "preset": options.preset, "preset_description": preset.description,
            "dtype": options.dtype, "server_args": list(options.server_args), "texts": TEXTS,
            "rounds": rounds, "median": {name: _medians(values) for name, values in rounds.items()}}


def steps(options: StartupOptions) -> int:
    """How many timed starts `run` makes (for the progress bar)."""
    return options.rounds * sum(1 if part == "peer" else 2 for part in options.parts)


def table(result: dict) -> str:
    """One line per (part, temperature): medians in seconds."""
    rows = [f"startup, {result['preset']}, median of {len(next(iter(result['rounds'].values())))} (seconds)"]
    for name, median in result["median"].items():
        if name.startswith("server"):
            line = f"health 200 {median['health_s']:6.2f}   warmup complete {median['complete_s']:6.2f}"
        else:
            line = (f"import {median['import_s']:5.2f}  load {median['load_s']:5.2f}  "
                    f"first embed of {TEXTS} {median['first_embed_s']:5.2f}  total {median['total_s']:5.2f}  "
                    f"process {median['process_s']:5.2f}")
        rows.append(f"  {name:<14} {line}")
    return "\n".join(rows)
