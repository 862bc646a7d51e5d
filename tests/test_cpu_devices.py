"""The CPU default of one JAX device per core (tei_jax/cpu_devices.py) and the planner's rows
on a data axis.

The default suite runs on one device (tests/conftest.py sets TEI_JAX_CPU_DEVICES=1), so every
check of the default itself runs `tests/cpu_devices_probe.py` in a fresh subprocess, where
JAX's backend has not started yet; they run concurrently to keep the module short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny_models as tm
from tei_jax import cpu_devices
from tei_jax.batching import ShapePolicy, padding_efficiency

PROBE = Path(__file__).with_name("cpu_devices_probe.py")
REPO = Path(__file__).resolve().parents[1]
TEXTS = ["What is Deep Learning?", "a", "JAX runs the same program on every device " * 6,
         "packed rows hold several short texts", "naïve café", "one more", "and a seventh text"]
EXPECTED_DEFAULT = min(cpu_devices.core_count(), cpu_devices.MAX_DEFAULT)


def _env(**changes: str | None) -> dict:
    env = dict(os.environ)
    for name in (cpu_devices.ENV, "JAX_NUM_CPU_DEVICES"):
        env.pop(name, None)
    env["XLA_FLAGS"] = " ".join(p for p in env.get("XLA_FLAGS", "").split()
                                if not p.startswith("--xla_force_host_platform_device_count"))
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


# name -> (setup, load kwargs, env changes, texts)
CASES = {
    "default": ("none", {}, {}, TEXTS),
    "env_opt_out": ("none", {}, {cpu_devices.ENV: "1"}, TEXTS),
    "arg_opt_out": ("none", {"cpu_devices": 1}, {}, None),
    "arg_two": ("none", {"cpu_devices": 2}, {}, None),
    "dp_one": ("none", {"data_parallel_size": 1}, {}, None),
    "xla_flags": ("none", {}, {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}, None),
    "jax_config": ("jax_config:3", {}, {}, None),
    "started": ("started", {}, {}, None),
    "bad_env": ("none", {}, {cpu_devices.ENV: "many"}, None),
}


@pytest.fixture(scope="module")
def probes() -> dict:
    folder = str(tm.embedding_model())
    running = {}
    for name, (setup, load, changes, texts) in CASES.items():
        spec = json.dumps({"folder": folder, "setup": setup, "load": load, "texts": texts})
        running[name] = subprocess.Popen([sys.executable, str(PROBE), spec], env=_env(**changes),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for name, proc in running.items():
        out, err = proc.communicate(timeout=300)
        results[name] = {"code": proc.returncode, "stderr": err,
                         **(json.loads(out.strip().splitlines()[-1]) if proc.returncode == 0 else {})}
    return results


def _ok(probes, name) -> dict:
    result = probes[name]
    assert result["code"] == 0, result["stderr"][-3000:]
    return result


def test_default_is_one_device_per_core_with_rows_split_over_them(probes):
    result = _ok(probes, "default")
    assert result["devices"] == EXPECTED_DEFAULT
    assert result["data_size"] == result["row_multiple"] == EXPECTED_DEFAULT
    if EXPECTED_DEFAULT > 1:
        assert any("JAX CPU devices" in line for line in result["log"])


def test_two_devices_give_the_one_device_vectors(probes):
    one, default = _ok(probes, "env_opt_out"), _ok(probes, "default")
    assert one["devices"] == 1
    np.testing.assert_allclose(np.array(default["vectors"]), np.array(one["vectors"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["env_opt_out", "arg_opt_out", "dp_one"])
def test_opt_outs_keep_one_device(probes, name):
    result = _ok(probes, name)
    assert result["devices"] == result["data_size"] == 1


def test_load_argument_asks_for_a_count(probes):
    result = _ok(probes, "arg_two")
    assert result["devices"] == result["data_size"] == 2


@pytest.mark.parametrize("name", ["xla_flags", "jax_config"])
def test_a_count_the_user_set_is_kept(probes, name):
    result = _ok(probes, name)
    assert result["devices"] == result["data_size"] == 3
    assert not any("JAX CPU devices" in line for line in result["log"])


def test_a_started_backend_keeps_its_devices_and_says_how_once(probes):
    result = _ok(probes, "started")
    assert result["devices"] == result["data_size"] == 1
    advice = [line for line in result["log"] if "configure_cpu_devices" in line]
    assert len(advice) == (1 if EXPECTED_DEFAULT > 1 else 0)


def test_a_bad_count_is_a_load_error(probes):
    result = probes["bad_env"]
    assert result["code"] != 0
    assert "ModelLoadError" in result["stderr"] and "TEI_JAX_CPU_DEVICES must be a positive integer" in result["stderr"]


def test_requested_count(monkeypatch):
    monkeypatch.setenv(cpu_devices.ENV, "3")
    assert cpu_devices.requested_count() == 3
    assert cpu_devices.requested_count(5) == 5
    monkeypatch.setenv(cpu_devices.ENV, "auto")
    assert cpu_devices.requested_count() == EXPECTED_DEFAULT
    with pytest.raises(ValueError):
        cpu_devices.requested_count(0)


# The planner on a data axis: a fixed packing example, seeded like the bench's short workload
# (calls of 32 queries of 8-32 tokens).
def _short_calls(seed: int = 0, calls: int = 16) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(8, 33, size=32).tolist() for _ in range(calls)]


def _policy(data_size: int) -> ShapePolicy:
    return ShapePolicy(256, 16384, packing=True, batch_tokens=1024, row_multiple=data_size, exact_rows=16,
                       attention_cost=ShapePolicy.attention_cost_for(384, "cpu"))


def test_rows_divide_by_the_data_size_and_padding_stays_near_one_device():
    one, two = _policy(1), _policy(2)
    plans_one = [b for call in _short_calls() for b in one.plan(call)]
    plans_two = [b for call in _short_calls() for b in two.plan(call)]
    assert all(b.shape.rows % 2 == 0 for b in plans_two)
    assert {s.rows % 2 for s in two.shapes()} == {0}
    # Without the finer widths (the ladder alone) two devices lose a row per call in eight.
    ladder_only = _policy(2)
    ladder_only.__dict__["widths"] = [w for w in two.widths if w not in (80, 112)]
    plans_ladder = [b for call in _short_calls() for b in ladder_only.plan(call)]
    assert padding_efficiency(plans_two) > padding_efficiency(plans_ladder) + 0.03
    assert padding_efficiency(plans_two) >= padding_efficiency(plans_one) - 0.02
    assert len(two.shapes()) <= len(one.shapes())


def test_finer_widths_only_with_a_data_axis_and_packing():
    assert 80 not in _policy(1).widths
    assert {80, 112} <= set(_policy(2).widths)
    assert 80 not in ShapePolicy(256, 16384, packing=False, row_multiple=2).widths
    assert ShapePolicy(64, 16384, row_multiple=2).widths[-1] == 64
