"""Closed-loop gRPC load on tei.v1.Embed, unary or streaming, shaped like loadgen.drive.

Each client thread has its own channel (its own HTTP/2 connection, as each HTTP client has its
own keep-alive connection) and sends the next request as soon as the previous answer arrives:
a unary Embed call, or one message on a bidi EmbedStream it keeps open for the whole round.

The bench lives in tei_jax, which never imports the app, so requests are encoded here: an
EmbedRequest with `inputs` (field 1) and `normalize = true` (field 3) is a few bytes, and
answers are counted, not decoded (the HTTP load does not parse its JSON either).
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from typing import Sequence

EMBED = "/tei.v1.Embed/Embed"
EMBED_STREAM = "/tei.v1.Embed/EmbedStream"
UNARY, STREAM = "unary", "stream"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def embed_request(text: str) -> bytes:
    """tei.v1.EmbedRequest{inputs: text, normalize: true} in protobuf wire format."""
    data = text.encode("utf-8")
    return b"\x0a" + _varint(len(data)) + data + b"\x18\x01"


@dataclasses.dataclass
class GrpcTarget:
    """Our server's gRPC port, driven with unary calls or one stream per client."""

    name: str
    port: int
    mode: str  # UNARY or STREAM

    def body(self, texts: list[str]) -> bytes:
        if len(texts) != 1:
            raise ValueError("a tei.v1 EmbedRequest carries one input: use --batch-size 1 with --protocol grpc")
        return embed_request(texts[0])


def drive(target: GrpcTarget, bodies: Sequence[bytes], concurrency: int, duration: float | None = None,
          requests: int | None = None) -> dict:
    """Run the load; the same summary as loadgen.drive (seconds, counts, latencies)."""
    import grpc

    if duration is None and requests is None:
        raise ValueError("give a duration or a request count")
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.perf_counter() + duration if duration is not None else None
    address = f"127.0.0.1:{target.port}"

    def next_body() -> bytes | None:
        index = next(counter)
        if (requests is not None and index >= requests) or (deadline is not None and time.perf_counter() >= deadline):
            return None
        return bodies[index % len(bodies)]

    def record(elapsed: float | None, reason: str = "") -> None:
        with lock:
            (latencies.append(elapsed) if elapsed is not None else failures.append(reason))

    def unary_client(channel) -> None:
        call = channel.unary_unary(EMBED)  # no serializers: bytes in, bytes out
        while (body := next_body()) is not None:
            t0 = time.perf_counter()
            try:
                call(body, timeout=120)
                record(time.perf_counter() - t0)
            except grpc.RpcError as exc:
                record(None, f"gRPC {exc.code().name}")

    def stream_client(channel) -> None:
        outbox: queue.SimpleQueue = queue.SimpleQueue()
        stream = channel.stream_stream(EMBED_STREAM)(iter(outbox.get, None), timeout=None)
        try:
            while (body := next_body()) is not None:
                t0 = time.perf_counter()
                outbox.put(body)
                next(stream)
                record(time.perf_counter() - t0)
        except (grpc.RpcError, StopIteration) as exc:
            record(None, f"gRPC {exc.code().name}" if isinstance(exc, grpc.RpcError) else "stream ended")
        finally:
            outbox.put(None)
            stream.cancel()

    client = unary_client if target.mode == UNARY else stream_client

    def run() -> None:
        # A channel per client, not shared: separate connections, like the HTTP clients.
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            client(channel)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"seconds": wall, "completed": len(latencies), "failed": len(failures),
            "failure_kinds": sorted(set(failures)), "latencies": latencies}
