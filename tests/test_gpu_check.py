"""bench/gpu_check.py, the prepared GPU check: its dry run end to end on the CPU (tiny model, the
same steps and code as on the GPU), and how it reads results (pytest outcomes, the
recommendation for AUTO_BY_BACKEND["gpu"], the targets, the final table) on made-up numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gpu_check
_spec.loader.exec_module(gpu_check)

CHEAP_PYTEST = "tests/gpu/test_gpu_parity.py::test_classifier_scores_match_torch[bert-bfloat16]"


def dry_run(tmp_path: Path, *extra: str, timeout: float = 1500) -> dict:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--work", str(tmp_path / "work"),
                           *extra], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    summary["_stdout"] = done.stdout
    summary["_files"] = sorted(p.name for p in out.iterdir())
    return summary


@pytest.mark.slow  # keeps the default suite under 10 minutes on 2 cores
def test_dry_run_steps_on_cpu(tmp_path):
    """The machine, pytest, engine-bench and server steps of the GPU run, on the CPU backend."""
    summary = dry_run(tmp_path, "--steps", "machine,pytest,query16,startup", "--pytest-targets", CHEAP_PYTEST)
    steps = summary["steps"]
    assert {name: step["status"] for name, step in steps.items()} == dict.fromkeys(
        ("machine", "pytest", "query16", "startup"), "ok"), steps
    results = summary["results"]
    assert results["machine"]["jax_backend"] == "cpu" and summary["peak"]["flops_per_s"] > 0
    assert results["pytest"]["passed"] == 1 and results["pytest"]["failed"] == 0
    query = results["query16"]
    assert query["workload"]["mean_tokens"] == 16 and query["batch_size"] == 1
    assert {"tei-jax[xla]", "tei-jax[pallas]", "sentence-transformers"} <= set(query["systems"])
    assert "cuDNN" in query["failed_systems"]["tei-jax[cudnn]"]  # no GPU: recorded, the others ran
    for name in ("tei-jax[xla]", "tei-jax[pallas]"):
        entry = query["systems"][name]
        assert entry["fraction_of_peak"] > 0 and entry["agreement_vs_peer"]["min_cosine"] > 0.9999
    for phase in ("cold", "warm"):
        assert results["startup"][phase]["ready"], results["startup"]
    assert summary["recommendation"]["line"].startswith('AUTO_BY_BACKEND["gpu"] = ')
    assert "recommendation: AUTO_BY_BACKEND" in summary["_stdout"].splitlines()[-1]
    assert summary["_files"] == ["gpu_check.log", "query16.png", "summary.json", "table.txt"] or \
        summary["_files"] == ["gpu_check.log", "summary.json", "table.txt"]  # no PNG without matplotlib


@pytest.mark.slow
def test_full_dry_run_on_cpu(tmp_path):
    """Every step, as the GPU call runs them, with the dry run's few representative GPU tests."""
    summary = dry_run(tmp_path)
    assert all(step["status"] == "ok" for step in summary["steps"].values()), summary["steps"]
    assert len(summary["_files"]) <= 8  # what the device tool brings back
    assert summary["results"]["trace"]["files"] > 0 and "trace.tar.gz" in summary["_files"]


def test_a_step_that_does_not_fit_is_skipped_and_the_rest_still_reported(tmp_path):
    summary = dry_run(tmp_path, "--steps", "startup,trace", "--budget", "15")
    assert summary["steps"]["startup"]["status"] == "skipped" and summary["steps"]["trace"]["status"] == "skipped"
    assert summary["recommendation"]["choice"] == "xla"


def test_gpu_parity_tests_find_the_family_factories_they_use():
    """The GPU parity tests build their models with the family tests' factories; a rename there
    must fail here, in the default run, rather than on the GPU."""
    sys.path.insert(0, str(REPO / "tests" / "gpu"))
    import test_gpu_parity

    assert test_gpu_parity.missing_factories() == []
    from tei_jax import models

    covered = set(test_gpu_parity.MODEL_TYPES.values()) | set(test_gpu_parity.COVERED_BY)
    assert set(models.supported_model_types()) <= covered, "a family without a GPU parity test"


def test_unknown_step_is_refused():
    assert gpu_check.main(["--steps", "machine,nope", "--out", "/nonexistent-never-created"]) == 2


def test_pytest_outcomes_from_junit_and_from_verbose_lines(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(textwrap.dedent("""\
        <testsuites><testsuite>
          <testcase classname="tests.gpu.test_gpu_parity" name="test_embeddings_match_torch[bert-bfloat16-xla]" time="1.5"/>
          <testcase classname="tests.gpu.test_gpu_parity" name="test_embeddings_match_torch[bert-bfloat16-pallas]" time="2">
            <failure message="least cosine 0.9 &lt; 0.999">trace</failure></testcase>
          <testcase classname="tests.gpu.test_gpu_parity" name="test_embeddings_match_torch[bert-bfloat16-cudnn]" time="0">
            <skipped message="needs a GPU"/></testcase>
          <testcase classname="tests.kernels.test_flash_attention" name="test_gpu_compiled_kernel[fp16]" time="3"/>
        </testsuite></testsuites>"""))
    result = gpu_check.parse_junit(xml)
    assert (result["tests"], result["passed"], result["failed"], result["skipped"]) == (4, 2, 1, 1)
    assert gpu_check.parity_by_implementation(result) == {"xla": "passed", "cudnn": "not run", "pallas": "failed"}
    verbose = gpu_check.parse_verbose(
        "tests/gpu/test_gpu_parity.py::test_embeddings_match_torch[qwen2-float16-xla] PASSED [ 1%]\n"
        "[gw3] [ 2%] FAILED tests/kernels/test_flash_attention.py::test_gpu_compiled_kernel[bf16]\n")
    assert [c["outcome"] for c in verbose["cases"]] == ["passed", "failed"]
    assert gpu_check.parity_by_implementation(verbose)["pallas"] == "failed"


def _run(systems: dict, workload: str = "fixed512") -> dict:
    return {"preset": "bge-base", "batch_size": 256, "max_batch_tokens": 16384,
            "workload": {"name": workload, "count": 1024, "mean_tokens": 512.0}, "systems": systems, "failed_systems": {}}


def _entry(tokens_per_s: float, cosine: float | None = 0.9999, p50: float = 1.0, ratio: float = 1.5, peak: float = 0.6):
    return {"dtype": "bfloat16", "tokens_per_s": tokens_per_s, "p50_ms": p50, "p99_ms": 2 * p50, "ratio_to_peer": ratio,
            "fraction_of_peak": peak, "padding_efficiency": 1.0,
            "agreement_vs_peer": None if cosine is None else {"min_cosine": cosine}}


def test_recommendation_is_the_fastest_correct_implementation():
    results = {"fixed512": _run({"tei-jax[xla]": _entry(100), "tei-jax[pallas]": _entry(125),
                                 "tei-jax[cudnn]": _entry(150, cosine=0.99), "sentence-transformers": _entry(70)}),
               "query16": _run({"tei-jax[xla]": _entry(1, p50=1.0), "tei-jax[pallas]": _entry(1, p50=1.0)}, "query16")}
    passed = dict.fromkeys(gpu_check.IMPLEMENTATIONS, "passed")
    rec = gpu_check.recommend(results, passed)
    assert rec["choice"] == "pallas" and rec["line"] == 'AUTO_BY_BACKEND["gpu"] = "pallas"'  # cudnn disagrees
    assert rec["scores"]["pallas"] == pytest.approx((1.25 * 1.0) ** 0.5)
    assert gpu_check.recommend(results, {**passed, "pallas": "failed"})["choice"] == "xla"
    assert gpu_check.recommend(results, {**passed, "pallas": "not run"})["choice"] == "xla"
    close = {"fixed512": _run({"tei-jax[xla]": _entry(100), "tei-jax[pallas]": _entry(102)})}
    assert gpu_check.recommend(close, passed)["choice"] == "xla"  # within noise: keep xla
    # bf16 against the fp16 peer: an implementation as close as xla itself still counts as agreeing
    loose = {"fixed512": _run({"tei-jax[xla]": _entry(100, cosine=0.998), "tei-jax[pallas]": _entry(120, cosine=0.99795)})}
    assert gpu_check.recommend(loose, passed)["choice"] == "pallas"


def test_targets_and_final_table(tmp_path):
    results = {"fixed512": _run({"tei-jax[xla]": _entry(100, ratio=1.1, peak=0.55), "sentence-transformers": _entry(90)}),
               "query16": _run({"tei-jax[xla]": _entry(1, p50=2.5)}, "query16")}
    parity = {"xla": "passed", "cudnn": "failed", "pallas": "passed"}
    rows = gpu_check.targets(results, parity, "xla")
    assert [row["met"] for row in rows] == [False, True, False, False]
    args = gpu_check.parser().parse_args(["--dry-run", "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")])
    check = gpu_check.Check(args)
    check.summary["results"] = results
    check.summary["steps"] = {"fixed512": {"status": "ok", "seconds": 3.0},
                              "mixed": {"status": "timeout", "seconds": 9.0, "error": "timed out: ...\n(phase: warmup)"}}
    gpu_check.finish(check)
    table = (tmp_path / "o" / "table.txt").read_text()
    assert "MISS fixed512 bfloat16 (xla) >= 1.3x ST bfloat16: 1.1" in table and "mixed     timeout" in table
    assert table.rstrip().splitlines()[-1].startswith('recommendation: AUTO_BY_BACKEND["gpu"] = "xla"')
