"""Shared test set-up: tests/ on sys.path (for tiny_models), a per-session compile cache, and the
pytest-xdist groups `make test` runs in."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite runs on one JAX CPU device, as it always has: tei_jax.load's CPU default of one
# device per core (tei_jax/cpu_devices.py) is off here, and on for the subprocesses of
# tests/test_cpu_devices.py, which check it.
os.environ.setdefault("TEI_JAX_CPU_DEVICES", "1")

# One fresh persistent compile cache per test session: the many tiny models built alike in
# different tests compile each program once, and nothing carries over from an earlier run.
# (Engines count their own compilations, so cache hits do not change what tests assert.)
# Tests that exercise the cache pass their own folder.
if "TEI_JAX_COMPILE_CACHE" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="tei-jax-test-cache-")
    atexit.register(shutil.rmtree, _cache, True)
    os.environ["TEI_JAX_COMPILE_CACHE"] = _cache


# pytest-xdist (`make test` runs `-n 2 --dist loadgroup --no-loadscope-reorder`, see the
# Makefile). Tests are handed to workers in groups, each group run whole on one worker:
#   - each module is its own group, so module fixtures are built once (as with --dist loadfile);
#   - every module using the session's server fleet (tests/server/conftest.py) is one group, so
#     one worker starts the five servers instead of each;
#   - tests/sharding is one group: its subprocesses on forced host devices (the multi-device
#     checks, the data-parallel servers, the lowering checks) run one after another instead of
#     double-booking the two cores beside the other worker.
# Under xdist those two big groups are handed out first, then the modules in collection order, so
# no long group starts last and leaves a core idle. A plain run keeps the collection order.
FLEET_FIXTURES = {"fleet", "embed_server", "classifier_server", "reranker_server", "splade_server",
                  "minilm_server"}
FIRST_GROUPS = ("sharding", "server-fleet")


def _group(module_items: list) -> str:
    path = module_items[0].path
    if path.parent.name == "sharding" and path.parent.parent == Path(__file__).parent:
        return "sharding"
    if any(FLEET_FIXTURES & set(getattr(item, "fixturenames", ())) for item in module_items):
        return "server-fleet"
    return module_items[0].nodeid.split("::")[0]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks
def pytest_collection_modifyitems(config, items):
    modules: dict[Path, list] = {}
    for item in items:
        modules.setdefault(item.path, []).append(item)
    group_of = {path: _group(module_items) for path, module_items in modules.items()}
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group_of[item.path]))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: i for i, name in enumerate(FIRST_GROUPS)}
        items.sort(key=lambda item: rank.get(group_of[item.path], len(rank)))  # stable: else as collected
