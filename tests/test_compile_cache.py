"""The persistent compilation cache: where it goes, and that a second process reuses what
the first compiled (through the executable store kept in the same folder)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import tiny_models as tm
from tei_jax import compile_cache

_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    from jax import monitoring
    import tei_jax
    counts = {"hits": 0, "misses": 0, "traces": 0}
    def on_event(name, **_):
        if name == "/jax/compilation_cache/cache_hits":
            counts["hits"] += 1
        elif name == "/jax/compilation_cache/cache_misses":
            counts["misses"] += 1
    def on_duration(name, seconds, **_):
        if name == "/jax/core/compile/jaxpr_trace_duration":
            counts["traces"] += 1
    monitoring.register_event_listener(on_event)
    monitoring.register_event_duration_secs_listener(on_duration)
    model = tei_jax.load(sys.argv[1], compile_cache=sys.argv[2], max_batch_tokens=256)
    vectors = model.embed(["a short one", "and a somewhat longer sentence for the second row"])
    stats = model.engine.store.stats
    print(json.dumps({**counts, "loaded": stats.loaded, "built": stats.built,
                      "first": [float(x) for x in vectors[0][:4]]}))
""")


def test_resolve_follows_argument_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    assert compile_cache.resolve() == compile_cache.DEFAULT_DIR
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "env"))
    assert compile_cache.resolve() == tmp_path / "env"
    assert compile_cache.resolve(tmp_path / "arg") == tmp_path / "arg"
    for off in ("none", "OFF", "false", "0", ""):
        assert compile_cache.resolve(off) is None
    monkeypatch.setenv(compile_cache.ENV_VAR, "none")
    assert compile_cache.resolve() is None


def _run(folder: Path, cache: Path) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(folder), str(cache)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_compiled_programs_and_traces_nothing(tmp_path):
    """The first process compiles and stores the executables; the second loads them back
    from the executable store: no trace, no lowering, no compile. (JAX's own persistent
    cache is off: no lookups, hits or misses in either.)"""
    folder = tm.make_model("bert", "base")
    first = _run(folder, tmp_path / "cache")
    assert first["built"] > 0 and first["traces"] > 0 and first["loaded"] == 0
    assert any((tmp_path / "cache" / "executables").iterdir())
    second = _run(folder, tmp_path / "cache")
    assert second["loaded"] == first["built"] and second["built"] == 0
    assert second["traces"] == 0
    assert first["hits"] == first["misses"] == second["hits"] == second["misses"] == 0
    assert second["first"] == first["first"]
