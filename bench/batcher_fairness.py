"""Short-request latency while one huge call is being inferred, and that call's throughput.

Starts `python -m app.cli` (the bundled MiniLM; client batch and permit limits raised so one
request may carry --huge-inputs texts) from --repo and waits until every shape is built.
Then, per round: the huge call alone (its throughput with nothing beside it), and the huge
call again while one-sentence /embed requests arrive at --rate per second, each sent on its
own schedule, not after the previous answer (clients that wait for their answer send few
requests while they are stuck, so their percentiles would undercount the wait). Reported:
the latency of the short requests sent while the huge call was in flight, and of those that
did not overlap it, total and in the batcher (x-queue-time + x-inference-time). Before fair
turns in the batcher, a short request queued behind the huge call's remaining batches.

    python bench/batcher_fairness.py --repo . --out bench/results/batcher-fairness-after.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from tokenizer_fairness import running_server

WORDS = ("data model query vector search embedding token batch server device latency "
         "throughput shape kernel matrix layer attention pooling request client answer").split()


def huge_body(inputs: int, seed: int = 0) -> bytes:
    """`inputs` English-like texts of 8-60 words (about 10-80 tokens each)."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 60))) for _ in range(inputs)]
    return json.dumps({"inputs": texts}).encode()


def latency(samples: list[tuple[float, float]]) -> dict:
    """p50/p99/max (ms) of the total latency and of the batcher's part of it."""
    if not samples:
        return {"n": 0}
    figures: dict = {"n": len(samples)}
    for column, name in ((0, "total"), (1, "batcher")):
        ms = np.array([sample[column] for sample in samples]) * 1000
        figures[name] = {"p50_ms": round(float(np.percentile(ms, 50)), 1),
                         "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}
    return figures


def wait_warm(url: str, deadline_s: float = 600) -> None:
    """Until /metrics says every warmup shape is built (so no sample meets a compile)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        text = requests.get(url + "/metrics", timeout=5).text
        ready = re.search(r"^te_warmup_shapes_ready (\S+)", text, re.M)
        total = re.search(r"^te_warmup_shapes (\S+)", text, re.M)
        if ready and total and float(total.group(1)) > 0 and float(ready.group(1)) >= float(total.group(1)):
            return
        time.sleep(0.5)
    raise SystemExit("warmup did not finish")


def short_request(url: str, text: str, delay: float) -> tuple[float, float, float, int]:
    """One /embed of `text`, sent `delay` seconds from now: (sent at, total seconds, the
    batcher's part: x-queue-time + x-inference-time, status)."""
    time.sleep(delay)
    sent = time.perf_counter()
    answer = requests.post(url + "/embed", json={"inputs": text}, timeout=120)
    total = time.perf_counter() - sent
    batcher = sum(int(answer.headers.get(h, 0)) for h in ("x-queue-time", "x-inference-time")) / 1000
    return sent, total, batcher, answer.status_code


def huge_call(url: str, body: bytes) -> dict:
    started = time.perf_counter()
    answer = requests.post(url + "/embed", data=body, headers={"Content-Type": "application/json"}, timeout=600)
    seconds = time.perf_counter() - started
    tokens = int(answer.headers.get("x-compute-tokens", 0))
    return {"status": answer.status_code, "seconds": round(seconds, 3), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=".", help="the checkout whose server is measured")
    parser.add_argument("--rate", type=float, default=20.0, help="short requests per second beside the huge call")
    parser.add_argument("--window-s", type=float, default=12.0,
                        help="seconds of short requests per round (the huge call starts 1 s in)")
    parser.add_argument("--huge-inputs", type=int, default=1024, help="texts in the huge call")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (huge alone, huge with short clients)")
    parser.add_argument("--out", help="JSON file for the figures")
    args = parser.parse_args()

    limit = str(max(args.huge_inputs, 32))
    flags = ["--max-client-batch-size", limit, "--max-concurrent-requests", str(2 * int(limit) + 512)]
    log_path = Path(args.out or "/tmp/batcher-fairness").with_suffix(".log")
    with running_server(args.repo, flags, log_path) as url:
        wait_warm(url)
        body = huge_body(args.huge_inputs)
        huge_call(url, body)  # one untimed call: the first touch of every path
        alone, beside, during, idle, failures = [], [], [], [], []
        for round_ in range(args.rounds):
            alone.append(huge_call(url, body))
            window: dict = {}
            with ThreadPoolExecutor(max_workers=256) as pool:
                shorts = [pool.submit(short_request, url, f"short query {round_} {i}",
                                      delay=i / args.rate) for i in range(int(args.rate * args.window_s))]
                time.sleep(1.0)
                window["start"] = time.perf_counter()
                beside.append(huge_call(url, body))
                window["end"] = time.perf_counter()
                for future in shorts:
                    sent, total, batcher, status = future.result()
                    if status != 200:
                        failures.append(status)
                    elif window["start"] <= sent <= window["end"]:
                        during.append((total, batcher))
                    elif sent > window["end"] or sent + total < window["start"]:
                        idle.append((total, batcher))

        def rate(calls: list[dict]) -> dict:
            return {"median_s": float(np.median([c["seconds"] for c in calls])),
                    "median_tokens_per_s": float(np.median([c["tokens_per_s"] for c in calls]))}

        figures = {"repo": str(Path(args.repo).resolve()), "huge_inputs": args.huge_inputs,
                   "huge_body_bytes": len(body), "short_rate_per_s": args.rate, "rounds": args.rounds,
                   "huge_alone": {**rate(alone), "calls": alone},
                   "huge_beside_short_clients": {**rate(beside), "calls": beside},
                   "short_during_huge": latency(during), "short_without_huge": latency(idle),
                   "short_failures": failures}
        print(json.dumps(figures, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
