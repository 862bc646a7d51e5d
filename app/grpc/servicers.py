"""The five tei.v1 services. Each method reads its message, runs one `operations` function
through `Calls` (unary) or `Calls.stream` (bidi, ordered, bounded), and builds its answer."""

from __future__ import annotations

import grpc

from ..errors import BareValidationError
from . import convert, operations as ops
from .calls import Calls
from .operations import Call
from .proto import tei_pb2 as pb
from .proto import tei_pb2_grpc as rpc
from .streams import ordered_map


class InfoServicer(rpc.InfoServicer):
    def __init__(self, calls: Calls):
        self.calls = calls

    def Info(self, request, context):
        return self.calls.unary(context, lambda call: convert.info_response(ops.info(call)), method=None, timed=False)


class EmbedServicer(rpc.EmbedServicer):
    def __init__(self, calls: Calls):
        self.calls = calls

    @staticmethod
    def _embed(call: Call, r: pb.EmbedRequest) -> pb.EmbedResponse:
        normalize = convert.optional(r, "normalize")
        vector = ops.embed(call, r.inputs, truncate=r.truncate, normalize=True if normalize is None else normalize,
                           truncation_direction=convert.direction(r), prompt_name=convert.optional(r, "prompt_name"),
                           dimensions=convert.optional(r, "dimensions"))
        return convert.embed_response(vector, call.timings)

    @staticmethod
    def _sparse(call: Call, r: pb.EmbedSparseRequest) -> pb.EmbedSparseResponse:
        entries = ops.embed_sparse(call, r.inputs, truncate=r.truncate, truncation_direction=convert.direction(r),
                                   prompt_name=convert.optional(r, "prompt_name"))
        return convert.sparse_response(entries, call.timings)

    @staticmethod
    def _all(call: Call, r: pb.EmbedAllRequest) -> pb.EmbedAllResponse:
        states = ops.embed_all(call, r.inputs, truncate=r.truncate, truncation_direction=convert.direction(r),
                               prompt_name=convert.optional(r, "prompt_name"))
        return convert.embed_all_response(states, call.timings)

    def Embed(self, request, context):
        return self.calls.unary(context, lambda call: self._embed(call, request))

    def EmbedStream(self, request_iterator, context):
        return self.calls.stream(context, request_iterator, self._embed)

    def EmbedSparse(self, request, context):
        return self.calls.unary(context, lambda call: self._sparse(call, request))

    def EmbedSparseStream(self, request_iterator, context):
        return self.calls.stream(context, request_iterator, self._sparse)

    def EmbedAll(self, request, context):
        return self.calls.unary(context, lambda call: self._all(call, request))

    def EmbedAllStream(self, request_iterator, context):
        return self.calls.stream(context, request_iterator, self._all)


def _pair(inputs) -> str | list[str]:
    """PredictPair's `inputs`: one text or a pair, as TEI checks it."""
    if len(inputs) not in (1, 2):
        raise BareValidationError(f"`inputs` must have a single or two elements. Given: {len(inputs)}")
    return inputs[0] if len(inputs) == 1 else list(inputs)


class PredictServicer(rpc.PredictServicer):
    def __init__(self, calls: Calls):
        self.calls = calls

    @staticmethod
    def _predict(call: Call, r: pb.PredictRequest) -> pb.PredictResponse:
        scores = ops.predict(call, r.inputs, truncate=r.truncate, raw_scores=r.raw_scores,
                             truncation_direction=convert.direction(r))
        return convert.predict_response(scores, call.timings)

    @staticmethod
    def _predict_pair(call: Call, r: pb.PredictPairRequest) -> pb.PredictResponse:
        scores = ops.predict(call, _pair(r.inputs), truncate=r.truncate, raw_scores=r.raw_scores,
                             truncation_direction=convert.direction(r))
        return convert.predict_response(scores, call.timings)

    def Predict(self, request, context):
        return self.calls.unary(context, lambda call: self._predict(call, request))

    def PredictPair(self, request, context):
        return self.calls.unary(context, lambda call: self._predict_pair(call, request))

    def PredictStream(self, request_iterator, context):
        return self.calls.stream(context, request_iterator, self._predict)

    def PredictPairStream(self, request_iterator, context):
        return self.calls.stream(context, request_iterator, self._predict_pair)


class RerankServicer(rpc.RerankServicer):
    def __init__(self, calls: Calls):
        self.calls = calls

    def Rerank(self, request, context):
        def work(call: Call) -> pb.RerankResponse:
            ranks = ops.rerank(call, request.query, list(request.texts), truncate=request.truncate,
                               raw_scores=request.raw_scores, return_text=request.return_text,
                               truncation_direction=convert.direction(request))
            return convert.rerank_response(ranks, call.timings)

        return self.calls.unary(context, work, method="batch")

    def RerankStream(self, request_iterator, context):
        """One (query, text) per message, run concurrently (in order, bounded); one answer with
        every rank when the client closes its side. raw_scores and return_text: first message."""
        calls = self.calls
        first: list[pb.RerankStreamRequest] = []

        def remember_first(messages):
            for message in messages:  # read in order, on the stream's reader thread
                if not first:
                    first.append(message)
                yield message

        def one(message: pb.RerankStreamRequest):
            part = calls.call(context, method=None, wait_for_permits=True)
            output = calls.execute(part, lambda c: ops.rerank_pair(
                c, message.query, message.text, truncate=message.truncate,
                truncation_direction=convert.direction(message)))
            return output, message.text, part.timings

        def work(call: Call) -> pb.RerankResponse:
            ops.require_reranker(call.service.require_ready())
            call.inferring = True  # from here a Backend error is an inference failure
            outputs, texts, parts = [], [], []
            pairs = ordered_map(calls.stream_pool, one, remember_first(request_iterator), calls.max_parallel)
            for output, text, timings in pairs:
                outputs.append(output)
                texts.append(text)
                parts.append(timings)
            if not outputs:
                raise BareValidationError("`texts` cannot be empty")  # TEI divides by zero here
            options = first[0]
            ranks = ops.rank_pairs(call, outputs, texts, parts, raw_scores=options.raw_scores,
                                   return_text=options.return_text)
            return convert.rerank_response(ranks, call.timings)

        return calls.unary(context, work, method="batch")


class TokenizeServicer(rpc.TokenizeServicer):
    def __init__(self, calls: Calls):
        self.calls = calls

    @staticmethod
    def _tokenize(call: Call, r: pb.EncodeRequest) -> pb.EncodeResponse:
        tokens = ops.tokenize(call, r.inputs, add_special_tokens=r.add_special_tokens,
                              prompt_name=convert.optional(r, "prompt_name"))
        return convert.encode_response(tokens)

    @staticmethod
    def _decode(call: Call, r: pb.DecodeRequest) -> pb.DecodeResponse:
        return pb.DecodeResponse(text=ops.decode(call, list(r.ids), skip_special_tokens=r.skip_special_tokens))

    def Tokenize(self, request, context):
        return self.calls.unary(context, lambda call: self._tokenize(call, request), method=None, timed=False)

    def TokenizeStream(self, request_iterator, context):
        return self.calls.stream(context, request_iterator, self._tokenize, timed=False)

    def Decode(self, request, context):
        return self.calls.unary(context, lambda call: self._decode(call, request), method=None, timed=False)

    def DecodeStream(self, request_iterator, context):
        return self.calls.stream(context, request_iterator, self._decode, timed=False)


SERVICERS = {
    "tei.v1.Info": (InfoServicer, rpc.add_InfoServicer_to_server),
    "tei.v1.Embed": (EmbedServicer, rpc.add_EmbedServicer_to_server),
    "tei.v1.Predict": (PredictServicer, rpc.add_PredictServicer_to_server),
    "tei.v1.Rerank": (RerankServicer, rpc.add_RerankServicer_to_server),
    "tei.v1.Tokenize": (TokenizeServicer, rpc.add_TokenizeServicer_to_server),
}


def add_all(server: grpc.Server, calls: Calls) -> list[str]:
    """Register every tei.v1 service on `server`; returns their full names."""
    for make, add in SERVICERS.values():
        add(make(calls), server)
    return list(SERVICERS)
