"""The tiny-model cache: a folder counts as built only when every file its build wrote is whole."""

from __future__ import annotations

import tiny_models as tm


def _build(into):
    (into / "config.json").write_text("{}")
    (into / "model.safetensors").write_bytes(b"w" * 64)
    (into / "1_Pooling").mkdir()
    (into / "1_Pooling" / "config.json").write_text("{}")


def test_a_half_written_folder_is_built_again(tmp_path):
    builds = []

    def build(into):
        builds.append(into)
        _build(into)

    folder = tmp_path / "bert-base"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # a build that died before writing its weights
    assert tm.build_once(folder, build) == folder and len(builds) == 1
    assert (folder / "model.safetensors").stat().st_size == 64
    assert tm.build_once(folder, build) == folder and len(builds) == 1  # whole: reused
    (folder / "model.safetensors").write_bytes(b"w" * 10)  # truncated
    tm.build_once(folder, build)
    assert len(builds) == 2 and (folder / "model.safetensors").stat().st_size == 64
    (folder / "1_Pooling" / "config.json").unlink()  # a file of a subfolder missing
    tm.build_once(folder, build)
    assert len(builds) == 3 and tm.is_complete(folder)
    assert [p.name for p in tmp_path.iterdir()] == ["bert-base"]  # no staging folder left


def test_a_failed_build_leaves_nothing_that_passes_for_a_model(tmp_path):
    def dies(into):
        (into / "config.json").write_text("{}")
        raise KeyboardInterrupt

    folder = tmp_path / "bert-base"
    try:
        tm.build_once(folder, dies)
    except KeyboardInterrupt:
        pass
    assert not folder.exists() and list(tmp_path.iterdir()) == []


def test_a_build_that_copies_a_built_folder_is_complete_and_reused(tmp_path):
    """Derived models copy a base folder, manifest included: that copy must not count as one of
    the derived folder's own files (its size changes when the new manifest is written)."""
    import shutil

    base = tm.build_once(tmp_path / "base", _build)
    builds = []

    def derived(into):
        builds.append(into)
        shutil.copytree(base, into, dirs_exist_ok=True)
        (into / "config.json").write_text('{"model_type": "derived"}')

    folder = tm.build_once(tmp_path / "derived", derived)
    assert tm.is_complete(folder) and len(builds) == 1
    assert tm.build_once(folder, derived) == folder and len(builds) == 1


def test_two_processes_building_one_folder_build_it_once(tmp_path):
    """pytest-xdist workers sharing TEI_JAX_TINY_MODELS: the second builder waits for the first
    and reuses its folder (before, it built again and removed the first one's finished folder,
    which the first one's tests were reading). Threads stand in for the processes: each opens
    the lock file on its own, as a process does."""
    import threading
    import time

    builds, started = [], threading.Event()

    def slow(into):
        builds.append(into)
        started.set()
        time.sleep(0.3)
        _build(into)

    folder = tmp_path / "bert-base"
    first = threading.Thread(target=tm.build_once, args=(folder, slow))
    first.start()
    assert started.wait(10)
    assert tm.build_once(folder, slow) == folder  # while the first one is still building
    first.join()
    assert len(builds) == 1 and tm.is_complete(folder)
    assert [p.name for p in tmp_path.iterdir()] == ["bert-base"]
    assert not tm._lock_path(folder).exists()  # removed by the last holder (no pile of lock files)


def test_load_cached_sees_a_rewritten_pooling(tmp_path, monkeypatch):
    """A module that loaded a shared folder before another module rewrote its pooling must not
    hand that load to the second (test_model_api after test_tokenization saw cls pooling)."""
    loads = []
    monkeypatch.setattr("tei_jax.load", lambda folder, **options: loads.append(folder) or object())
    monkeypatch.setattr(tm, "_LOADED", {})
    tm.write_pooling(tmp_path, "cls")
    first = tm.load_cached(tmp_path)
    assert tm.load_cached(tmp_path) is first
    tm.write_pooling(tmp_path, "mean")
    assert tm.load_cached(tmp_path) is not first and len(loads) == 2
