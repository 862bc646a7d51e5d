"""TEI's tei.v1 gRPC API (with standard health and reflection) over the same serving state as
the HTTP routes: `--grpc` serves it instead of HTTP on --port, `--grpc-port P` beside HTTP.

Nothing here imports grpc at package import time, so the HTTP-only server never loads it.
"""
