"""The worker reads whole requests in its main loop: the framing rules, and slow clients that
hold no thread of a real server."""

from __future__ import annotations

import socket
import time

import numpy as np
import requests

from app.worker import Framing, RequestReader

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


def test_oversized_and_malformed_requests_go_straight_to_gunicorn():
    # Refused there (413, 400) without waiting for a body nobody will read.
    assert feed(RequestReader(100), HEAD + b"Content-Length: 101\r\n\r\n") == [Framing.COMPLETE]
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    assert feed(RequestReader(100), chunked, b"40\r\n" + b"x" * 64 + b"\r\n", b"40\r\n" + b"x" * 64 + b"\r\n") == [
        Framing.INCOMPLETE, Framing.INCOMPLETE, Framing.COMPLETE]
    assert feed(RequestReader(100), b"NOT HTTP AT ALL\r\n\r\n") == [Framing.MALFORMED]


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
