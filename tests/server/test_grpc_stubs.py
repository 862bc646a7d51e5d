"""The committed tei.v1 stubs are what `make proto` makes from tei.proto today."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = Path("app/grpc/proto")
GENERATED = ("tei_pb2.py", "tei_pb2.pyi", "tei_pb2_grpc.py")


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    (tmp_path / PROTO_DIR).mkdir(parents=True)
    shutil.copy(REPO / PROTO_DIR / "tei.proto", tmp_path / PROTO_DIR / "tei.proto")
    # The Makefile's command, run in a scratch copy of the tree.
    command = subprocess.run(["make", "-s", "-C", str(REPO), "-n", "proto"], capture_output=True, text=True,
                             check=True).stdout.strip().split()
    assert command[1:3] == ["-m", "grpc_tools.protoc"], command
    subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, check=True)
    for name in GENERATED:
        fresh = (tmp_path / PROTO_DIR / name).read_text()
        committed = (REPO / PROTO_DIR / name).read_text()
        assert fresh == committed, f"{PROTO_DIR / name} is stale: run `make proto` and commit the result"


def test_the_stubs_describe_package_tei_v1_with_five_services():
    from app.grpc.proto import tei_pb2

    services = tei_pb2.DESCRIPTOR.services_by_name
    assert tei_pb2.DESCRIPTOR.package == "tei.v1"
    assert sorted(services) == ["Embed", "Info", "Predict", "Rerank", "Tokenize"]
    streams = {m.name: (m.client_streaming, m.server_streaming) for m in services["Rerank"].methods}
    assert streams == {"Rerank": (False, False), "RerankStream": (True, False)}
    fields = {f.name: f.number for f in tei_pb2.EmbedRequest.DESCRIPTOR.fields}
    assert fields == {"inputs": 1, "truncate": 2, "normalize": 3, "truncation_direction": 4,
                      "prompt_name": 5, "dimensions": 6}
