"""The server with --data-parallel-size 4 on 4 forced host devices: /embed, /v1/embeddings
(an embedding model) and /rerank (a reranker) under 32 concurrent clients, sent once every
shape is built, give the single-device answers (computed in this process), /info and the
startup log name the mesh, and nothing compiles after warmup. Two `python -m app.cli`
subprocesses, started when collection finishes (head_start.py), so they load and warm up
while the earlier tests run."""

from __future__ import annotations

import random
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

import head_start
import sharded_models
import tiny_models as tm
from forced_devices import REPO, forced_devices_env, python_command
from ports import reserve_port

CLIENTS = 32
REQUESTS = 96
TOL = 1e-5
TEXTS = ["short", "a query about jax", "the quick brown fox jumps over the lazy dog " * 3,
         "naïve café in Zürich", "embeddings are vectors " * 8, "x", "données et modèle", "end of it"]


class DPServer:
    def __init__(self, folder: Path):
        self.port = reserve_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkdtemp(prefix="tei-jax-dp-")) / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            python_command("-m", "app.cli", "--hostname", "127.0.0.1", "--port", str(self.port),
                           "--model-id", str(folder), "--max-batch-tokens", "256", "--data-parallel-size", "4"),
            cwd=REPO, env=dict(forced_devices_env(4), TOKENIZERS_PARALLELISM="false"),
            stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 300) -> "DPServer":
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"server exited:\n{self.log()[-4000:]}"
            assert time.monotonic() < deadline, f"not ready after {timeout}s:\n{self.log()[-4000:]}"
            try:
                if requests.get(self.url + "/health", timeout=5).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.25)

    def wait_warm(self, timeout: float = 300) -> "DPServer":
        """Every shape built: only then does te_compilations_after_warmup witness anything."""
        deadline = time.monotonic() + timeout
        while True:
            text = requests.get(self.url + "/metrics", timeout=10).text
            ready, total = (float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))
                            for name in ("te_warmup_shapes_ready", "te_warmup_shapes"))
            if total > 0 and ready >= total:
                return self
            assert time.monotonic() < deadline, f"warmup not done after {timeout}s:\n{self.log()[-4000:]}"
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            self._log.close()
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


class DPServers(dict):
    """name -> (DPServer, model folder): the embedding model and the reranker."""

    def stop(self) -> None:
        for server, _ in self.values():
            server.stop()


def start_servers() -> DPServers:
    folders = {"embed": sharded_models.MODELS["bert"][0](), "rerank": sharded_models.MODELS["reranker"][0]()}
    return DPServers({name: (DPServer(folder), folder) for name, folder in folders.items()})


@pytest.fixture(scope="module")
def servers():
    started = head_start.take("dp-servers", start_servers)  # begun when collection finished
    try:
        for server, _ in started.values():
            server.wait_ready().wait_warm()
        yield started
    finally:
        started.stop()


def _compiles_after_warmup(server: DPServer) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    return float(re.search(r"^te_compilations_after_warmup (\S+)$", text, re.M).group(1))


def test_data_parallel_server_under_concurrent_clients(servers):
    (embed, embed_dir), (rerank, rerank_dir) = servers["embed"], servers["rerank"]
    one_device = tm.load_cached(embed_dir)  # this process has one device
    ranker = tm.load_cached(rerank_dir)
    expected = {text: one_device.embed(text)[0] for text in TEXTS}
    plan = []  # (route, texts, single-device answer): computed first, so the clients only wait on the server
    for seed in range(REQUESTS):
        rng = random.Random(seed)
        texts = rng.sample(TEXTS, rng.randint(1, 5))
        route = ("embed", "openai", "rerank")[seed % 3]
        if route == "rerank":
            want = ranker.rerank("what is jax?", texts, raw_scores=True)  # best first, as the route answers
        else:
            want = np.stack([expected[t] for t in texts])
        plan.append((route, texts, want))

    def call(seed: int) -> str:
        route, texts, want = plan[seed]
        if route == "embed":
            got = np.asarray(requests.post(embed.url + "/embed", json={"inputs": texts}, timeout=120).json())
        elif route == "openai":
            body = requests.post(embed.url + "/v1/embeddings", json={"input": texts, "model": "m"}, timeout=120).json()
            got = np.asarray([d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])])
        else:
            ranks = requests.post(rerank.url + "/rerank", json={"query": "what is jax?", "texts": texts,
                                                               "raw_scores": True}, timeout=120).json()
            assert [r["index"] for r in ranks] == [r["index"] for r in want]
            got = np.asarray([r["score"] for r in sorted(ranks, key=lambda r: r["index"])])
            want = np.asarray([r["score"] for r in sorted(want, key=lambda r: r["index"])])
        error = float(np.max(np.abs(got - want)))
        assert error < TOL, f"{route} {texts}: max abs {error}"
        return route

    with ThreadPoolExecutor(CLIENTS) as pool:
        routes = list(pool.map(call, range(REQUESTS)))
    assert sorted(set(routes)) == ["embed", "openai", "rerank"]
    for server, _ in servers.values():
        assert _compiles_after_warmup(server) == 0
        info = requests.get(server.url + "/info", timeout=10).json()
        assert info["sharding"]["mesh"] == {"data": 4, "model": 1}
        assert info["sharding"]["device_ids"] == [0, 1, 2, 3]
        assert "Devices: 4 cpu" in server.log() and "mesh data 4 x model 1" in server.log()
