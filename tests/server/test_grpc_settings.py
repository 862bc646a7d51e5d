"""The gRPC flags: --grpc (instead of HTTP on --port) and --grpc-port (beside it)."""

from __future__ import annotations

import pytest

from app.settings import parse_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("GRPC", "GRPC_PORT", "PORT"):
        monkeypatch.delenv(name, raising=False)


def test_http_only_is_the_default():
    s = parse_settings([])
    assert s.grpc is False and s.grpc_port is None


def test_flags_and_env_vars(monkeypatch):
    assert parse_settings(["--grpc", "--port", "8080"]).grpc is True
    assert parse_settings(["--grpc-port", "50051"]).grpc_port == 50051
    monkeypatch.setenv("GRPC", "true")
    monkeypatch.setenv("GRPC_PORT", "8080")
    monkeypatch.setenv("PORT", "8080")
    s = parse_settings([])
    assert s.grpc is True and s.port == 8080  # GRPC_PORT equal to --port is allowed with --grpc


@pytest.mark.parametrize("argv", [["--grpc", "--port", "80", "--grpc-port", "81"],  # two gRPC ports
                                  ["--port", "80", "--grpc-port", "80"],  # HTTP and gRPC on one port
                                  ["--grpc-port", "0"]])
def test_contradictions_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv)
    assert exit_info.value.code == 2
    assert "--grpc" in capsys.readouterr().err
