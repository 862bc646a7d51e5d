"""The gunicorn worker: gthread, except that a thread only ever sees a complete request.

gunicorn's gthread worker hands a connection to a thread as soon as its first byte arrives,
and the thread then blocks reading the rest: a client trickling its headers (slowloris), or
sending fewer body bytes than its Content-Length, holds one of the `--worker-threads` for as
long as it likes, and 65 of them stop the server. Here the worker's main loop reads every
connection without blocking (one `epoll` for all of them) until h11 says the request is
complete, then hands the buffered bytes to gunicorn's own parser on a thread. Slow clients cost
a file descriptor and their bytes so far, never a thread; one that has not sent a whole request
within REQUEST_READ_TIMEOUT_S is closed. A body over the payload limit (a Content-Length above
it, as soon as the headers are in, or a chunked body once it passes it) is refused right there
with TEI's 413, without reading the body into memory or taking a thread: the answer is sent, the
connection half-closed, and what the client still sends is read and dropped for up to
LINGER_S so that it reads the 413 instead of a reset.

On SIGTERM the connections already in the backlog are taken and the listening sockets closed
at once, so later connections are refused (a load balancer fails over) instead of waiting in
the backlog to be reset when the drain ends; every request already sent is still answered.
"""

from __future__ import annotations

import enum
import errno
import selectors
import socket
import time

import h11
from gunicorn.http import wsgi
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

REQUEST_READ_TIMEOUT_S = 30.0  # from the connection's first moment (or its next request) to a whole request
MAX_HEAD_BYTES = 64 * 1024  # request line + headers
RECV_BYTES = 64 * 1024
LINGER_S = 2.0  # after a refusal: how long the rest of a body is read and dropped
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TOO_LARGE = b"Failed to buffer the request body: length limit exceeded"  # axum's text, as TEI sends it


class Framing(enum.Enum):
    """Where the bytes received so far leave a request."""

    INCOMPLETE = "incomplete"
    COMPLETE = "complete"  # gunicorn parses it
    TOO_LARGE = "too large"  # refused here with 413, the body not read
    MALFORMED = "malformed"  # gunicorn answers it (400) the way it always has


class RequestReader:
    """Follows one HTTP/1.x request's framing (headers, Content-Length or chunked body)."""

    def __init__(self, body_limit: int):
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.body_limit = body_limit
        self.body_bytes = 0
        self.wants_continue = False
        self.origin: bytes | None = None  # the request's Origin header, for CORS on a refusal

    def feed(self, data: bytes) -> Framing:
        self.h11.receive_data(data)
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                return Framing.MALFORMED
            if event is h11.NEED_DATA:
                return Framing.INCOMPLETE
            if event is h11.PAUSED or isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return Framing.COMPLETE
            if isinstance(event, h11.Request):
                headers = dict(event.headers)
                self.origin = headers.get(b"origin")
                length = headers.get(b"content-length")
                if length is not None and int(length) > self.body_limit:
                    return Framing.TOO_LARGE  # as soon as the headers are in: the body is never read
                self.wants_continue = headers.get(b"expect", b"").lower() == b"100-continue"
            elif isinstance(event, h11.Data):
                self.body_bytes += len(event.data)
                if self.body_bytes > self.body_limit:
                    return Framing.TOO_LARGE  # a chunked body past the limit


class QuietResponse(wsgi.Response):
    """gunicorn's response without its `Server: gunicorn` header (TEI sends none)."""

    def default_headers(self):
        return [line for line in super().default_headers() if not line.startswith("Server:")]


class TEIWorker(ThreadWorker):
    """gthread with complete-request reading in the main loop (see the module docstring)."""

    payload_limit = 2_000_000  # set per server by gunicorn_app
    cors_origins: tuple[str, ...] = ()  # --cors-allow-origin (empty: any origin), set by gunicorn_app

    def init_process(self):
        self.reading: dict[TConn, float] = {}  # connection -> deadline, oldest first
        self.lingering: dict[TConn, float] = {}  # refused connections being drained -> deadline
        wsgi.Response = QuietResponse  # this process only: the worker serves nothing else
        super().init_process()

    # Reading requests in the main loop ----------------------------------------------------
    def accept(self, listener) -> bool:
        """Take one connection off the backlog (False when there is none)."""
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return False
            raise
        self.nr_conns += 1
        self._read_request(TConn(self.cfg, sock, client, listener.getsockname()), b"")
        return True

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection sends its next request."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn, b"")

    def enqueue_req(self, conn):
        if getattr(conn, "request_ready", False):
            conn.request_ready = False
            super().enqueue_req(conn)
            return
        # gunicorn's parser read ahead into a pipelined next request: read the rest here too.
        self._read_request(conn, conn.parser.unreader.take_buffered() if conn.parser else b"")

    def _read_request(self, conn: TConn, already: bytes) -> None:
        conn.sock.setblocking(False)
        conn.reader = RequestReader(self.payload_limit)
        conn.received = bytearray()
        self.reading[conn] = time.monotonic() + REQUEST_READ_TIMEOUT_S
        if already and self._take(conn, already):
            return
        self.poller.register(conn.sock, selectors.EVENT_READ, lambda _sock: self._on_readable(conn))

    def _on_readable(self, conn: TConn) -> None:
        data = _receive(conn)
        if data is None:
            return
        if not data:  # the client left before finishing its request
            self._unregister(conn)
            self._drop(conn)
            return
        self._take(conn, data)

    def _take(self, conn: TConn, data: bytes) -> bool:
        """Buffer `data`; True once the connection has left the reading state."""
        conn.received += data
        framing = conn.reader.feed(data)
        if framing is Framing.INCOMPLETE:
            if conn.reader.wants_continue:
                conn.reader.wants_continue = False
                _send_quietly(conn.sock, CONTINUE)
            return False
        del self.reading[conn]
        self._unregister(conn)
        if framing is Framing.TOO_LARGE:
            conn.received = bytearray()
            self._refuse(conn, too_large_response(conn.reader.origin, self.cors_origins))
            return True
        conn.prefix = bytes(conn.received)
        conn.received = bytearray()
        conn.request_ready = True
        self.enqueue_req(conn)
        return True

    def _refuse(self, conn: TConn, response: bytes) -> None:
        """Answer `response`, half-close, and drop whatever else arrives until EOF or LINGER_S."""
        _send_quietly(conn.sock, response)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.lingering[conn] = time.monotonic() + LINGER_S
        self.poller.register(conn.sock, selectors.EVENT_READ, lambda _sock: self._on_lingering_readable(conn))

    def _on_lingering_readable(self, conn: TConn) -> None:
        data = _receive(conn)
        if data is None:
            return
        if not data:
            self._end_lingering(conn)

    def _end_lingering(self, conn: TConn) -> None:
        self._unregister(conn)
        del self.lingering[conn]
        self.nr_conns -= 1
        conn.close()

    def _unregister(self, conn: TConn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _drop(self, conn: TConn) -> None:
        self.reading.pop(conn, None)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self):
        """Also close connections that have not sent a whole request in time."""
        super().murder_pending()
        now = time.monotonic()
        while self.reading:
            conn, deadline = next(iter(self.reading.items()))
            if deadline > now:
                break
            self._unregister(conn)
            self._drop(conn)
        for conn in [conn for conn, deadline in self.lingering.items() if deadline <= now]:
            self._end_lingering(conn)

    # Handing a complete request to a thread -------------------------------------------------
    def handle(self, conn):
        conn.data_ready = True  # never wait for data in a thread: it is all here
        if not conn.initialized:
            conn.sock.setblocking(True)
            conn.init()
        prefix = getattr(conn, "prefix", b"")
        if prefix:
            conn.prefix = b""
            conn.parser.unreader.unread(prefix)
        return super().handle(conn)

    # Stopping -----------------------------------------------------------------------------
    def set_accept_enabled(self, enabled):
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            # The drain begins: what already waits in the backlog connected before it and is
            # served; then the listener closes, so anything later is refused at once. A
            # connection whose first byte has not arrived (or not been read) yet gets what a
            # kept-alive one gets, STOP_KEEPALIVE_LINGER seconds, and is answered if it sends.
            for listener in self.sockets:
                while self.nr_conns < self.worker_connections and self.accept(listener):
                    pass
                listener.close()
            linger = time.monotonic() + STOP_KEEPALIVE_LINGER
            for conn in list(self.reading):
                if not conn.received:
                    self.reading[conn] = min(self.reading[conn], linger)
            self.reading = dict(sorted(self.reading.items(), key=lambda item: item[1]))


def too_large_response(origin: bytes | None, cors_origins: tuple[str, ...]) -> bytes:
    """TEI's 413 (axum's plain text), with the CORS header the app's other answers carry."""
    headers = [b"HTTP/1.1 413 Payload Too Large", b"Content-Type: text/plain; charset=utf-8",
               b"Content-Length: %d" % len(TOO_LARGE), b"Connection: close"]
    if origin is not None:
        if not cors_origins or "*" in cors_origins:
            headers.append(b"Access-Control-Allow-Origin: *")
        else:
            if origin.decode("latin-1") in cors_origins:
                headers.append(b"Access-Control-Allow-Origin: " + origin)
            headers.append(b"Vary: Origin")
    return b"\r\n".join(headers) + b"\r\n\r\n" + TOO_LARGE


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.send(data)
    except OSError:
        pass


def _receive(conn: TConn) -> bytes | None:
    """What the socket has: None when nothing yet (spurious wake-up), b"" at EOF or on an error."""
    try:
        return conn.sock.recv(RECV_BYTES)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
