"""A model folder's files -> one typed `ModelSpec`.

Reads config.json and the sentence-transformers files the way TEI does (reference section 6):
which kind of model it is (embedding, classifier, reranker), its pooling, its length limit,
prompts and Dense modules. Every malformed or unsupported value is reported with the file and
field that hold it, at load time, never as wrong numbers later.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

log = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "splade", "last_token", "max", "weightedmean", "mean_sqrt_len")
# 1_Pooling/config.json flags, in the order TEI checks them, then the modes we add.
_POOLING_FLAGS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_lasttoken", "last_token"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
)
# sentence-transformers 6 writes one `pooling_mode` string (or a list of them) instead of flags.
_POOLING_MODES = {
    "cls": "cls", "mean": "mean", "lasttoken": "last_token", "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len", "weightedmean": "weightedmean",
}
_ST_CONFIG_NAMES = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
_DENSE_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
}
# The remote-code Qwen2 embedders (gte-Qwen2-*-instruct, stella) name this AutoModel; TEI
# appends <|endoftext|> to their single and pair inputs, which their tokenizer.json does not add.
REMOTE_QWEN2_MODEL = "modeling_qwen.Qwen2Model"
_REMOTE_QWEN2_EOS = ("<|endoftext|>", 151643)
# Families whose position ids start after the padding index (TEI's position offset).
_OFFSET_FAMILIES = ("roberta", "xlm-roberta", "camembert")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, naming the file in any error."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def normalize_pooling(name: str) -> str:
    """Accept TEI's spellings ('last-token') and ours; reject the rest by name."""
    value = name.strip().lower().replace("-", "_")
    if value == "lasttoken":
        value = "last_token"
    if value not in POOLINGS:
        raise ModelLoadError(f"unknown pooling '{name}': expected one of {', '.join(POOLINGS)}")
    return value


@dataclass(frozen=True)
class DenseSpec:
    """A sentence-transformers Dense module applied to pooled embeddings."""

    path: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str


@dataclass
class ModelSpec:
    """Everything the engine and server need to know about a model folder."""

    model_dir: Path
    config: dict[str, Any]
    model_type: str
    architectures: list[str]
    kind: str  # "embedding" | "classifier" | "reranker"
    pooling: str | None
    id2label: dict[int, str]
    max_input_length: int
    position_offset: int
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    dense: list[DenseSpec] = field(default_factory=list)
    has_normalize_module: bool = False
    appended_token: tuple[str, int] | None = None  # (text, id) added after each input

    @property
    def hidden_size(self) -> int:
        for key in ("hidden_size", "n_embd", "dim", "d_model"):  # BERT-likes, NomicBERT, DistilBERT, ...
            if self.config.get(key):
                return int(self.config[key])
        raise ModelLoadError("config.json: no hidden_size (nor n_embd, dim or d_model)")

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def embedding_dim(self) -> int:
        """Width of a pooled embedding: vocab for SPLADE, the last Dense module, else hidden."""
        if self.pooling == "splade":
            return self.vocab_size
        if self.dense:
            return self.dense[-1].out_features
        return self.hidden_size

    @property
    def label2id(self) -> dict[str, int]:
        return {label: idx for idx, label in self.id2label.items()}

    @functools.cached_property
    def tensor_names(self) -> frozenset[str]:
        """Every tensor name in the checkpoint, from the safetensors headers alone (read once,
        no data): lets a family pick the head the checkpoint carries before its weights load."""
        from safetensors import safe_open

        from .weights import safetensors_files

        names: set[str] = set()
        for path in safetensors_files(self.model_dir):
            with safe_open(str(path), framework="numpy") as handle:
                names.update(handle.keys())
        return frozenset(names)


def _model_kind(config: dict, pooling: str | None, path: Path) -> tuple[str, str | None]:
    architectures = config.get("architectures") or []
    has_labels = bool(config.get("id2label")) and bool(config.get("label2id"))
    for arch in architectures:
        if arch == "NewForTokenClassification" and not has_labels:
            continue
        if pooling == "splade" and arch.endswith("MaskedLM"):
            return "embedding", "splade"
        if arch.endswith("Classification"):
            if pooling is not None:
                log.warning("`--pooling` is ignored for classifier model %s", arch)
            kind = "reranker" if len(_id2label(config, path)) == 1 else "classifier"
            return kind, None
    if pooling == "splade":
        raise ModelLoadError(
            f"{path}: field 'architectures' has no *ForMaskedLM entry, needed for SPLADE pooling"
        )
    return "embedding", pooling


def _id2label(config: dict, path: Path) -> dict[int, str]:
    """Labels of a classifier. transformers 5 leaves the default labels (LABEL_0, LABEL_1)
    out of config.json, so a missing id2label falls back to num_labels (default 2)."""
    labels = config.get("id2label")
    if labels:
        try:
            return {int(k): str(v) for k, v in labels.items()}
        except (AttributeError, ValueError) as exc:
            raise ModelLoadError(f"{path}: field 'id2label' must map integer ids to names") from exc
    count = config.get("num_labels", 2)
    if not isinstance(count, int) or count < 1:
        raise ModelLoadError(f"{path}: field 'id2label' is missing and 'num_labels' is not a positive int")
    return {i: f"LABEL_{i}" for i in range(count)}


def _pooling_from_folder(model_dir: Path, model_type: str) -> str:
    pooling_file = model_dir / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        data = read_json(pooling_file)
        if "pooling_mode" in data:
            return _pooling_mode(pooling_file, data["pooling_mode"])
        for flag, name in _POOLING_FLAGS:
            if data.get(flag):
                return name
        raise ModelLoadError(f"{pooling_file}: no pooling mode set to true")
    if "bert" in model_type:
        log.warning("no 1_Pooling/config.json and no --pooling: using cls pooling")
        return "cls"
    raise ModelLoadError(
        f"{model_dir}: no 1_Pooling/config.json; pass a pooling (cls, mean, last_token, splade)"
    )


def _pooling_mode(pooling_file: Path, mode: Any) -> str:
    """sentence-transformers 6's `pooling_mode`: one mode; a combination is refused by name."""
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if not isinstance(mode, str) or mode not in _POOLING_MODES:
        raise ModelLoadError(
            f"{pooling_file}: field 'pooling_mode' = {mode!r} is not supported "
            f"(expected one of {', '.join(_POOLING_MODES)})"
        )
    return _POOLING_MODES[mode]


def _module_class(module: dict) -> str:
    """The class name of a modules.json entry, whatever its package path: sentence-transformers
    5 writes `sentence_transformers.models.Dense`, 6 `sentence_transformers.base.modules.dense.Dense`."""
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _base_input_length(model_dir: Path, config: dict, offset: int) -> int:
    for name in _ST_CONFIG_NAMES:
        st_file = model_dir / name
        if st_file.is_file():
            value = read_json(st_file).get("max_seq_length")
            if value is not None:
                if not isinstance(value, int) or value <= 0:
                    raise ModelLoadError(f"{st_file}: field 'max_seq_length' must be a positive int")
                return value
            break
    for key in ("max_position_embeddings", "n_positions", "max_trained_positions"):
        if isinstance(config.get(key), int):
            return config[key] - offset
    raise ModelLoadError(
        f"{model_dir / 'config.json'}: no 'max_position_embeddings' to bound the input length"
    )


def _dense_modules(model_dir: Path, dense_path: str | None) -> tuple[list[DenseSpec], bool]:
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return [], False
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{modules_file}: invalid JSON ({exc})") from exc
    if not isinstance(modules, list):
        raise ModelLoadError(f"{modules_file}: expected a list of modules")
    paths = [m.get("path", "") for m in modules if _module_class(m) == "Dense"]
    has_normalize = any(_module_class(m) == "Normalize" for m in modules)
    if len(paths) == 1 and dense_path:
        paths = [dense_path]
    dense = []
    for rel in paths:
        cfg_file = model_dir / rel / "config.json"
        if not cfg_file.is_file():
            raise ModelLoadError(f"{cfg_file}: Dense module config is missing")
        cfg = read_json(cfg_file)
        activation_name = cfg.get("activation_function", "torch.nn.modules.linear.Identity")
        if activation_name not in _DENSE_ACTIVATIONS:
            raise ModelLoadError(
                f"{cfg_file}: field 'activation_function' = {activation_name!r} is not supported"
            )
        try:
            dense.append(
                DenseSpec(
                    path=model_dir / rel,
                    in_features=int(cfg["in_features"]),
                    out_features=int(cfg["out_features"]),
                    bias=bool(cfg.get("bias", True)),
                    activation=_DENSE_ACTIVATIONS[activation_name],
                )
            )
        except KeyError as exc:
            raise ModelLoadError(f"{cfg_file}: field {exc} is missing") from exc
    return dense, has_normalize


def _prompts(model_dir: Path) -> tuple[dict[str, str], str | None]:
    st_file = model_dir / "config_sentence_transformers.json"
    if not st_file.is_file():
        return {}, None
    data = read_json(st_file)
    prompts = data.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ModelLoadError(f"{st_file}: field 'prompts' must map names to strings")
    default = data.get("default_prompt_name")
    return dict(prompts), default if default in prompts else None


def is_remote_qwen2(config: dict, model_type: str) -> bool:
    """TEI's test: model_type qwen2 with auto_map.AutoModel == modeling_qwen.Qwen2Model."""
    auto_map = config.get("auto_map")
    return model_type == "qwen2" and isinstance(auto_map, dict) and auto_map.get("AutoModel") == REMOTE_QWEN2_MODEL


def load_spec(
    model_dir: Path,
    pooling: str | None = None,
    dense_path: str | None = None,
) -> ModelSpec:
    """Read a model folder into a ModelSpec, deciding its kind and pooling as TEI does."""
    model_dir = Path(model_dir)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{model_dir}: config.json is missing")
    config = read_json(config_file)
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise ModelLoadError(f"{config_file}: field 'model_type' is missing")
    requested = normalize_pooling(pooling) if pooling else None
    kind, pooling_name = _model_kind(config, requested, config_file)
    if kind == "embedding" and pooling_name is None:
        pooling_name = _pooling_from_folder(model_dir, model_type)
    offset = int(config.get("pad_token_id") or 0) + 1 if model_type in _OFFSET_FAMILIES else 0
    dense, has_normalize = _dense_modules(model_dir, dense_path) if kind == "embedding" else ([], False)
    if pooling_name == "splade":
        dense = []
    prompts, default_prompt_name = _prompts(model_dir)
    return ModelSpec(
        model_dir=model_dir,
        config=config,
        model_type=model_type,
        architectures=list(config.get("architectures") or []),
        kind=kind,
        pooling=pooling_name,
        id2label=_id2label(config, config_file) if kind != "embedding" else {},
        max_input_length=_base_input_length(model_dir, config, offset),
        position_offset=offset,
        prompts=prompts,
        default_prompt_name=default_prompt_name,
        dense=dense,
        has_normalize_module=has_normalize,
        appended_token=_REMOTE_QWEN2_EOS if is_remote_qwen2(config, model_type) else None,
    )
