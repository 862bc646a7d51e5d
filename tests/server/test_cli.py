"""The command line: TEI's flags, env vars and defaults, plus ours (no server started)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.settings import parse_settings

TEI_FLAGS = ("--model-id", "--revision", "--tokenization-workers", "--dtype", "--served-model-name", "--pooling",
             "--max-concurrent-requests", "--max-batch-tokens", "--max-batch-requests", "--max-client-batch-size",
             "--auto-truncate", "--default-prompt-name", "--default-prompt", "--dense-path", "--hf-token",
             "--hostname", "--port", "--uds-path", "--huggingface-hub-cache", "--payload-limit", "--api-key",
             "--json-output", "--disable-spans", "--otlp-endpoint", "--otlp-service-name", "--prometheus-port",
             "--cors-allow-origin", "--attention", "--compile-cache-dir")


def test_defaults_are_teis(monkeypatch):
    for name in ("PORT", "HOSTNAME", "MODEL_ID", "MAX_BATCH_TOKENS", "AUTO_TRUNCATE", "TEI_JAX_COMPILE_CACHE"):
        monkeypatch.delenv(name, raising=False)
    s = parse_settings([])
    assert s.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert (s.port, s.hostname, s.max_batch_tokens, s.max_concurrent_requests, s.max_client_batch_size) == (
        3000, "0.0.0.0", 16384, 512, 32)
    assert s.auto_truncate is True and s.payload_limit == 2_000_000 and s.max_batch_requests is None
    assert s.api_key is None and s.json_output is False and s.cors_allow_origin is None
    assert s.attention == "auto" and s.compile_cache_dir.endswith("tei-jax/jax")
    assert s.model_name == s.model_id


def test_env_vars_and_flags(monkeypatch):
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.setenv("MAX_BATCH_TOKENS", "1024")
    monkeypatch.setenv("AUTO_TRUNCATE", "false")
    monkeypatch.setenv("JSON_OUTPUT", "true")
    monkeypatch.setenv("CORS_ALLOW_ORIGIN", "http://a.test,http://b.test")
    monkeypatch.setenv("TEI_JAX_COMPILE_CACHE", "none")
    monkeypatch.setenv("HOSTNAME", "my-container")  # Docker's container name: falls back to 0.0.0.0
    s = parse_settings(["--max-batch-tokens", "2048", "--pooling", "last-token", "--served-model-name", "m"])
    assert s.port == 8080 and s.max_batch_tokens == 2048 and s.auto_truncate is False and s.json_output is True
    assert s.cors_allow_origin == ["http://a.test", "http://b.test"] and s.compile_cache_dir == "none"
    assert s.hostname == "0.0.0.0" and s.pooling == "last_token" and s.model_name == "m"
    assert parse_settings(["--auto-truncate"]).auto_truncate is True
    assert parse_settings(["--hostname", "::1"]).bind == "[::1]:8080"
    with pytest.raises(SystemExit):
        parse_settings(["--default-prompt", "a", "--default-prompt-name", "b"])
    with pytest.raises(SystemExit):
        parse_settings(["--max-batch-tokens", "0"])


def test_help_lists_every_flag():
    result = subprocess.run([sys.executable, "-m", "app.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in TEI_FLAGS:
        assert flag in result.stdout, flag
    assert "[env: MAX_BATCH_TOKENS=]" in result.stdout and "[default: 16384]" in result.stdout


def test_version_prints_ours_and_exits_0():
    from tei_jax import __version__

    result = subprocess.run([sys.executable, "-m", "app.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == f"text-embeddings-router {__version__}\n"


def test_chunking_flags_are_opt_in(monkeypatch):
    monkeypatch.delenv("CHUNK_LONG_INPUTS", raising=False)
    assert parse_settings([]).chunk_long_inputs is False  # TEI's behaviour: truncate or refuse
    s = parse_settings(["--chunk-long-inputs", "--chunk-overlap", "16"])
    assert s.chunk_long_inputs is True and s.chunk_overlap == 16
    monkeypatch.setenv("CHUNK_LONG_INPUTS", "true")
    assert parse_settings([]).chunk_long_inputs is True
    with pytest.raises(SystemExit):
        parse_settings(["--chunk-overlap", "-1"])
