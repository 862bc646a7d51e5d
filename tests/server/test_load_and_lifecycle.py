"""Concurrency (each answer equals the single-request answer, no compile while serving),
/health before and after warmup, and SIGTERM draining requests in flight."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
import tiny_models as tm
from live_servers import Server


def test_200_concurrent_mixed_requests_equal_single_answers(embed_server, auth):
    rng = np.random.default_rng(7)
    bodies = []
    for i in range(200):
        if i % 4 == 0:  # a client batch of mixed lengths
            bodies.append({"inputs": tm.random_texts(rng, int(rng.integers(2, 8)), 1, 150)})
        else:
            bodies.append({"inputs": tm.random_texts(rng, 1, 1, 150)[0]})
    url = embed_server.url + "/embed"
    # Only compiles after the whole warmup count; /health alone would let this check pass early.
    embed_server.wait_warmed()

    def call(body):
        response = requests.post(url, json=body, headers=auth, timeout=120)
        assert response.status_code == 200, response.text
        return np.array(response.json())

    texts = sorted({t for b in bodies for t in ([b["inputs"]] if isinstance(b["inputs"], str) else b["inputs"])})
    alone = {t: call({"inputs": t})[0] for t in texts}
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(call, bodies))
    for body, answer in zip(bodies, answers):
        items = [body["inputs"]] if isinstance(body["inputs"], str) else body["inputs"]
        assert answer.shape == (len(items), 32)
        for text, vector in zip(items, answer):
            assert np.allclose(vector, alone[text], atol=2e-5), text
    metrics = requests.get(embed_server.url + "/metrics").text
    assert re.search(r"^te_compilations_after_warmup 0\.0$", metrics, re.M)
    efficiency = float(re.search(r"^te_padding_efficiency (\S+)$", metrics, re.M).group(1))
    assert 0 < efficiency <= 1


def test_health_is_503_until_warm_and_sigterm_drains_requests_in_flight():
    server = Server("lifecycle", ["--model-id", str(tm.embedding_model()), "--max-batch-tokens", "256",
                                  "--graceful-timeout", "30"])
    try:
        seen = []
        deadline = time.monotonic() + 300
        while not seen or seen[-1] != 200:
            assert time.monotonic() < deadline, server.log()[-3000:]
            assert server.proc.poll() is None, server.log()[-3000:]
            try:
                response = requests.get(server.url + "/health", timeout=5)
                seen.append(response.status_code)
                if response.status_code == 503:
                    assert response.json() == {"error": "unhealthy", "error_type": "Unhealthy"}
                    # 503 while warming up; 200 if it became ready since /health answered
                    # (covering shapes load in about a second), and then /health is 200 too.
                    status = requests.post(server.url + "/embed", json={"inputs": "a"}).status_code
                    assert status in (503, 200)
                    if status == 200:
                        assert requests.get(server.url + "/health", timeout=5).status_code == 200
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        assert seen[0] == 503 and seen[-1] == 200
        assert "Warming up:" in server.log() and "Ready" in server.log()
        # /health is 200 once every request has a covering shape; the warmup gauges then
        # climb to the full set in the background, and nothing compiles after that.
        while True:
            metrics = requests.get(server.url + "/metrics", timeout=10).text
            ready = float(re.search(r"^te_warmup_shapes_ready (\S+)$", metrics, re.M).group(1))
            total = float(re.search(r"^te_warmup_shapes (\S+)$", metrics, re.M).group(1))
            assert total > 0 and requests.get(server.url + "/health", timeout=10).status_code == 200
            if ready >= total:
                break
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.1)
        assert re.search(r"^te_compilations_after_warmup 0\.0$", metrics, re.M)

        # Heavy requests (32 long inputs each), then SIGTERM once the server has accepted all
        # of them (connections still in the kernel's backlog are not accepted requests).
        body = {"inputs": [f"sentence number {i} " + "word " * 120 for i in range(32)]}
        finished: list[tuple[float, int]] = []
        first_done = threading.Event()

        def call(_):
            response = requests.post(server.url + "/embed", json=body, timeout=120)
            finished.append((time.monotonic(), response.status_code))
            first_done.set()
            return response.status_code

        early = socket.create_connection(("127.0.0.1", server.port), timeout=30)  # connected, quiet
        with ThreadPoolExecutor(max_workers=15) as pool:
            futures = [pool.submit(call, i) for i in range(15)]
            # (_total: the older names, for runs against an older checkout)
            pattern = re.compile(r'^te_request_count(?:_total)?\{method="batch"\} (\S+)$', re.M)
            while True:
                found = pattern.search(requests.get(server.url + "/metrics", timeout=10).text)
                if found and float(found.group(1)) >= len(futures):
                    break
                assert not first_done.is_set() or len(finished) < len(futures)
                time.sleep(0.01)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            refused_at = _refused(server.port, within=20)
            with early:  # it connected before the drain: its request, sent now, is answered
                early.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert early.recv(4096).startswith(b"HTTP/1.1 200")
            statuses = [f.result() for f in futures]
        assert statuses == [200] * 15  # 15 x 32 items < 512 permits
        assert any(at > signalled for at, _ in finished), "no request was still in flight at SIGTERM"
        # New connections were refused while the accepted requests were still being answered
        # (so a load balancer fails over), not accepted and reset when the drain ended.
        assert refused_at is not None and refused_at < max(at for at, _ in finished)
        assert server.proc.wait(60) == 0
        assert "Shutting down" in server.log()
    finally:
        server.stop()


def _refused(port: int, within: float) -> float | None:
    """When a connection to `port` was first refused (None if not within `within` seconds)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return time.monotonic()
        except OSError:
            pass
        time.sleep(0.05)
    return None
