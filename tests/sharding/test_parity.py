"""Every family at data-parallel 8, data 4 x tensor 2 and tensor 8 (the 8-head decoder) equals
its single-device result (max abs 1e-5, float32), with the xla attention everywhere and the
Pallas kernel under shard_map on five families; sizes that cannot work fail at load naming
the field. All of it runs in one subprocess with 8 forced host devices
(tests/sharding/multidevice_checks.py), started when collection finishes (head_start.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import head_start
import sharded_models
from forced_devices import forced_devices_env, python_command

TOL = 1e-5
HERE = Path(__file__).parent


class ChecksRun:
    """multidevice_checks.py running in its own process; `records()` waits for its output."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="tei-jax-multidevice-"))
        models, self.out = self.folder / "models.json", self.folder / "out.json"
        models.write_text(json.dumps(sharded_models.folders()))
        self._stderr = open(self.folder / "stderr.txt", "wb")
        self.proc = subprocess.Popen(python_command(str(HERE / "multidevice_checks.py"), str(models), str(self.out)),
                                     env=forced_devices_env(8), stdout=subprocess.DEVNULL, stderr=self._stderr)

    def records(self) -> list[dict]:
        try:
            code = self.proc.wait(900)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        self._stderr.close()
        assert code == 0, (self.folder / "stderr.txt").read_text(errors="replace")[-4000:]
        return json.loads(self.out.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_checks() -> ChecksRun:
    return ChecksRun()


@pytest.fixture(scope="module")
def records() -> list[dict]:
    run = head_start.take("multidevice", start_checks)  # begun when collection finished
    try:
        return run.records()
    finally:
        run.stop()


def _parity(records):
    return [r for r in records if "model" in r]


def test_subprocess_sees_eight_devices(records):
    assert records[0] == {"devices": 8}


def test_every_family_and_layout_was_checked(records):
    seen = {(r["model"], r["dp"], r["tp"], r["attention"]) for r in _parity(records)}
    for name, (_, tps) in sharded_models.MODELS.items():
        assert (name, 8, 1, "xla") in seen and (name, 4, 2, "xla") in seen
        for tp in tps:
            assert (name, 8 // tp, tp, "xla") in seen
    assert (("qwen3", 1, 8, "xla")) in seen
    assert {r["model"] for r in _parity(records) if r["attention"] == "pallas"} == {"bert", "mpnet", "jina", "qwen3", "deberta"}


@pytest.mark.parametrize("name", list(sharded_models.MODELS))
def test_sharded_outputs_equal_single_device(records, name):
    checks = [r for r in _parity(records) if r["model"] == name]
    assert checks
    for check in checks:
        label = f"{name} dp{check['dp']} tp{check['tp']} {check['attention']}"
        assert "error" not in check, f"{label}: {check.get('error')}"
        assert check["max_abs"] < TOL, f"{label}: max abs {check['max_abs']}"
        assert check["rows_divide"], f"{label}: a compiled row count does not divide by {check['dp']}"
        assert check["mesh"] == {"data": check["dp"], "model": check["tp"]}
        # Tensor parallelism really splits parameters; data parallelism replicates them all.
        assert (check["params_split"] > 0) == (check["tp"] > 1), label


def test_sizes_that_cannot_work_fail_at_load_naming_the_field(records):
    errors = {r["error_for"]: r["message"] for r in records if "error_for" in r}
    assert errors["bert dp1 tp8"] == "tensor_parallel_size 8 does not divide config.json field 'num_attention_heads' (4)"
    assert "16 devices, but only 8 are available" in errors["bert dp4 tp4"]
    assert "'num_attention_heads' (4)" in errors["bert dp2 tp3"]


def test_bench_reports_one_system_per_device_count(records):
    bench = next(r for r in records if "bench" in r)
    assert bench["exit"] == 0 and bench["compiles_during_timing"] == 0
    assert {name: entry["devices"] for name, entry in bench["bench"].items()} == {
        f"tei-jax[dp={n}]": n for n in (1, 8)}
    assert all(entry["tokens_per_s"] > 0 for entry in bench["bench"].values())
