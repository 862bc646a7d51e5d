"""Short-request latency while another client's 2 MB body is tokenized (issue 8, item 5).

Starts `python -m app.cli` (the bundled MiniLM, default settings: one tokenization thread on
a 2-core box) from --repo, keeps --clients clients sending a one-sentence /embed back to back,
and every few seconds sends one /embed of 30 CJK inputs of ~63 KB each (1.9 MB). Prints and
writes the short requests' latency while a big request is in flight, and with none in flight: in total, and the part before the batcher (total minus the
x-queue-time and x-inference-time headers), which is where the tokenizer pool's wait shows.

    python bench/tokenizer_fairness.py --repo . --out bench/results/tokenizer-fairness-after.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def big_body(inputs: int = 30, chars: int = 21_000) -> bytes:
    rng = random.Random(0)
    texts = ["".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(chars)) for _ in range(inputs)]
    return json.dumps({"inputs": texts}, ensure_ascii=False).encode()


def percentiles(samples: list[tuple[float, float]]) -> dict:
    """p50/p99/max of the total latency and of its part before the batcher."""
    if not samples:
        return {"n": 0}
    figures = {"n": len(samples)}
    for column, name in ((0, "total"), (1, "before_batcher")):
        ms = np.array([sample[column] for sample in samples]) * 1000
        figures[name] = {"p50_ms": round(float(np.percentile(ms, 50)), 1),
                         "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}
    return figures


@contextlib.contextmanager
def running_server(repo: str, flags: list[str], log_path: Path) -> Iterator[str]:
    """`python -m app.cli` from `repo` on a free port (extra `flags`), until /health is 200;
    yields its URL and stops it (SIGTERM) afterwards. Its log goes to `log_path`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false")
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "--hostname", "127.0.0.1", "--port", str(port),
                                   *flags], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start (see {log_path})")
                try:
                    if requests.get(url + "/health", timeout=5).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.5)
            yield url
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=".", help="the checkout whose server is measured")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4, help="big requests, one after another")
    parser.add_argument("--out", help="JSON file for the figures")
    args = parser.parse_args()

    with running_server(args.repo, [], Path(args.out or "/tmp/fairness").with_suffix(".log")) as url:
        body = big_body()
        in_flight = threading.Event()
        stop = threading.Event()
        during, idle, failures = [], [], []

        def short_client(i: int) -> None:
            with requests.Session() as session:
                n = 0
                while not stop.is_set():
                    busy = in_flight.is_set()
                    started = time.perf_counter()
                    answer = session.post(url + "/embed", json={"inputs": f"short query {i} {n}"}, timeout=120)
                    seconds = time.perf_counter() - started
                    if answer.status_code != 200:
                        failures.append(answer.status_code)
                        continue
                    # Before the batcher: total minus the x-queue-time and x-inference-time
                    # (what the tokenizer pool, its own tokenization and HTTP took).
                    batcher = sum(int(answer.headers.get(h, 0)) for h in ("x-queue-time", "x-inference-time"))
                    sample = (seconds, max(0.0, seconds - batcher / 1000))
                    (during if busy or in_flight.is_set() else idle).append(sample)
                    n += 1

        threads = [threading.Thread(target=short_client, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        big = []
        try:
            time.sleep(3)
            for _ in range(args.rounds):
                in_flight.set()
                started = time.perf_counter()
                answer = requests.post(url + "/embed", data=body, headers={"Content-Type": "application/json"},
                                       timeout=300)
                big.append({"status": answer.status_code, "seconds": round(time.perf_counter() - started, 2),
                            "tokenization_ms_per_input": answer.headers.get("x-tokenization-time")})
                in_flight.clear()
                time.sleep(2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(180)
        figures = {"repo": str(Path(args.repo).resolve()), "body_bytes": len(body), "clients": args.clients,
                   "big_requests": big, "short_during_big": percentiles(during),
                   "short_without_big": percentiles(idle), "short_failures": failures}
        print(json.dumps(figures, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
