"""The session's server fleet for the HTTP tests (tests/server/live_servers.py starts them).

Every server of the session is launched at once when the first one is needed (they load
and compile in parallel), and each test waits only for its own. Tiny random models keep the
warmup short: max_input_length 128 and a small --max-batch-tokens give a handful of shapes.
"""

from __future__ import annotations

import pytest
# Re-exported for tests that still import them from conftest.
from live_servers import API_KEY, FLEET, GRPC_FLEET, REPO, Server, free_port  # noqa: F401


@pytest.fixture(scope="session")
def fleet():
    servers = {name: Server(name, make_args(), grpc=name in GRPC_FLEET) for name, make_args in FLEET.items()}
    yield servers
    for server in servers.values():  # all at once: one after another took ~6 s at the session's end
        server.terminate()
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def embed_server(fleet) -> Server:
    return fleet["embed"].wait_ready()


@pytest.fixture(scope="session")
def classifier_server(fleet) -> Server:
    return fleet["classifier"].wait_ready()


@pytest.fixture(scope="session")
def reranker_server(fleet) -> Server:
    return fleet["reranker"].wait_ready()


@pytest.fixture(scope="session")
def splade_server(fleet) -> Server:
    return fleet["splade"].wait_ready()


@pytest.fixture(scope="session")
def minilm_server(fleet) -> Server:
    return fleet["minilm"].wait_ready()


@pytest.fixture(scope="session")
def auth() -> dict:
    return {"Authorization": f"Bearer {API_KEY}"}
