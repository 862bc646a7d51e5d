"""Runs a tei.v1 method as TEI's handlers do: count the request, run the operation, answer
with the body's Metadata and the x-* timing headers as response metadata, observe the te_*
metrics, and turn a TEI error into its status code with the same message as over HTTP."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from typing import Callable, Iterable, Iterator, TypeVar

import grpc

from tei_jax.errors import BackendError, TEIError

from ..errors import FAILURE_LABEL
from tei_jax.executor import CallWithdrawn

from ..service import Service, Timings
from .operations import Call
from .status import code_for
from .streams import ordered_map

log = logging.getLogger("app.grpc.calls")

Message = TypeVar("Message")
Work = Callable[[Call], "tuple[Message, Timings] | Message"]


class Calls:
    """The servicers' one way to run work; shared by unary calls and every stream."""

    def __init__(self, service: Service, stream_pool: Executor, max_parallel: int):
        self.service = service
        self.stream_pool = stream_pool
        self.max_parallel = max_parallel

    def call(self, context: grpc.ServicerContext, method: str | None = "single",
             wait_for_permits: bool = False) -> Call:
        """A new call's state; counted in te_request_count{method} unless method is None."""
        if method is not None:
            self.service.metrics.request_count.labels(method).inc()
        return Call(self.service, self.service.timings(), wait_for_permits=wait_for_permits,
                    client_gone=lambda: not context.is_active())

    def unary(self, context: grpc.ServicerContext, work: Callable[[Call], Message], method: str | None = "single",
              timed: bool = True) -> Message:
        """One request: `work(call)` -> the response message (with timing metadata if `timed`);
        counted in te_request_count{method} unless method is None (Info, Tokenize, Decode: TEI
        counts those nowhere)."""
        call = self.call(context, method)
        message = self.run(context, call, work)
        if timed:
            context.send_initial_metadata(tuple(call.timings.headers().items()))
            self.observe(call, method)
        return message

    def stream(self, context: grpc.ServicerContext, requests: Iterable, work: Callable[[Call, object], Message],
               timed: bool = True) -> Iterator[Message]:
        """A bidi stream: each message is a request of its own (counted, permitted, timed), run
        concurrently with the others; answers in request order; the first error ends the stream."""

        def one(request) -> tuple[Call, Message | TEIError]:
            call = self.call(context, "single" if timed else None, wait_for_permits=True)
            try:
                return call, self.execute(call, lambda c: work(c, request))
            except TEIError as exc:
                return call, exc

        for call, outcome in ordered_map(self.stream_pool, one, requests, self.max_parallel):
            if isinstance(outcome, TEIError):
                self.fail(context, call, outcome)
            if timed:
                self.observe(call, "single")
            yield outcome

    def run(self, context: grpc.ServicerContext, call: Call, work: Callable[[Call], Message]) -> Message:
        try:
            return self.execute(call, work)
        except TEIError as exc:
            self.fail(context, call, exc)

    def execute(self, call: Call, work: Callable[[Call], Message]) -> Message:
        """`work(call)`, with any failure as a TEIError (an unexpected one logged, never sent)."""
        try:
            return work(call)
        except TEIError:
            raise
        except CallWithdrawn:
            raise BackendError("the client went away") from None
        except Exception as exc:
            log.exception("unexpected error in a gRPC call")
            raise BackendError(type(exc).__name__) from None

    def fail(self, context: grpc.ServicerContext, call: Call, exc: TEIError):
        """Count the failure (te_request_failure{err}) and end the call with its status."""
        label = FAILURE_LABEL.get(exc.error_type, "inference")
        if exc.error_type == "Backend" and not call.inferring:
            label = "model_type"
        if call.batch_size_error:
            label = "batch_size"
        self.service.metrics.request_failure.labels(label).inc()
        if exc.error_type in ("Backend", "Unhealthy") and call.inferring:
            log.error("gRPC call failed: %s", exc.message)
        context.abort(code_for(exc), exc.message)

    def observe(self, call: Call, method: str) -> None:
        metrics, timings = self.service.metrics, call.timings
        metrics.request_success.labels(method).inc()
        metrics.request_duration.observe(time.perf_counter() - timings.start)
        metrics.request_tokenization.observe(timings.tokenization)
        metrics.request_queue.observe(timings.queue)
        metrics.request_inference.observe(timings.inference)
