"""Closed-loop HTTP load: N client threads, each with one keep-alive connection, sending the
next request as soon as the previous answer arrives, for a duration or a request count."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from typing import Callable, Sequence


def drive(port: int, path: str, bodies: Sequence[bytes], concurrency: int, duration: float | None = None,
          requests: int | None = None, on_done: Callable[[], None] | None = None) -> dict:
    """Run the load; returns wall seconds, completed/failed counts and each latency (seconds)."""
    if duration is None and requests is None:
        raise ValueError("give a duration or a request count")
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.perf_counter() + duration if duration is not None else None
    headers = {"Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            index = next(counter)
            if requests is not None and index >= requests:
                break
            if deadline is not None and time.perf_counter() >= deadline:
                break
            body = bodies[index % len(bodies)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
                reason = f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                ok, reason = False, type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            elapsed = time.perf_counter() - t0
            with lock:
                (latencies.append(elapsed) if ok else failures.append(reason))
            if on_done is not None:
                on_done()
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"seconds": wall, "completed": len(latencies), "failed": len(failures),
            "failure_kinds": sorted(set(failures)), "latencies": latencies}
