"""The worker reads whole requests in its main loop: the framing rules, and slow clients that
hold no thread of a real server."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from live_servers import free_port

from app.worker import Framing, RequestReader, too_large_response

HEAD = b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def feed(reader: RequestReader, *parts: bytes) -> list[Framing]:
    return [reader.feed(part) for part in parts]


def test_a_request_is_complete_only_with_its_whole_body():
    body = b'{"inputs": "a"}'
    head = HEAD + b"Content-Length: %d\r\n\r\n" % len(body)
    assert feed(RequestReader(100), head[:10], head[10:], body[:5], body[5:]) == [
        Framing.INCOMPLETE, Framing.INCOMPLETE, Framing.INCOMPLETE, Framing.COMPLETE]
    assert feed(RequestReader(100), b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") == [Framing.COMPLETE]
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    assert feed(RequestReader(100), chunked, b"5\r\nhello\r\n", b"0\r\n\r\n") == [
        Framing.INCOMPLETE, Framing.INCOMPLETE, Framing.COMPLETE]


def test_oversized_bodies_are_refused_before_they_are_read():
    # A Content-Length over the limit: as soon as the headers are in, with no body byte sent.
    assert feed(RequestReader(100), HEAD + b"Content-Length: 101\r\n\r\n") == [Framing.TOO_LARGE]
    assert feed(RequestReader(100), HEAD + b"Content-Length: 100\r\n\r\n") == [Framing.INCOMPLETE]
    expecting = RequestReader(100)  # no "100 Continue" for a body that will be refused
    assert feed(expecting, HEAD + b"Expect: 100-continue\r\nContent-Length: 101\r\n\r\n") == [Framing.TOO_LARGE]
    assert not expecting.wants_continue
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    assert feed(RequestReader(100), chunked, b"40\r\n" + b"x" * 64 + b"\r\n", b"40\r\n" + b"x" * 64 + b"\r\n") == [
        Framing.INCOMPLETE, Framing.INCOMPLETE, Framing.TOO_LARGE]


def test_malformed_requests_go_straight_to_gunicorn():
    assert feed(RequestReader(100), b"NOT HTTP AT ALL\r\n\r\n") == [Framing.MALFORMED]


def test_the_413_is_teis_text_with_the_apps_cors_header():
    head, body = too_large_response(None, ()).split(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 413 Payload Too Large"
    assert body == b"Failed to buffer the request body: length limit exceeded"
    assert b"Content-Length: 56" in head and b"Connection: close" in head and b"Access-Control" not in head
    assert b"Access-Control-Allow-Origin: *" in too_large_response(b"http://a.test", ())
    listed = too_large_response(b"http://a.test", ("http://a.test",))
    assert b"Access-Control-Allow-Origin: http://a.test" in listed and b"Vary: Origin" in listed
    other = too_large_response(b"http://b.test", ("http://a.test",))
    assert b"Access-Control-Allow-Origin" not in other and b"Vary: Origin" in other


@pytest.fixture
def one_thread_worker():
    """gunicorn with TEIWorker and a single thread over tests/server/wsgi_stub.py."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", "app.worker.TEIWorker", "--threads", "1",
                             "-b", f"127.0.0.1:{port}", "--pythonpath", str(Path(__file__).parent),
                             "wsgi_stub:app"], cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        yield port
    finally:
        # Killed with its worker at once: a graceful stop waits out the held thread's /slow (5 s).
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def test_an_oversized_content_length_is_refused_while_every_thread_is_busy(one_thread_worker):
    # The only thread is busy for 5 s. A request announcing 1 GB is answered 413 at once, from
    # the worker's read loop, without sending its body; before, it waited for that thread.
    slow = socket.create_connection(("127.0.0.1", one_thread_worker), timeout=30)
    slow.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)  # let the thread take it
    with socket.create_connection(("127.0.0.1", one_thread_worker), timeout=30) as big:
        big.sendall(HEAD + b"Content-Length: 1000000000\r\n\r\n")
        answer = b""
        while chunk := big.recv(65536):
            answer += chunk
    slow_answered = select.select([slow], [], [], 0)[0]
    slow.close()
    assert not slow_answered, "the 413 waited for the busy thread"
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert answer.endswith(b"\r\n\r\nFailed to buffer the request body: length limit exceeded")


def test_the_server_refuses_an_announced_oversized_body_with_teis_413(embed_server, auth):
    # The real server, its limit 200 kB: clients that announce 1 GB and send none of it get
    # TEI's 413 right after their headers, and the server goes on serving.
    host, port = embed_server.url.rsplit("/", 1)[1].split(":")
    announced = HEAD + b"Authorization: %s\r\nContent-Length: 1000000000\r\n\r\n" % auth["Authorization"].encode()
    clients = []
    try:
        for _ in range(8):
            sock = socket.create_connection((host, int(port)), timeout=20)
            sock.sendall(announced)
            clients.append(sock)
        for sock in clients:
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
            assert answer.endswith(b"\r\n\r\nFailed to buffer the request body: length limit exceeded")
        normal = requests.post(embed_server.url + "/embed", json={"inputs": "still served"}, headers=auth, timeout=20)
        assert normal.status_code == 200
    finally:
        for sock in clients:
            sock.close()


def test_slow_clients_hold_no_thread(embed_server, auth):
    # More trickling connections than the server's 64 threads, and bodies shorter than their
    # Content-Length: before, these held every thread and normal requests waited forever.
    host, port = embed_server.url.rsplit("/", 1)[1].split(":")
    slow = []
    try:
        for i in range(80):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\n" if i % 8 else
                         HEAD + b"Content-Length: 1000\r\n\r\n{\"inputs\"")
            slow.append(sock)
        time.sleep(0.5)
        for sock in slow[:40]:
            sock.sendall(b"X-Trickle: 1\r\n")
        answers = [requests.post(embed_server.url + "/embed", json={"inputs": f"text {i}"}, headers=auth, timeout=20)
                   for i in range(8)]
        assert [a.status_code for a in answers] == [200] * 8
        assert all(np.array(a.json()).shape == (1, 32) for a in answers)
        assert "Server" not in answers[0].headers
    finally:
        for sock in slow:
            sock.close()


def test_a_half_closed_client_still_gets_its_answer(embed_server, auth):
    body = b'{"inputs": [%s]}' % b", ".join(b'"%d %s"' % (i, b"word " * 100) for i in range(32))
    host, port = embed_server.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(HEAD + b"Authorization: %s\r\nContent-Length: %d\r\n\r\n" % (auth["Authorization"].encode(),
                                                                                  len(body)) + body)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    final = received.split(b"HTTP/1.1 ")[-1]
    assert final.startswith(b"200 OK"), received[:300]
