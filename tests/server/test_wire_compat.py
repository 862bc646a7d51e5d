"""Details of TEI's wire format found by auditing a real server against TEI's source, in-process
(Flask's test client over a fake executor): empty inputs as serde reads them, headers and
bodies of the bare responses, the metrics TEI's core records per input, and /vertex running
its instances together."""

from __future__ import annotations

import re
import threading

import pytest
import tiny_models as tm
from fake_app import FakeExecutor, make_client

from app.server import create_app
from app.service import Service
from app.settings import parse_settings


@pytest.fixture(scope="module")
def embedder():
    return make_client(tm.embedding_model())


@pytest.mark.parametrize("path, body, message", [
    # serde reads `[]` as ONE empty id list (Input's single form comes first): TEI's core refuses it.
    ("/embed", {"inputs": []}, "Input validation error: `inputs` cannot be empty"),
    ("/embed_all", {"inputs": []}, "Input validation error: `inputs` cannot be empty"),
    ("/embed", {"inputs": [[]]}, "Input validation error: `inputs` cannot be empty"),
    ("/decode", {"ids": []}, "Input validation error: `input_ids` cannot be empty"),
    ("/decode", {"ids": [[]]}, "Input validation error: `input_ids` cannot be empty"),
    # TokenizeInput has no id form: `[]` is an empty batch, which TEI's handler refuses bare.
    ("/tokenize", {"inputs": []}, "`inputs` cannot be empty"),
    ("/rerank", {"query": "q", "texts": []}, "`texts` cannot be empty"),
])
def test_empty_inputs_are_worded_as_tei_reads_them(embedder, path, body, message):
    response = embedder.post(path, json=body)
    assert (response.status_code, response.json) == (400, {"error": message, "error_type": "Empty"})


def test_checks_run_in_teis_order(embedder):
    classifier = make_client(tm.make_model("bert", "classification", num_labels=3))
    # embed_pooled checks zero dimensions before the model type; /predict's handler checks the
    # client batch size before infer.predict checks the model type.
    zero = classifier.post("/embed", json={"inputs": "a", "dimensions": 0})
    assert (zero.status_code, zero.json["error"]) == (422, "Input validation error: `dimensions` should be positive")
    assert classifier.post("/embed", json={"inputs": "a"}).status_code == 424
    many = embedder.post("/predict", json={"inputs": [["a"]] * 33})
    assert (many.status_code, many.json["error"]) == (422, "batch size 33 > maximum allowed batch size 32")
    assert embedder.post("/predict", json={"inputs": [["a"]] * 2}).status_code == 424


def test_openai_empty_input_is_one_empty_id_list(embedder):
    response = embedder.post("/v1/embeddings", json={"input": []})
    assert response.json == {"message": "Input validation error: `inputs` cannot be empty", "code": 400,
                             "type": "Empty"}


def test_bare_responses_have_no_content_type(embedder):
    for response in (embedder.get("/health"), embedder.get("/nope"), embedder.get("/embed")):
        assert response.data == b"" and "Content-Type" not in response.headers, response.status_code
    assert embedder.post("/embed", json={"inputs": "x"}).headers["x-compute-type"] == "gpu+optimized"


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_metrics_per_input_as_teis_core_records_them(embedder):
    before = embedder.get("/metrics").data.decode()
    embedder.post("/embed_all", json={"inputs": ["a", "b c"]})
    embedder.post("/tokenize", json={"inputs": ["a", "b"]})
    embedder.post("/decode", json={"ids": [2054]})
    after = embedder.get("/metrics").data.decode()
    for name in ("te_embed_success", "te_embed_tokenization_duration_count", "te_embed_queue_duration_count",
                 "te_embed_inference_duration_count", "te_embed_duration_count"):
        assert _metric(after, name) - _metric(before, name) == 2, name
    # /tokenize and /decode count no te_request_count in TEI; /embed_all counts one batch.
    assert _metric(after, 'te_request_count{method="batch"}') - _metric(before, 'te_request_count{method="batch"}') == 1
    assert _metric(after, 'te_request_count{method="single"}') == _metric(before, 'te_request_count{method="single"}')
    assert "te_predict_tokenization_duration_count" in after


class TogetherExecutor(FakeExecutor):
    """Answers only once `parties` calls are in run() at the same time (else times out), so a
    request whose calls run one after another fails."""

    def __init__(self, model, parties: int):
        super().__init__(model)
        self.barrier = threading.Barrier(parties, timeout=10)

    def run(self, job, call=None):
        self.barrier.wait()
        return super().run(job, call)


def test_vertex_runs_its_instances_together_and_raises_the_first_failure_in_order():
    folder = tm.embedding_model()
    settings = parse_settings(["--hostname", "127.0.0.1", "--model-id", str(folder)])
    loaded = tm.load_cached(folder)
    service = Service(settings)
    service.serve(loaded.with_executor(TogetherExecutor(loaded, parties=3)))
    client = create_app(settings, service=service, start=False).test_client()
    instances = [{"inputs": "a"}, {"inputs": ["b", "c"], "normalize": False}, {"inputs": "d", "dimensions": 4}]
    answer = client.post("/vertex", json={"instances": instances})
    assert answer.status_code == 200, answer.data
    assert [len(p) for p in answer.json["predictions"]] == [1, 2, 1]
    assert len(answer.json["predictions"][2][0]) == 4
    assert client.post("/vertex", json={"instances": []}).json == {"predictions": []}
    metrics = client.get("/metrics").data.decode()
    assert _metric(metrics, 'te_request_success{method="single"}') == 2
    assert _metric(metrics, 'te_request_success{method="batch"}') == 1
    # Every instance is waited for; the first failure in instance order is the answer.
    failing = [{"inputs": "fine"}, {"inputs": "x", "dimensions": 0}, {"inputs": "y", "dimensions": 10_000}]
    service.serve(loaded.with_executor(TogetherExecutor(loaded, parties=1)))
    refused = client.post("/vertex", json={"instances": failing})
    assert refused.status_code == 422
    assert refused.json["error"] == "Input validation error: `dimensions` should be positive"
