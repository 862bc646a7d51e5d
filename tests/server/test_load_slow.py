"""Load with slow clients (slow marker): no answer lost or wrong, no 5xx, memory flat, and
normal requests fast while 200 slow connections are open.

`python -m pytest -m slow -s tests/server/test_load_slow.py` prints the figures. The server is
started from this checkout, or from TEI_JAX_SERVER_REPO (another checkout, for "before"
figures).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import tiny_models as tm
from live_servers import Server

CLIENTS = 64
SLOW_CONNECTIONS = 200
LOAD_SECONDS = float(os.environ.get("TEI_JAX_LOAD_SECONDS", 120))


def worker_rss_kib(master_pid: int) -> int:
    """Resident memory of the server's worker (the master's child)."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class SlowClients:
    """`count` connections that trickle header bytes (one every `every` seconds) and never
    finish a request; a connection the server closes is opened again."""

    def __init__(self, url: str, count: int, every: float = 1.0):
        host, port = url.rsplit("/", 1)[1].split(":")
        self.address = (host, int(port))
        self.count, self.every = count, every
        self.stop = threading.Event()
        self.reopened = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=5)
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\n")
        return sock

    def _run(self) -> None:
        socks = [self._open() for _ in range(self.count)]
        while not self.stop.wait(self.every):
            for i, sock in enumerate(socks):
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    sock.close()
                    self.reopened += 1
                    try:
                        socks[i] = self._open()
                    except OSError:
                        pass
        for sock in socks:
            sock.close()

    def __enter__(self):
        self.thread.start()
        time.sleep(2)  # all open before the load starts
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


@pytest.fixture(scope="module")
def load_server():
    server = Server("load", ["--model-id", str(tm.embedding_model()), "--max-batch-tokens", "256"])
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@pytest.mark.slow
def test_200_slow_connections_leave_normal_requests_fast(load_server):
    url = load_server.url + "/embed"
    latencies, failures = [], []
    with SlowClients(load_server.url, SLOW_CONNECTIONS):
        deadline = time.monotonic() + 30
        with requests.Session() as session:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    response = session.post(url, json={"inputs": "a normal request"}, timeout=30)
                    if response.status_code != 200:
                        failures.append(response.status_code)
                except requests.RequestException as exc:
                    failures.append(type(exc).__name__)
                latencies.append(time.perf_counter() - started)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"\nslow connections: {SLOW_CONNECTIONS}, requests {len(latencies)}, failures {len(failures)}, "
          f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    assert not failures, failures[:10]
    assert p99 < 1.0


@pytest.mark.slow
def test_64_clients_for_2_minutes_with_200_slow_connections(load_server):
    rng = np.random.default_rng(11)
    texts = tm.random_texts(rng, 200, 1, 120)
    bodies = [{"inputs": texts[i]} if i % 3 else {"inputs": texts[i:i + 4]} for i in range(len(texts))]
    url = load_server.url + "/embed"
    alone = {t: np.array(requests.post(url, json={"inputs": t}, timeout=60).json()[0]) for t in texts}
    counts = {"ok": 0, "wrong": 0, "5xx": 0, "other": 0, "lost": 0}
    latencies: list[float] = []
    lock = threading.Lock()

    def client(seed: int, until: float) -> None:
        local = np.random.default_rng(seed)
        with requests.Session() as session:
            while time.monotonic() < until:
                body = bodies[int(local.integers(len(bodies)))]
                started = time.perf_counter()
                try:
                    response = session.post(url, json=body, timeout=60)
                except requests.RequestException:
                    outcome = "lost"
                else:
                    if response.status_code >= 500:
                        outcome = "5xx"
                    elif response.status_code != 200:
                        outcome = "other"
                    else:
                        items = [body["inputs"]] if isinstance(body["inputs"], str) else body["inputs"]
                        answer = np.array(response.json())
                        same = answer.shape == (len(items), 32) and all(
                            np.allclose(v, alone[t], atol=2e-5) for t, v in zip(items, answer))
                        outcome = "ok" if same else "wrong"
                with lock:
                    counts[outcome] += 1
                    latencies.append(time.perf_counter() - started)

    with SlowClients(load_server.url, SLOW_CONNECTIONS) as slow:
        warm_until = time.monotonic() + 10
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda i: client(i, warm_until), range(CLIENTS)))
        rss_after_warmup = worker_rss_kib(load_server.proc.pid)
        warmup = dict(counts)
        latencies.clear()
        counts.update({key: 0 for key in counts})
        until = time.monotonic() + LOAD_SECONDS
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda i: client(100 + i, until), range(CLIENTS)))
        rss_end = worker_rss_kib(load_server.proc.pid)
        reopened = slow.reopened
    growth = rss_end / rss_after_warmup - 1
    print(f"\n{CLIENTS} clients x {LOAD_SECONDS:.0f} s with {SLOW_CONNECTIONS} slow connections "
          f"(reopened {reopened}): {counts}, {len(latencies)} requests, p50 {percentile(latencies, 50) * 1000:.0f} ms, "
          f"p99 {percentile(latencies, 99) * 1000:.0f} ms, RSS {rss_after_warmup / 1024:.0f} -> "
          f"{rss_end / 1024:.0f} MiB ({growth:+.1%})")
    print(f"warmup (10 s): {warmup}")
    for seen in (warmup, counts):
        assert seen["lost"] == seen["wrong"] == seen["5xx"] == 0, seen
    assert counts["ok"] > 0
    assert growth < 0.05
