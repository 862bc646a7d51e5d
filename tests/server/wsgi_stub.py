"""A WSGI app for worker tests that need a thread held on purpose: `/slow` answers after
SLOW_S seconds; a body over the worker's default limit is refused 413 (as the real app's
Flask does when a request gets that far); anything else answers at once."""

import time

SLOW_S = 5.0


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(SLOW_S)
    if int(environ.get("CONTENT_LENGTH") or 0) > 2_000_000:
        start_response("413 Payload Too Large", [("Content-Type", "text/plain"), ("Connection", "close")])
        return [b"Failed to buffer the request body: length limit exceeded"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
