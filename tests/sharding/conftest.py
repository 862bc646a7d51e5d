"""The multi-device tests run JAX in subprocesses forced to several host devices, so the
rest of the suite keeps its one device. Those subprocesses start when collection finishes
(head_start.py), so they load and compile while the earlier tests run."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import head_start  # noqa: E402


def pytest_collection_finish(session):
    # Under pytest-xdist every worker collects every test: begun here, each worker would start
    # its own copies. There the group's worker starts them when their tests need them instead
    # (head_start.take), while the other worker keeps the second core busy.
    if session.config.option.collectonly or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    selected = {item.path.name for item in session.items if item.path.parent == HERE}
    if "test_parity.py" in selected:
        from test_parity import start_checks

        head_start.begin("multidevice", start_checks)
    if "test_server_dp.py" in selected:
        from test_server_dp import start_servers

        head_start.begin("dp-servers", start_servers)


def pytest_sessionfinish(session):
    head_start.stop_all()
