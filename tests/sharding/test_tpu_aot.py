"""TPU lowering checked without a TPU: the sharded forward of a tiny BERT and a tiny decoder
compiled ahead of time for a TPU v5e 2x2 topology (data 2 x tensor 2) through libtpu, in a
subprocess (tests/sharding/tpu_aot_checks.py). Part of `make test`, which installs the libtpu
wheel matching jax into .cache/libtpu-site (tests/sharding/private_site.py) when absent; only
this test's subprocess has that folder on its path, so no other JAX process of the environment
tries to start a TPU. TEI_JAX_LIBTPU_SITE names another folder; an installed libtpu works too.
Without libtpu (no index reachable) it skips."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

import sharded_models
from forced_devices import REPO, python_command
from private_site import Kind, installed_site

SITE = installed_site(Kind.TPU)
HAVE_LIBTPU = SITE is not None or importlib.util.find_spec("libtpu") is not None


@pytest.mark.skipif(not HAVE_LIBTPU, reason="libtpu is not installed: `make test` puts it in .cache/libtpu-site "
                                            "(python tests/sharding/private_site.py tpu .cache/libtpu-site), "
                                            "or set TEI_JAX_LIBTPU_SITE to a pip --target folder holding it")
def test_sharded_forward_compiles_for_a_tpu_v5e_2x2(tmp_path):
    paths = [str(sharded_models.MODELS["bert"][0]()), str(sharded_models.MODELS["qwen3"][0]())]
    (tmp_path / "models.json").write_text(json.dumps(paths))
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), SITE and str(SITE), os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run(python_command(str(Path(__file__).parent / "tpu_aot_checks.py"),
                                         str(tmp_path / "models.json"), str(tmp_path / "out.json")),
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    records = json.loads((tmp_path / "out.json").read_text())
    assert [r["model"] for r in records] == paths
    for record in records:
        assert record["platform"] == "tpu" and record["device_kind"] == "TPU v5 lite"
        assert record["all_reduce"], "tensor parallelism should reduce across the model axis"
        assert "'data': 2, 'model': 2" in record["output_sharding"] and "P('data',)" in record["output_sharding"]
