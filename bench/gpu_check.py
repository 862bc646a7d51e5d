"""The prepared GPU check: one command, one budget, every result written as it comes.

    python3 bench/gpu_check.py --out "$OUT"            # on the GPU machine (bench/README.md)
    python bench/gpu_check.py --dry-run --out /tmp/x   # here, on CPU: tiny model, same code path

Steps, in this order, each a subprocess with its own timeout inside one overall budget (a step
that would start with less than its minimum left is skipped, one that hangs is killed, and
either way the next step runs):

  machine   nvidia-smi, JAX/jaxlib/CUDA plugin/torch versions, devices, and the measured bf16
            matmul peak (random 8192^2 inputs, jnp, best of 10 timings of 10 products)
  model     the bge-base-shaped random BERT folder (transformers, MiniLM's tokenizer) that the
            engine and server steps load
  pytest    `pytest -m gpu tests/kernels tests/gpu` (kernel at every dtype, each family's 16-bit
            parity against torch on the same GPU), junit XML parsed per test
  fixed512  engine bench on that model: 512 tokens, bf16, batch budget 16384, xla/cudnn/pallas side by side against
            sentence-transformers fp16 on the same GPU and weights
  query16   the same, 16-token queries one per call (single-request latency)
  mixed     the same, the mixed-length workload in one call
  startup   the server's start-to-ready on that model: cold (empty compile cache), then warm
  trace     one jax.profiler round of fixed512 for xla and pallas, tarred (for the next change)

Under --out: summary.json (rewritten after every step), gpu_check.log (every subprocess's
output), table.txt, fixed512.png, query16.png, mixed.png, trace.tar.gz; at most the 8 files the
device tool brings back. The table, the targets and the recommendation for
AUTO_BY_BACKEND["gpu"] are printed last. This script imports neither JAX nor torch itself, so
it holds no GPU memory while its steps run.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = ("xla", "cudnn", "pallas")
PEER = "sentence-transformers"
COSINE_OK = 0.999
TARGETS = {"ratio_to_st_fp16": 1.3, "fraction_of_peak": 0.5, "query16_p50_ms": 2.0}
MAX_TRACE_BYTES = 15 * 2**20


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the dry run: sizes, never code paths."""

    preset: str
    dtype: str
    peer_dtype: str
    max_batch_tokens: int
    peak_size: int
    fixed_count: int
    fixed_batch: int
    fixed_rounds: int
    query_count: int
    query_rounds: int
    mixed_count: int
    mixed_rounds: int
    trace_count: int
    server_batch_tokens: int
    pytest_targets: tuple[str, ...]
    budget: float
    timeouts: dict


# On the H200: ~90 s to start the machine + this budget + slack must leave room for one rerun of
# the failed steps inside the session's 15 device minutes (bench/README.md, "GPU check").
GPU = Sizes(preset="bge-base", dtype="bfloat16", peer_dtype="float16", max_batch_tokens=16384, peak_size=8192,
            fixed_count=512, fixed_batch=256, fixed_rounds=7, query_count=200, query_rounds=3,
            mixed_count=1024, mixed_rounds=5, trace_count=64, server_batch_tokens=16384,
            pytest_targets=("tests/kernels", "tests/gpu"),  # kernel tests first: they decide pallas
            budget=420.0,
            timeouts={"machine": 45, "model": 60, "pytest": 100, "fixed512": 110, "query16": 50, "mixed": 70,
                      "startup": 110, "trace": 30})
DRY = Sizes(preset="tiny", dtype="float32", peer_dtype="float32", max_batch_tokens=256, peak_size=256,
            fixed_count=4, fixed_batch=2, fixed_rounds=1, query_count=3, query_rounds=1,
            mixed_count=6, mixed_rounds=1, trace_count=2, server_batch_tokens=16,
            pytest_targets=("tests/gpu/test_gpu_parity.py::test_embeddings_match_torch[bert-bfloat16-pallas]",
                            "tests/gpu/test_gpu_parity.py::test_classifier_scores_match_torch[bert-bfloat16]",
                            "tests/gpu/test_gpu_parity.py::test_remote_code_families_match_float32[jina-float16-xla]",
                            "tests/kernels/test_flash_attention.py::test_gpu_compiled_kernel[bf16]",
                            "tests/kernels/test_flash_attention.py::test_gpu_timing_bf16"),
            budget=1500.0,  # the CPU box may be shared and slow: generous, it checks code paths only
            timeouts=dict.fromkeys(("machine", "model", "pytest", "fixed512", "query16", "mixed", "startup",
                                    "trace"), 300))
MINIMUM = {"machine": 10, "model": 10, "pytest": 40, "fixed512": 45, "query16": 25, "mixed": 40,
           "startup": 40, "trace": 20}
STEPS = ("machine", "model", "pytest", "fixed512", "query16", "mixed", "startup", "trace")


class Check:
    """The run's state: where things go, the deadline, the summary written after each step."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.sizes = DRY if args.dry_run else GPU
        if args.pytest_targets:
            targets = tuple(t.strip() for t in args.pytest_targets.split(",") if t.strip())
            self.sizes = dataclasses.replace(self.sizes, pytest_targets=targets)
        self.out = Path(args.out).resolve()
        self.work = Path(args.work).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.start = time.monotonic()
        self.deadline = self.start + (args.budget or self.sizes.budget)
        self.log_path = self.out / "gpu_check.log"
        self.summary: dict = {"dry_run": bool(args.dry_run), "started": _now(), "sizes": dataclasses.asdict(self.sizes),
                              "steps": {}, "results": {}}
        self.env = self._env()

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # torch and several processes share the GPU
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "TEI_JAX_COMPILE_CACHE": str(self.work / "cache-bench"),
            "MPLBACKEND": "Agg",
        })
        # Each pytest worker writes its own tiny models (a shared folder would race under xdist).
        env.pop("TEI_JAX_TINY_MODELS", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        if self.args.dry_run:
            env["JAX_PLATFORMS"] = "cpu"
            env["TEI_JAX_GPU_TESTS_ON_CPU"] = "1"
        return env

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, text: str) -> None:
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.start:6.1f}s] {text}"
        print(line, flush=True)
        self.log(line)

    def write_summary(self) -> None:
        self.summary["elapsed_s"] = round(time.monotonic() - self.start, 1)
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(self.summary, indent=2, default=str) + "\n")
        tmp.replace(self.out / "summary.json")

    def run(self, name: str, command: list[str], timeout: float, cwd: Path = REPO) -> tuple[int | None, str]:
        """Run a subprocess in its own session (killed whole on timeout); output to the log.
        Returns (exit code or None on timeout, the output's last 4000 characters)."""
        self.log(f"\n===== {name}: {' '.join(command)} (timeout {timeout:.0f}s)")
        log_file = self.work / f"{name}.out"
        with open(log_file, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=self.env,
                                       start_new_session=True)
            try:
                code: int | None = process.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                _kill_group(process)
                code = None
        text = log_file.read_text(errors="replace")
        self.log(text)
        self.log(f"===== {name}: {'timed out' if code is None else f'exit {code}'}")
        return code, text[-4000:]

    def step_timeout(self, name: str) -> float:
        return min(self.sizes.timeouts[name], self.remaining() - 5.0)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _kill_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def python_json(check: Check, name: str, code: str, timeout: float, *args: str) -> dict:
    """Run a Python snippet that writes JSON to the path in sys.argv[1]; returns that JSON."""
    path = check.work / f"{name}.json"
    path.unlink(missing_ok=True)
    exit_code, tail = check.run(name, [sys.executable, "-c", code, str(path), *args], timeout)
    if exit_code != 0 or not path.exists():
        raise StepFailed(_failure(exit_code, tail))
    return json.loads(path.read_text())


class StepFailed(Exception):
    pass


def _failure(code: int | None, tail: str) -> str:
    lines = [line for line in tail.strip().splitlines() if line.strip()][-12:]
    head = "timed out" if code is None else f"exit code {code}"
    return head + (": " + "\n".join(lines) if lines else "")


# Steps ---------------------------------------------------------------------------------------

MACHINE_CODE = """
import json, os, sys
from tei_jax.bench import machine
info = machine.describe()
info["accelerator"] = machine.accelerator()
import jax, jaxlib
info["jax_version"], info["jaxlib_version"] = jax.__version__, jaxlib.__version__
info["jax_devices"] = [repr(d) for d in jax.devices()]
try:
    from jax.extend import backend as _backend
    info["platform_version"] = _backend.get_backend().platform_version  # CUDA / cuDNN as XLA sees them
except Exception as e:
    info["platform_version"] = f"unavailable: {e}"
info["env"] = {k: v for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_", "CUDA_", "TEI_JAX_"))}
try:
    info["device_memory"] = {k: v for k, v in (jax.devices()[0].memory_stats() or {}).items() if "limit" in k}
except Exception as e:
    info["device_memory"] = str(e)
info["peak"] = machine.peak_matmul_flops(size=int(sys.argv[2]), repeats=10)
json.dump(info, open(sys.argv[1], "w"), indent=2)
"""


def step_machine(check: Check) -> dict:
    smi = shutil.which("nvidia-smi")
    if smi:
        check.run("nvidia-smi", [smi], 20)
    info = python_json(check, "machine", MACHINE_CODE, check.step_timeout("machine"), str(check.sizes.peak_size))
    check.summary["peak"] = info.pop("peak")
    return info


def model_folder(check: Check) -> Path:
    return check.work / "models" / f"{check.sizes.preset}-seed0"


def step_model(check: Check) -> dict:
    folder = ensure_model(check, check.step_timeout("model"))
    return {"folder": str(folder), "bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())}


def ensure_model(check: Check, timeout: float) -> Path:
    """The preset's folder (the bench steps write it; written here if none of them ran)."""
    if not (model_folder(check) / "config.json").exists():
        code = ("import json, sys\nfrom pathlib import Path\nfrom tei_jax.bench import presets\n"
                f"folder = presets.materialize(presets.PRESETS[{check.sizes.preset!r}], Path({str(check.work / 'models')!r}))\n"
                "json.dump({'folder': str(folder)}, open(sys.argv[1], 'w'))")
        python_json(check, "model", code, timeout)
    return model_folder(check)


def _importable(check: Check, module: str) -> bool:
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], env=check.env, capture_output=True)
    return probe.returncode == 0


def step_pytest(check: Check) -> dict:
    """The GPU-marked tests; on the GPU machine in 6 xdist workers with a per-test timeout
    (both plugins are in its image), so one hung kernel compile fails one test, not the step."""
    xml = check.work / "pytest.xml"
    xml.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "gpu", *check.sizes.pytest_targets, "-v", "-rfEs",
               "-p", "no:cacheprovider", f"--junitxml={xml}"]
    if not check.args.dry_run and _importable(check, "xdist"):
        command += ["-n", "8"]
    if _importable(check, "pytest_timeout"):
        command += ["--timeout", "60"]
    code, _ = check.run("pytest", command, check.step_timeout("pytest"))
    if xml.exists():
        result = parse_junit(xml)
        result["complete"] = True
    else:  # killed before pytest wrote the XML: the verbose lines say what finished
        result = parse_verbose((check.work / "pytest.out").read_text(errors="replace"))
        result["note"] = "timed out: outcomes read from pytest's verbose lines (tests still running are missing)"
        result["complete"] = False
    result["exit_code"] = code
    if code not in (0, None) and not result.get("cases"):
        raise StepFailed(_failure(code, (check.work / "pytest.out").read_text(errors="replace")[-4000:]))
    return result


VERBOSE = re.compile(r"(?:(?P<id1>tests/\S+::\S+) (?P<out1>PASSED|FAILED|ERROR|SKIPPED))|"
                     r"(?:(?P<out2>PASSED|FAILED|ERROR|SKIPPED) (?P<id2>tests/\S+::\S+))")


def parse_verbose(text: str) -> dict:
    """Outcomes from `pytest -v` lines, with or without xdist's `[gw0] PASSED id` form."""
    outcomes = {}
    for match in VERBOSE.finditer(text):
        test_id = match.group("id1") or match.group("id2")
        outcome = (match.group("out1") or match.group("out2")).lower()
        outcomes[test_id] = {"passed": "passed", "failed": "failed", "error": "error", "skipped": "skipped"}[outcome]
    cases = [{"id": k.replace("/", ".").replace(".py::", "::"), "outcome": v, "seconds": 0.0, "message": ""}
             for k, v in outcomes.items()]
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    return {"tests": len(cases), **counts, "cases": cases}


def parse_junit(path: Path) -> dict:
    """Counts and one row per test case (outcome, seconds, the first lines of a failure)."""
    root = ET.parse(path).getroot()
    cases = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or node.text or "")[:300]
                break
        cases.append({"id": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0.0), "message": message})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    return {"tests": len(cases), **counts, "cases": cases}


def bench_step(check: Check, name: str, workload: str, count: int, batch: int, rounds: int,
               attentions: tuple[str, ...] = IMPLEMENTATIONS, peer: bool = True, extra: tuple[str, ...] = ()) -> dict:
    """One `python -m tei_jax.bench` engine run; a hang is reported with the phase it hung in."""
    s = check.sizes
    status = check.work / f"{name}.status"
    status.unlink(missing_ok=True)
    (check.work / f"{name}.json").unlink(missing_ok=True)
    command = [sys.executable, "-m", "tei_jax.bench", "--mode", "engine", "--preset", s.preset,
               "--workload", workload, "--count", str(count), "--batch-size", str(batch), "--rounds", str(rounds),
               "--dtype", s.dtype, "--peer-dtype", s.peer_dtype, "--max-batch-tokens", str(s.max_batch_tokens),
               "--attention", ",".join(attentions), "--no-peak", "--quiet", "--work-dir", str(check.work / "models"),
               "--output-dir", str(check.work), "--name", name, "--status-file", str(status), *extra]
    if not peer:
        command.append("--no-peer")
    code, tail = check.run(name, command, check.step_timeout(name))
    result_path = check.work / f"{name}.json"
    if code != 0 or not result_path.exists():
        phase = json.loads(status.read_text())["phase"] if status.exists() else "start"
        raise StepFailed(f"{_failure(code, tail)}\n(phase in progress: {phase})")
    result = json.loads(result_path.read_text())
    add_peak_fractions(result, check.summary.get("peak"))
    plot = check.work / f"{name}.png"
    if plot.exists():
        shutil.copy(plot, check.out / f"{name}.png")
    return result


def add_peak_fractions(result: dict, peak: dict | None) -> None:
    if not peak:
        return
    for entry in result["systems"].values():
        if entry.get("model_flops_per_s"):
            entry["fraction_of_peak"] = entry["model_flops_per_s"] / peak["flops_per_s"]


def step_fixed512(check: Check) -> dict:
    s = check.sizes
    return bench_step(check, "fixed512", "fixed512", s.fixed_count, s.fixed_batch, s.fixed_rounds)


def step_query16(check: Check) -> dict:
    s = check.sizes
    return bench_step(check, "query16", "query16", s.query_count, 1, s.query_rounds)


def step_mixed(check: Check) -> dict:
    s = check.sizes
    return bench_step(check, "mixed", "mixed", s.mixed_count, s.mixed_count, s.mixed_rounds)


def step_trace(check: Check) -> dict:
    trace_dir = check.work / "trace"
    shutil.rmtree(trace_dir, ignore_errors=True)
    result = bench_step(check, "trace", "fixed512", check.sizes.trace_count, check.sizes.fixed_batch, 1,
                        attentions=("xla", "pallas"), peer=False, extra=("--trace-dir", str(trace_dir), "--no-plot"))
    files = [p for p in trace_dir.rglob("*") if p.is_file() and p.name.endswith((".xplane.pb", ".trace.json.gz"))]
    archive = check.out / "trace.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in files:
            tar.add(path, arcname=str(path.relative_to(check.work)))
    size = archive.stat().st_size
    if size > MAX_TRACE_BYTES:
        archive.unlink()
        return {"files": len(files), "bytes": size, "note": "too large to bring back; left out"}
    return {"files": len(files), "bytes": size, "archive": archive.name,
            "systems": {k: v.get("tokens_per_s") for k, v in result["systems"].items()}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(port: int, path: str, body: bytes | None = None) -> int | None:
    """HTTP status of a GET (or, with a body, a JSON POST) to the local server; None if it is not up."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        if body is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status
    except (OSError, http.client.HTTPException):
        return None


WARMING = re.compile(r"Warming up: (\d+)/(\d+) shapes compiled")


def start_to_ready(check: Check, phase: str, cache: Path, timeout: float) -> dict:
    """Start the server on the model folder; seconds until /health is 200 and one /embed works."""
    s = check.sizes
    port = free_port()
    log_path = check.work / f"server-{phase}.log"
    command = [sys.executable, "-m", "app.cli", "--model-id", str(model_folder(check)), "--port", str(port),
               "--hostname", "127.0.0.1", "--dtype", s.dtype, "--max-batch-tokens", str(s.server_batch_tokens),
               "--compile-cache-dir", str(cache)]
    check.log(f"\n===== server {phase}: {' '.join(command)} (timeout {timeout:.0f}s)")
    start = time.monotonic()
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=check.env,
                                   start_new_session=True)
    result: dict = {"phase": phase, "ready": False}
    try:
        while time.monotonic() - start < timeout:
            if process.poll() is not None:
                result["exit_code"] = process.returncode
                break
            if _status(port, "/health") == 200 and _status(port, "/embed", b'{"inputs": "warm up"}') == 200:
                result.update(ready=True, seconds=round(time.monotonic() - start, 2))
                break
            time.sleep(0.5)
        else:
            result["timed_out_after_s"] = round(timeout, 1)
    finally:
        stop_start = time.monotonic()
        _kill_group(process, grace=10.0)
        result["stop_seconds"] = round(time.monotonic() - stop_start, 2)
    text = log_path.read_text(errors="replace")
    check.log(text)
    counts = WARMING.findall(text)
    if counts:
        result["shapes_compiled"], result["shapes_total"] = int(counts[-1][0]), int(counts[-1][1])
    return result


def step_startup(check: Check) -> dict:
    budget, began = check.step_timeout("startup"), time.monotonic()
    ensure_model(check, budget * 0.5)
    cache = check.work / "cache-server"
    shutil.rmtree(cache, ignore_errors=True)
    results = {}
    results["cold"] = start_to_ready(check, "cold", cache, budget * 0.65)
    warm_timeout = max(10.0, min(budget - (time.monotonic() - began), check.remaining() - 5.0))
    results["warm"] = start_to_ready(check, "warm", cache, warm_timeout)
    results["cache_files"] = sum(1 for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0
    if not any(r.get("ready") for r in (results["cold"], results["warm"])):
        raise StepFailed(json.dumps(results))
    return results


STEP_FUNCTIONS: dict[str, Callable[[Check], dict]] = {
    "machine": step_machine, "model": step_model, "pytest": step_pytest,
    "fixed512": step_fixed512, "query16": step_query16, "mixed": step_mixed, "startup": step_startup,
    "trace": step_trace,
}


# Reading the results -------------------------------------------------------------------------

def implementation_of(system: str) -> str | None:
    match = re.fullmatch(r"tei-jax\[(\w+)\]", system)
    return match.group(1) if match else None


def parity_by_implementation(pytest_result: dict | None) -> dict[str, str]:
    """'passed' / 'failed' / 'not run' per attention implementation, from the GPU tests' ids
    (parity tests carry the implementation in their id; kernel tests count for pallas)."""
    verdict = {name: "not run" for name in IMPLEMENTATIONS}
    if not pytest_result or not pytest_result.get("cases"):
        return verdict
    for name in IMPLEMENTATIONS:
        relevant = [c for c in pytest_result["cases"]
                    if f"-{name}]" in c["id"] or (name == "pallas" and "test_flash_attention" in c["id"])
                    or (name == "xla" and "test_classifier_scores" in c["id"])]
        ran = [c for c in relevant if c["outcome"] != "skipped"]
        if any(c["outcome"] in ("failed", "error") for c in ran):
            verdict[name] = "failed"
        elif ran:
            verdict[name] = "passed"
    return verdict


def recommend(results: dict, parity: dict[str, str]) -> dict:
    """The fastest correct implementation for AUTO_BY_BACKEND["gpu"]: correct = its GPU tests
    passed and its vectors agree with sentence-transformers (cosine >= 0.999) wherever timed;
    fastest = best geometric mean over the workloads of its speed relative to xla (tokens/s for
    fixed512 and mixed, 1 / p50 latency for query16). xla stays unless another is > 3% faster."""
    # (an implementation without a peer to compare with counts as not agreeing)
    speeds: dict[str, dict[str, float]] = {}
    cosines: dict[str, dict[str, float]] = {}
    for workload in ("fixed512", "mixed", "query16"):
        run = results.get(workload)
        if not run:
            continue
        for system, entry in run["systems"].items():
            impl = implementation_of(system)
            if impl is None:
                continue
            value = 1.0 / entry["p50_ms"] if workload == "query16" and entry.get("p50_ms") else entry["tokens_per_s"]
            speeds.setdefault(impl, {})[workload] = value
            cosine = (entry.get("agreement_vs_peer") or {}).get("min_cosine")
            if cosine is not None:
                cosines.setdefault(impl, {})[workload] = cosine
    if "xla" not in speeds:
        return {"choice": "xla", "reason": "xla was not measured: keep the default", "scores": {},
                "line": 'AUTO_BY_BACKEND["gpu"] = "xla"'}
    # Agreeing with the peer: cosine >= 0.999 on every workload, or no worse than xla's own (the
    # peer is fp16, ours bf16: their gap alone must not rule an implementation out).
    reference = cosines.get("xla", {})
    agree = {impl: all(c >= COSINE_OK or c >= reference.get(w, 2.0) - 1e-4 for w, c in by.items())
             for impl, by in cosines.items()}
    scores = {}
    for impl, by_workload in speeds.items():
        shared = [w for w in by_workload if w in speeds["xla"]]
        if shared:
            scores[impl] = math.exp(sum(math.log(by_workload[w] / speeds["xla"][w]) for w in shared) / len(shared))
    correct = {impl for impl in scores if parity.get(impl) == "passed" and agree.get(impl, False)}
    best = max(correct, key=lambda impl: scores[impl], default=None)
    if best is not None and best != "xla" and scores[best] >= 1.03:
        choice, reason = best, f"{best} passed its parity tests and runs {scores[best]:.2f}x xla (geometric mean over workloads)"
    else:
        choice, reason = "xla", "no other implementation is both correct and > 3% faster than xla"
        if parity.get("xla") != "passed" or not agree.get("xla", False):
            reason += f" (xla's own GPU parity: {parity.get('xla')}, agrees with the peer: {agree.get('xla')})"
    return {"choice": choice, "reason": reason, "scores": scores, "parity": parity,
            "agrees_with_peer": agree, "line": f'AUTO_BY_BACKEND["gpu"] = "{choice}"'}


def targets(results: dict, parity: dict[str, str], choice: str) -> list[dict]:
    """The issue's targets, each with the measured value and whether it is met."""
    rows = []
    fixed = (results.get("fixed512") or {}).get("systems", {})
    best = fixed.get(f"tei-jax[{choice}]") or {}
    if best:
        peer = fixed.get(PEER) or {}
        rows.append({"target": f"fixed512 {best.get('dtype')} ({choice}) >= {TARGETS['ratio_to_st_fp16']}x "
                               f"ST {peer.get('dtype', 'float16')}",
                     "value": best.get("ratio_to_peer"), "met": (best.get("ratio_to_peer") or 0) >= TARGETS["ratio_to_st_fp16"]})
        rows.append({"target": f"fixed512 ({choice}) >= {TARGETS['fraction_of_peak']:.0%} of measured bf16 peak",
                     "value": best.get("fraction_of_peak"),
                     "met": (best.get("fraction_of_peak") or 0) >= TARGETS["fraction_of_peak"]})
    query = ((results.get("query16") or {}).get("systems", {})).get(f"tei-jax[{choice}]") or {}
    if query:
        rows.append({"target": f"16-token query p50 ({choice}) < {TARGETS['query16_p50_ms']} ms",
                     "value": query.get("p50_ms"), "met": (query.get("p50_ms") or 1e9) < TARGETS["query16_p50_ms"]})
    rows.append({"target": "every GPU parity test passes", "value": parity,
                 "met": all(v == "passed" for v in parity.values())})
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def final_table(check: Check) -> str:
    summary = check.summary
    lines = [f"tei-jax GPU check ({'DRY RUN, CPU' if summary['dry_run'] else 'GPU'}), "
             f"{summary.get('elapsed_s', 0):.0f}s; machine: {_machine_line(summary)}"]
    peak = summary.get("peak")
    if peak:
        lines.append(f"measured {peak['dtype']} matmul peak ({peak['size']}^3): {peak['flops_per_s'] / 1e12:.1f} TFLOP/s")
    lines.append("")
    lines.append(f"{'step':<9} {'status':<8} {'seconds':>7}  note")
    for name, step in summary["steps"].items():
        note = (step.get("error") or "").splitlines()[0][:90] if step.get("error") else step.get("note", "")
        lines.append(f"{name:<9} {step['status']:<8} {step.get('seconds', 0):>7.1f}  {note}")
    pytest_result = summary["results"].get("pytest")
    if pytest_result:
        lines.append(f"\npytest -m gpu: {pytest_result.get('passed', 0)} passed, {pytest_result.get('failed', 0)} failed, "
                     f"{pytest_result.get('error', 0)} errors, {pytest_result.get('skipped', 0)} skipped")
        for case in pytest_result.get("cases", []):
            if case["outcome"] in ("failed", "error"):
                lines.append(f"  FAILED {case['id']}: {case['message'].splitlines()[0][:110] if case['message'] else ''}")
    for workload in ("fixed512", "query16", "mixed"):
        run = summary["results"].get(workload)
        if not run:
            continue
        work = run["workload"]
        lines.append(f"\n{workload}: {run['preset']}, {work['count']} texts of mean {work['mean_tokens']:.0f} tokens, "
                     f"{run['batch_size']} per call, budget {run.get('max_batch_tokens')} tokens")
        lines.append(f"  {'system':<22} {'dtype':<9} {'tokens/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs ST':>6} "
                     f"{'%peak':>6} {'cos vs ST':>9} {'pad eff':>7}")
        for name, entry in run["systems"].items():
            cosine = (entry.get("agreement_vs_peer") or {}).get("min_cosine")
            lines.append(f"  {name:<22} {entry['dtype']:<9} {_fmt(entry.get('tokens_per_s'), '10.0f')} "
                         f"{_fmt(entry.get('p50_ms'), '8.2f')} {_fmt(entry.get('p99_ms'), '8.2f')} "
                         f"{_fmt(entry.get('ratio_to_peer'), '5.2f') + 'x' if entry.get('ratio_to_peer') else '     -'} "
                         f"{_fmt(entry.get('fraction_of_peak'), '6.1%')} "
                         f"{_fmt(cosine, '9.5f')} {_fmt(entry.get('padding_efficiency'), '7.1%')}")
        for name, error in (run.get("failed_systems") or {}).items():
            lines.append(f"  {name:<22} FAILED: {error.splitlines()[0][:100]}")
    startup = summary["results"].get("startup")
    if startup:
        for phase in ("cold", "warm"):
            r = startup.get(phase) or {}
            state = f"ready in {r['seconds']:.1f}s" if r.get("ready") else (
                f"NOT ready (timeout {r.get('timed_out_after_s')}s)" if "timed_out_after_s" in r else
                f"NOT ready (exit {r.get('exit_code')})")
            shapes = f", {r.get('shapes_compiled')}/{r.get('shapes_total')} shapes" if "shapes_total" in r else ""
            lines.append(f"{'' if phase == 'warm' else chr(10)}server start-to-ready, {phase} compile cache: {state}{shapes}")
    rec = summary.get("recommendation")
    if rec:
        lines.append("")
        for row in summary.get("targets", []):
            value = row["value"]
            shown = (f"{value:.3g}" if isinstance(value, float) else json.dumps(value)) if value is not None else "-"
            lines.append(f"target {'MET ' if row['met'] else 'MISS'} {row['target']}: {shown}")
        lines.append(f"\nrecommendation: {rec['line']}  ({rec['reason']})")
    return "\n".join(lines)


def _machine_line(summary: dict) -> str:
    machine = summary["results"].get("machine")
    if not machine:
        return "unknown"
    smi = ((machine.get("accelerator") or {}).get("nvidia_smi") or [{}])[0]
    gpu = smi.get("name") or ", ".join(machine.get("devices", []))
    return (f"{gpu}, jax {machine.get('jax_version')}, jaxlib {machine.get('jaxlib_version')}, "
            f"backend {machine.get('jax_backend')}, python {machine.get('python')}")


def finish(check: Check) -> None:
    results = check.summary["results"]
    parity = parity_by_implementation(results.get("pytest"))
    rec = recommend(results, parity)
    check.summary["recommendation"] = rec
    check.summary["targets"] = targets(results, parity, rec["choice"])
    check.write_summary()
    text = final_table(check)
    (check.out / "table.txt").write_text(text + "\n")
    check.log("\n" + text)
    print("\n" + text, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "bench/results/gpu-check",
                   help="where summary.json, the log, the table and the plots go (default $OUT)")
    p.add_argument("--work", default=None, help="scratch: models, compile caches, step outputs "
                                                "(default /tmp/tei-jax-gpu-check, or OUT/../work in a dry run)")
    p.add_argument("--dry-run", action="store_true", help="CPU backend, tiny model, tiny counts, same code path")
    p.add_argument("--budget", type=float, default=None, help="seconds for all steps (default 420; dry run 1500)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--pytest-targets", default=None,
                   help="comma-separated test paths or node ids for the pytest step (default: tests/gpu,tests/kernels; "
                        "a few representative node ids in a dry run)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.work is None:
        args.work = str(Path(args.out).resolve().parent / "gpu-check-work") if args.dry_run else "/tmp/tei-jax-gpu-check"
    wanted = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STEP_FUNCTIONS]
    if unknown:
        print(f"unknown steps {unknown}; choose from {', '.join(STEPS)}", file=sys.stderr)
        return 2
    check = Check(args)
    check.say(f"GPU check{' (dry run)' if args.dry_run else ''}: steps {', '.join(wanted)}; "
              f"budget {check.remaining():.0f}s; out {check.out}")
    for name in STEPS:
        if name not in wanted:
            continue
        left = check.remaining()
        if left < MINIMUM[name]:
            check.summary["steps"][name] = {"status": "skipped", "note": f"{left:.0f}s left < {MINIMUM[name]}s needed"}
            check.say(f"{name}: skipped ({left:.0f}s left)")
            check.write_summary()
            continue
        check.say(f"{name}: starting (timeout {check.step_timeout(name):.0f}s)")
        started = time.monotonic()
        try:
            check.summary["results"][name] = STEP_FUNCTIONS[name](check)
            status = {"status": "ok"}
        except StepFailed as error:
            status = {"status": "timeout" if str(error).startswith("timed out") else "failed", "error": str(error)}
        except Exception as error:  # noqa: BLE001 - a broken step must not lose the others
            status = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        status["seconds"] = round(time.monotonic() - started, 1)
        check.summary["steps"][name] = status
        check.say(f"{name}: {status['status']} in {status['seconds']:.1f}s"
                  + (f" - {status['error'].splitlines()[0][:160]}" if "error" in status else ""))
        check.write_summary()
    finish(check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
