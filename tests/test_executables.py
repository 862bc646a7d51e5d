"""The executable store (a restart loads compiled programs, a changed key or a damaged file
rebuilds them) and progressive warmup (covering shapes first, batches borrowing them)."""

from __future__ import annotations

import logging
import pickle
import threading

import jax
import numpy as np
import pytest
import tiny_models as tm

import tei_jax
from tei_jax import compile_cache, executables
from tei_jax.batching import BatchShape, ShapePolicy
from tei_jax.engine import EMBED, EMBED_ALL, covering_shapes, holds
from tei_jax.executables import MAGIC, ExecutableStore
from tei_jax.scheduler import Scheduler

SHAPES = [BatchShape(1, 16, 4), BatchShape(2, 64, 16), BatchShape(4, 128, 32)]
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


class TraceCounter:
    """Counts jaxpr traces reported by jax.monitoring while active (a warm load has none)."""

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)

    def _on_duration(self, event, duration, **kwargs):
        if self.active and event == TRACE_EVENT:
            self.count += 1


@pytest.fixture(scope="module")
def traces():
    return TraceCounter()


@pytest.fixture(scope="module")
def folder():
    path = tm.make_model("bert", "base", seed=11)
    tm.write_pooling(path, "mean")
    return path


def _load(folder, root, **options):
    """A model whose executable store lives in `root` (JAX's own cache stays the session's:
    it is process-wide, and moving it would slow every later test)."""
    options.setdefault("max_batch_tokens", 256)
    model = tei_jax.load(str(folder), **options)
    model.engine.store = ExecutableStore(root / "executables", model.engine.store.key)
    return model


def test_a_second_load_reads_every_shape_back_and_traces_nothing(folder, tmp_path, traces):
    first = _load(folder, tmp_path)
    first.engine.warmup(shapes=SHAPES, workers=1)
    assert first.engine.store.stats.built == 2 * len(SHAPES) and first.engine.store.stats.loaded == 0
    texts = ["a short one", "and a somewhat longer sentence for a second row of the batch"]
    expected = first.embed(texts)

    again = _load(folder, tmp_path)
    traces.active = True
    try:
        again.engine.warmup(shapes=SHAPES, workers=1)
    finally:
        traces.active = False
    assert traces.count == 0
    assert again.engine.store.stats.loaded == 2 * len(SHAPES) and again.engine.store.stats.built == 0
    np.testing.assert_allclose(again.embed(texts), expected, atol=1e-6)


@pytest.mark.parametrize("change", [{"dtype": "bfloat16"}, {"max_batch_tokens": 512}, {"pooling": "cls"}])
def test_a_changed_key_does_not_reuse_entries(folder, tmp_path, change):
    base = _load(folder, tmp_path)
    base.engine.warmup(shapes=SHAPES[:1], workers=1)
    changed = _load(folder, tmp_path, **change)
    assert changed.engine.store.digest != base.engine.store.digest
    changed.engine.warmup(shapes=SHAPES[:1], workers=1)
    assert changed.engine.store.stats.loaded == 0 and changed.engine.store.stats.built == 2


def test_the_key_names_model_dtype_shapes_attention_devices_and_versions(folder, tmp_path):
    key = _load(folder, tmp_path).engine.store.key
    for field in ("model_files", "dtype", "shape_policy", "attention", "placement", "jax", "jaxlib", "tei_jax",
                  "tei_jax_code", "params", "backend"):
        assert key[field], field
    assert "max_batch_tokens=256" in key["shape_policy"]


def test_edited_engine_code_does_not_reuse_entries(folder, tmp_path, monkeypatch):
    """Same version string, other sources (an edited checkout): nothing is served."""
    base = _load(folder, tmp_path)
    base.engine.warmup(shapes=SHAPES[:1], workers=1)
    monkeypatch.setattr(executables, "engine_code_digest", lambda: "0" * 64)
    edited = _load(folder, tmp_path)
    assert edited.engine.store.digest != base.engine.store.digest
    edited.engine.warmup(shapes=SHAPES[:1], workers=1)
    assert edited.engine.store.stats.loaded == 0 and edited.engine.store.stats.built == 2


def _damage_truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _damage_flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_not_an_executable(path):
    import hashlib

    payload = pickle.dumps(("not", "an", "executable"))
    path.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_flip, _damage_not_an_executable])
def test_a_damaged_entry_is_rebuilt_with_a_warning_and_overwritten(folder, tmp_path, caplog, damage):
    first = _load(folder, tmp_path)
    first.engine.warmup(tasks=[EMBED], shapes=SHAPES[:1], workers=1)
    path = first.engine.store.path("embed-1x16x4")
    expected = first.embed("hello")
    damage(path)
    again = _load(folder, tmp_path)
    with caplog.at_level(logging.WARNING, logger="tei_jax.executables"):
        again.engine.warmup(tasks=[EMBED], shapes=SHAPES[:1], workers=1)
    assert "rebuilding" in caplog.text
    assert again.engine.store.stats.rebuilt == 1 and again.engine.store.stats.loaded == 0
    np.testing.assert_allclose(again.embed("hello"), expected, atol=1e-6)
    third = _load(folder, tmp_path)  # the overwritten entry is whole again
    third.engine.warmup(tasks=[EMBED], shapes=SHAPES[:1], workers=1)
    assert third.engine.store.stats.loaded == 1 and third.engine.store.stats.rebuilt == 0


def test_an_entry_built_for_other_arguments_is_never_served(folder, tmp_path, caplog):
    first = _load(folder, tmp_path)
    first.engine.warmup(tasks=[EMBED], shapes=SHAPES[:2], workers=1)
    store = first.engine.store
    store.path("embed-1x16x4").write_bytes(store.path("embed-2x64x16").read_bytes())
    again = _load(folder, tmp_path)
    with caplog.at_level(logging.WARNING, logger="tei_jax.executables"):
        again.engine.warmup(tasks=[EMBED], shapes=SHAPES[:1], workers=1)
    assert "other arguments" in caplog.text and again.engine.store.stats.rebuilt == 1


def test_the_store_is_off_with_the_compile_cache(folder, monkeypatch):
    session_cache = compile_cache.active()
    try:
        model = tei_jax.load(str(folder), compile_cache="none", max_batch_tokens=256)
        assert not model.engine.store.enabled
        model.embed("still runs")
        assert model.engine.store.stats.built >= 1
    finally:
        compile_cache.enable(session_cache if session_cache is not None else "none")


def test_the_store_sits_in_the_compile_cache_folder(folder):
    model = tei_jax.load(str(folder), max_batch_tokens=256)
    assert model.engine.store.folder.parent == compile_cache.active() / "executables"


def test_store_writes_are_whole_files_even_when_two_write_at_once(tmp_path):
    store = ExecutableStore(tmp_path, {"k": 1})
    compiled = jax.jit(lambda x: x * 2).lower(jax.ShapeDtypeStruct((4,), np.float32)).compile()
    threads = [threading.Thread(target=store._store, args=(store.path("same"), compiled)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.name for p in store.folder.iterdir() if p.suffix == ".tmp"] == []
    loaded = ExecutableStore(tmp_path, {"k": 1}).get("same", lambda: pytest.fail("rebuilt"))
    np.testing.assert_array_equal(loaded(np.arange(4, dtype=np.float32)), [0, 2, 4, 6])


# Pruning stale key folders -------------------------------------------------------------------
VERSIONS = {"format": 1, "tei_jax": "0.1.0", "jax": "0.10.2", "jaxlib": "0.10.2"}
DAY = 24 * 3600


def _key_folder(root, name, key, size, last_used, temp_age=None):
    import json
    import os

    folder = root / name
    folder.mkdir(parents=True)
    if key is not None:
        (folder / "key.json").write_text(json.dumps(key))
    (folder / "embed-1x16x4.jaxexe").write_bytes(b"x" * size)
    if temp_age is not None:
        temp = folder / ".embed-2x64x16.jaxexe.abc.tmp"
        temp.write_bytes(b"t" * 10)
        os.utime(temp, (last_used - temp_age, last_used - temp_age))
    os.utime(folder, (last_used, last_used))
    return folder


def test_prune_removes_other_versions_unused_for_a_day_then_least_recently_used_beyond_the_cap(tmp_path):
    from tei_jax.executables import prune

    now = 1_000_000_000.0
    old_jax = dict(VERSIONS, jax="0.9.0")
    in_use = _key_folder(tmp_path, "current", VERSIONS, 100, now - 5 * DAY, temp_age=2 * 3600)
    gone_version = _key_folder(tmp_path, "old-jax-idle", old_jax, 100, now - 2 * DAY)
    kept_version = _key_folder(tmp_path, "old-jax-in-use", old_jax, 100, now - 60)  # another install
    no_key = _key_folder(tmp_path, "no-key", None, 100, now - 3 * DAY)
    lru = _key_folder(tmp_path, "same-oldest", VERSIONS, 300, now - 4 * DAY)
    recent = _key_folder(tmp_path, "same-recent", VERSIONS, 300, now - DAY)
    removed = prune(tmp_path, in_use, VERSIONS, max_bytes=850, now=now)
    assert {folder.name for folder, _ in removed} == {gone_version.name, no_key.name, lru.name}
    assert not gone_version.exists() and not no_key.exists() and not lru.exists()
    assert kept_version.exists() and recent.exists()  # with their key.json files: 710 bytes left, under 850
    assert [p.name for p in in_use.iterdir()] and not list(in_use.glob("*.tmp"))  # a dead writer's file
    assert prune(tmp_path, in_use, VERSIONS, max_bytes=None, now=now) == []


def test_the_first_store_prunes_and_the_cap_comes_from_the_environment(tmp_path, monkeypatch):
    import time

    from tei_jax.executables import ExecutableStore, max_bytes_from_env

    monkeypatch.setenv("TEI_JAX_COMPILE_CACHE_MAX_MB", "0")
    assert max_bytes_from_env() is None
    monkeypatch.setenv("TEI_JAX_COMPILE_CACHE_MAX_MB", "1.5")
    assert max_bytes_from_env() == 1_500_000
    stale = _key_folder(tmp_path, "old", dict(VERSIONS, tei_jax="0.0.1"), 10, time.time() - 2 * DAY)
    store = ExecutableStore(tmp_path, {**VERSIONS, "model": "m"})
    compiled = jax.jit(lambda x: x + 1).lower(jax.ShapeDtypeStruct((2,), np.float32)).compile()
    store.get("plus-one", lambda: compiled)
    assert not stale.exists() and store.path("plus-one").exists()


# Progressive warmup --------------------------------------------------------------------------
@pytest.mark.parametrize("packing", [True, False])
def test_covering_shapes_hold_every_shape_and_come_first(packing):
    policy = ShapePolicy(512, 16384, batch_tokens=1024, packing=packing)
    shapes = policy.shapes()
    covers = covering_shapes(shapes)
    assert all(any(holds(c, s) for c in covers) for s in shapes)
    assert len(covers) <= len({s.rows for s in shapes}) < len(shapes)
    assert covers[0].width == max(s.width for s in shapes)


def test_warmup_order_puts_every_tasks_covers_first(folder, tmp_path):
    engine = _load(folder, tmp_path).engine
    order, cover_count = engine.warmup_order()
    covers = {s for _, s in order[:cover_count]}
    assert covers == set(covering_shapes(engine.policy.shapes()))
    assert {t for t, _ in order[:cover_count]} == set(engine.tasks)
    assert len(order) == len(set(order)) == len(engine.tasks) * len(engine.policy.shapes())


@pytest.mark.parametrize("family", ["bert", "mpnet", "jina", "qwen3"])
def test_a_batch_on_a_borrowed_wider_shape_gives_the_same_answer(family):
    """Families whose attention depends on positions (relative buckets, ALiBi, causal + last
    token) give the same vectors when their batch runs in a wider, taller compiled shape."""
    import families

    model = families.load(family)
    engine = model.engine
    rng = np.random.default_rng(3)
    texts = tm.random_texts(rng, 5, 1, 12)
    items = [model.tokenizer.encode(t, truncate=True) for t in texts]
    batch = engine.policy.plan([len(i) for i in items])[0]
    members = [items[i] for i in batch.indices]
    exact = engine.run(EMBED, members, batch)
    exact_all = engine.run(EMBED_ALL, members, batch)
    wide = max((s for s in engine.policy.shapes() if holds(s, batch.shape) and s != batch.shape),
               key=lambda s: s.tokens)
    assert wide.width > batch.shape.width
    for task in (EMBED, EMBED_ALL):
        engine._executable(task, wide)
    # Only `wide` may hold the batch while it borrows: the family models are shared across tests,
    # so other shapes holding it (its own included) may already be compiled; set them aside.
    saved = {key: engine._compiled.pop(key) for key in list(engine._compiled)
             if key[0] in (EMBED, EMBED_ALL) and key[1] != wide and holds(key[1], batch.shape)}
    engine._warming += 1
    try:
        assert engine._runnable(EMBED, batch.shape)[0] == wide
        borrowed = engine.run(EMBED, members, batch)
        borrowed_all = engine.run(EMBED_ALL, members, batch)
    finally:
        engine._warming -= 1
        engine._compiled.update(saved)
    np.testing.assert_allclose(np.stack(borrowed), np.stack(exact), atol=1e-5)
    for got, want in zip(borrowed_all, exact_all):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_requests_during_warmup_get_the_right_vectors(folder, tmp_path):
    """Ready once the covering shapes are built; batches sent while the rest are still
    building (held back here so the window is certain) run on covering shapes, correctly."""
    reference = tm.load_cached(folder)
    model = _load(folder, tmp_path, max_batch_tokens=128)
    engine = model.engine
    order, cover_count = engine.warmup_order()
    covers = set(order[:cover_count])
    release = threading.Event()
    build = engine.lower

    def held_back(task, shape, params=None):
        if (task, shape) not in covers:
            release.wait(120)
        return build(task, shape, params)

    engine.lower = held_back
    scheduler = Scheduler(engine)
    scheduler.start(warmup=True)
    try:
        assert scheduler.ready.wait(300)
        assert not scheduler.warmed.is_set() and engine.compile_count == cover_count
        rng = np.random.default_rng(5)
        texts = tm.random_texts(rng, 40, 1, 90)
        items = [model.tokenizer.encode(t, truncate=True) for t in texts]
        futures = scheduler.submit(EMBED, items)
        outputs = [f.result(timeout=120).output for f in futures]
        assert not scheduler.warmed.is_set()  # all answered on covering shapes
        expected = reference.embed(texts, normalize=False)
        np.testing.assert_allclose(np.stack(outputs), expected, atol=1e-5)
        release.set()
        assert scheduler.warmed.wait(300)
        assert scheduler.compiles_since_ready == 0
        again = [f.result(timeout=120).output for f in scheduler.submit(EMBED, items)]
        np.testing.assert_allclose(np.stack(again), expected, atol=1e-5)
        assert scheduler.compiles_since_ready == 0
    finally:
        release.set()
        scheduler.stop(timeout=60)
