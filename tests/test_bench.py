"""Smoke tests for `python -m tei_jax.bench`: tiny model, few items, no timed assertions."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tei_jax.bench import __main__ as cli
from tei_jax.bench import engine_mode, flops, loadgen, presets, report, servers, workloads
from tests.tiny_models import minilm_dir


def test_workload_lengths_follow_their_distribution():
    assert workloads.target_lengths("fixed512", 3, 256)[0] == [256, 256, 256]
    assert "capped" in workloads.target_lengths("fixed512", 3, 256)[1]
    assert workloads.target_lengths("query16", 3, 512)[0] == [16, 16, 16]
    short, _ = workloads.target_lengths("short", 200, 512)
    assert min(short) >= 8 and max(short) <= 32
    mixed, _ = workloads.target_lengths("mixed", 2000, 512, seed=3)
    assert min(mixed) >= 8 and max(mixed) <= 512 and 25 < sum(mixed) / len(mixed) < 60
    assert mixed == workloads.target_lengths("mixed", 2000, 512, seed=3)[0]
    with pytest.raises(ValueError):
        workloads.target_lengths("nope", 1, 512)


def test_workload_texts_have_exactly_the_wanted_token_counts():
    from tokenizers import Tokenizer

    work = workloads.make_workload("mixed", 40, minilm_dir(), 128, seed=1)
    wanted, _ = workloads.target_lengths("mixed", 40, 128, seed=1)
    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # MiniLM's tokenizer.json pads to 128
    assert work.lengths == wanted
    assert [len(tokenizer.encode(t).ids) for t in work.texts] == wanted


def test_flops_from_shapes(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(
        model_type="bert", hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)))
    shapes = flops.layer_shapes(tmp_path)
    # per token per layer: QKVO 4*8*8 + MLP 2*8*16 multiply-adds, x2 FLOPs; attention 4*n*8
    expected = 2 * (10 * 2 * (4 * 64 + 2 * 128) + 4 * 10 * 10 * 8)
    assert flops.sequence_flops(shapes, 10) == expected
    assert flops.workload_flops(tmp_path, [10, 10]) == 2 * expected


def test_gpu_only_preset_is_refused_on_cpu():
    big = presets.PRESETS["qwen2-1.5b"]
    with pytest.raises(SystemExit, match="--allow-cpu"):
        presets.check_device(big, "cpu")
    assert "warning" in presets.check_device(big, "cpu", allow_cpu=True)
    assert presets.check_device(big, "gpu") is None
    assert presets.check_device(presets.PRESETS["minilm"], "cpu") is None


def test_time_round_repeats_whole_passes_until_its_minimum_time():
    calls = []
    system = engine_mode.System("fake", "float32", lambda batch: (calls.append(len(batch)), time.sleep(0.004)),
                                1.0)
    batches = [["a", "b"], ["c"]]
    wall, latencies, passes = engine_mode.time_round(system, batches)
    assert passes == 1 and calls == [2, 1] and len(latencies) == 2
    calls.clear()
    wall, latencies, passes = engine_mode.time_round(system, batches, min_seconds=0.05)
    assert wall >= 0.05 and passes >= 2
    assert calls == [2, 1] * passes and len(latencies) == 2 * passes  # whole passes only


def test_engine_mode_end_to_end_writes_json_and_plot(tmp_path, capsys):
    out = tmp_path / "results"
    code = cli.main(["--mode", "engine", "--preset", "tiny", "--workload", "mixed", "--count", "12",
                     "--batch-size", "4", "--rounds", "2", "--round-seconds", "0.01", "--profile", "--quiet",
                     "--no-peak", "--work-dir", str(tmp_path / "models"), "--output-dir", str(out), "--name", "smoke"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "tei-jax" in printed and "sentence-transformers" in printed and "ratio" in printed
    result = json.loads((out / "smoke.json").read_text())
    if importlib.util.find_spec("matplotlib") is not None:  # the `bench` extra
        assert (out / "smoke.png").stat().st_size > 1000
    assert result["mode"] == "engine" and result["preset"] == "tiny"
    assert result["workload"]["count"] == 12 and result["compiles_during_timing"] == 0
    assert result["round_seconds"] == 0.01
    assert result["max_abs_diff_vs_peer"] < 1e-4  # same weights, same inputs: same vectors
    for key in ("cpu_model", "cpu_cores", "date", "versions", "jax_backend"):
        assert key in result["machine"]
    assert result["machine"]["versions"]["jax"]
    ours, peer = result["systems"]["tei-jax"], result["systems"]["sentence-transformers"]
    for entry in (ours, peer):
        for key in ("tokens_per_s", "sequences_per_s", "p50_ms", "p99_ms", "padding_efficiency", "ratio_to_peer"):
            assert entry[key] > 0, key
        assert len(entry["rounds"]) == 2 and all(r["passes"] >= 1 for r in entry["rounds"])
        assert 0 < entry["padding_efficiency"] <= 1
    assert ours["ratio_to_peer"] == pytest.approx(ours["tokens_per_s"] / peer["tokens_per_s"])
    assert set(result["profile"]["share"]) == {"tokenize", "plan", "host_arrays", "device", "collect", "finish"}


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("onnxruntime", "onnxscript")),
                    reason="the ONNX Runtime peer needs the `bench` extra (onnxruntime, onnxscript)")
def test_onnxruntime_peer_runs_beside_sentence_transformers(tmp_path):
    out = tmp_path / "results"
    code = cli.main(["--preset", "tiny", "--workload", "mixed", "--count", "10", "--batch-size", "5",
                     "--rounds", "2", "--peer", "sentence-transformers", "onnxruntime", "--quiet", "--no-peak",
                     "--no-plot", "--work-dir", str(tmp_path / "models"), "--output-dir", str(out), "--name", "onnx"])
    assert code == 0
    result = json.loads((out / "onnx.json").read_text())
    assert not result["failed_systems"]
    assert result["peers"] == ["sentence-transformers", "onnxruntime"]
    systems = result["systems"]
    ours, onnx = systems["tei-jax"], systems["onnxruntime"]
    by_peer = ours["agreement_vs_peers"]
    assert by_peer["onnxruntime"]["max_abs_diff"] < 1e-4 and by_peer["sentence-transformers"]["max_abs_diff"] < 1e-4
    best = result["best_peer"]
    assert best in ("sentence-transformers", "onnxruntime") and systems[best]["ratio_to_peer"] == 1.0
    assert ours["ratio_to_peer"] == pytest.approx(ours["tokens_per_s"] / systems[best]["tokens_per_s"])
    assert set(ours["ratio_to_peers"]) == {"sentence-transformers", "onnxruntime"}
    assert onnx["setup"]["optimized"] and onnx["setup"]["fused_ops"]  # onnxruntime's BERT fusions applied
    assert 0 < onnx["padding_efficiency"] <= 1 and len(onnx["rounds"]) == 2


def test_decoder_preset_agrees_with_sentence_transformers(tmp_path):
    out = tmp_path / "results"
    cli.main(["--preset", "tiny-qwen2", "--workload", "short", "--count", "6", "--batch-size", "3",
              "--rounds", "1", "--quiet", "--no-peak", "--no-plot", "--work-dir", str(tmp_path / "models"),
              "--output-dir", str(out), "--name", "qwen2"])
    result = json.loads((out / "qwen2.json").read_text())
    assert result["max_abs_diff_vs_peer"] < 1e-4  # same WordPiece ids on both sides
    assert result["systems"]["tei-jax"]["padding_efficiency"] > 0


class _Echo(BaseHTTPRequestHandler):
    seen: list[bytes] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Echo.seen.append(body)
        status = 500 if b"fail" in body else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *args):
        pass


def test_load_generator_counts_requests_and_failures():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        target = servers.Target("ours", server.server_address[1], "/embed")
        bodies = [target.body(["a"]), target.body(["b", "c"]), b'{"inputs": "fail"}']
        outcome = loadgen.drive(target.port, target.path, bodies, concurrency=4, requests=30)
    finally:
        server.shutdown()
    assert outcome["completed"] == 20 and outcome["failed"] == 10
    assert outcome["failure_kinds"] == ["HTTP 500"] and len(outcome["latencies"]) == 20
    assert json.loads(bodies[0]) == {"inputs": "a", "normalize": True}
    assert json.loads(bodies[1]) == {"inputs": ["b", "c"], "normalize": True}
    openai = servers.Target("peer", 1, "/embeddings", served_name="m")
    assert json.loads(openai.body(["x"])) == {"input": ["x"], "model": "m"}


def test_server_table_and_names():
    result = {"mode": "server", "preset": "minilm", "batch_size": 1, "concurrency": 32,
              "headline": "median", "machine": {"jax_backend": "cpu"},
              "workload": {"name": "short", "count": 10, "mean_tokens": 20.0, "note": ""},
              "systems": {"tei-jax": {"system": "tei-jax", "requests_per_s": 300.0, "sequences_per_s": 300.0,
                                      "tokens_per_s": 6000.0, "p50_ms": 90.0, "p99_ms": 150.0, "failed": 0,
                                      "padding_efficiency": 0.95, "ratio_to_peer": 1.6},
                          "infinity-emb": {"system": "infinity-emb", "requests_per_s": 187.5, "failed": 0,
                                           "ratio_to_peer": 1.0}}}
    text = report.table(result)
    assert "req/s" in text and "1.60x" in text and "95.0%" in text and "32 clients" in text
    assert report.default_name(result) == "server-minilm-short-b1-c32-cpu"


@pytest.mark.slow
def test_server_mode_against_our_router(tmp_path):
    """Starts the real server (tiny model) and drives a few requests; slow: the server
    compiles its shapes before it answers."""
    out = tmp_path / "results"
    cli.main(["--mode", "server", "--preset", "tiny", "--workload", "short", "--count", "20",
              "--concurrency", "4", "--requests", "40", "--rounds", "1", "--warmup-seconds", "1",
              "--no-peer", "--no-peak", "--no-plot", "--quiet", "--work-dir", str(tmp_path / "models"),
              "--output-dir", str(out), "--name", "server"])
    result = json.loads((out / "server.json").read_text())
    ours = result["systems"]["tei-jax"]
    assert ours["failed"] == 0 and ours["rounds"][0]["completed"] == 40
    assert ours["requests_per_s"] > 0 and ours["p99_ms"] >= ours["p50_ms"] > 0


def test_op_profile_puts_every_matmul_in_its_category(tmp_path):
    from tei_jax.bench import op_profile

    from tests.tiny_models import load_cached, make_model

    model = load_cached(make_model("bert"))
    result = op_profile.profile_shape(model, rows=2, width=32, runs=2, trace_dir=tmp_path / "trace")
    spent = result["op_seconds_per_run"]
    for name in op_profile.MATMULS:
        assert spent.get(name, 0) > 0, name
        assert result["matmul_flops_per_s"][name] > 0
    assert spent.get("attention scores, softmax, values", 0) > 0 and spent.get("layer norms", 0) > 0
    assert sum(result["share_of_op_time"].values()) == pytest.approx(1.0)
    assert 0 < result["matmul_seconds_share"] < 1
    for name in op_profile.MATMULS:  # busy time never exceeds the summed op time
        assert 0 < result["busy_seconds_per_run"][name] <= spent[name] * (1 + 1e-9)
        assert result["matmul_flops_per_s_busy"][name] >= result["matmul_flops_per_s"][name] * (1 - 1e-9)


def test_op_profile_counts_static_weight_slices_as_slicing_not_pooling():
    from tei_jax.bench.op_profile import category

    # an unrolled stack copies each layer's weights with static slices, whose op_name names no
    # module, so they used to fall through to the catch-all "pooling"
    assert category("jit(forward)/slice", "slice_bitcast_fusion.33") == "scan slicing"
    assert category("", "dynamic-slice_bitcast_fusion.1") == "scan slicing"
    assert category("jit(forward)/pool/dot_general", "ynn_fusion.12") == "pooling"


def test_op_profile_busy_time_counts_overlapping_ops_once():
    from tei_jax.bench.op_profile import union_seconds

    # three ops at once on [0, 3) s, one after a gap on [5, 6) s, one inside the first
    spans = [(0, 3_000_000_000)] * 3 + [(5_000_000_000, 6_000_000_000), (1_000_000_000, 2_000_000_000)]
    assert union_seconds(spans) == pytest.approx(4.0)
    assert union_seconds([(0, 2), (1, 3)]) == pytest.approx(3e-9) and union_seconds([]) == 0.0


def test_server_requests_of_varying_size_cover_every_text_once():
    from tei_jax.bench import server_mode

    bounds = server_mode.request_bounds(100, 8, 32, seed=0)
    assert bounds[0][0] == 0 and bounds[-1][1] == 100
    assert all(a == b for (_, a), (b, _) in zip(bounds, bounds[1:]))  # contiguous, no overlap
    assert all(8 <= end - start <= 32 for start, end in bounds[:-1])
    assert len({end - start for start, end in bounds}) > 1
    assert server_mode.request_bounds(100, 8, 32, seed=0) == bounds  # same requests for every server
    assert server_mode.request_bounds(10, 4, None) == [(0, 4), (4, 8), (8, 10)]
