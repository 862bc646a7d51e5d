"""Tiny encoder models for the family tests: transformers' own classes where they exist, and
fake checkpoints with exactly the published weight names (and remote-code configs) otherwise.

Folders live under tiny_models.ROOT and are cached per session like tiny_models.make_model.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tiny_models as tm
from safetensors.numpy import save_file

from tei_jax import models
from tei_jax.config import load_spec
from tei_jax.weights import WeightReader, safetensors_files

VOCAB = 30528  # MiniLM's tokenizer (30522 ids) fits; published Jina/Nomic vocabularies are padded to 64
_HF_CLASSES = {
    "nomic_bert": ("NomicBertConfig", "NomicBert"),
    "gte": ("GteConfig", "Gte"),
    "modernbert": ("ModernBertConfig", "ModernBert"),
    "mpnet": ("MPNetConfig", "MPNet"),
}
_HEADS = {"base": "Model", "classification": "ForSequenceClassification", "masked_lm": "ForMaskedLM"}


def hf_model(kind: str, head: str = "base", num_labels: int = 2, seed: int = 0, **overrides) -> Path:
    """A tiny random transformers model saved with the hub's weight names (cached)."""
    key = f"hf-{kind}-{head}-{num_labels}-{seed}-" + "-".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    folder = tm.ROOT / key
    def build(into: Path) -> None:
        import torch
        import transformers

        torch.manual_seed(seed)
        config_name, prefix = _HF_CLASSES[kind]
        kwargs = dict(tm.TINY, vocab_size=VOCAB)
        if kind == "modernbert":
            kwargs.update(pad_token_id=0, bos_token_id=101, eos_token_id=102, cls_token_id=101, sep_token_id=102)
        if kind == "mpnet":
            kwargs.update(max_position_embeddings=130)
        kwargs.update(overrides)
        config = getattr(transformers, config_name)(**kwargs)
        if head == "classification":
            config.num_labels = num_labels
            config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
            config.label2id = {v: k for k, v in config.id2label.items()}
        model = getattr(transformers, prefix + _HEADS[head])(config).eval()
        tm.save_with_random_vectors(model, into)

    return tm.build_once(folder, build)


def torch_outputs(folder: Path, items, head: str = "base"):
    """transformers' outputs for a padded batch of Encoded items, and the padding mask."""
    import inspect

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
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        kwargs["token_type_ids"] = torch.tensor([list(i.type_ids) + [0] * (length - len(i)) for i in items])
    with torch.no_grad():
        out = model(**kwargs)
    return out, mask.numpy()


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Random float32 tensors for a list of published names: norm scales near 1, small biases."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in shapes.items():
        if len(shape) == 1 and _is_norm(name) and name.endswith(("weight", "gamma")):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1:
            value = 0.1 * rng.standard_normal(shape)
        elif "embeddings" in name or "relative_attention_bias" in name:
            value = 0.5 * rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / np.sqrt(shape[-1])
        tensors[name] = value.astype(np.float32)
    return tensors


def _is_norm(name: str) -> bool:
    return any(part in name for part in ("LayerNorm", "layernorm", "layer_norm", "norm", "_ln", "emb_ln"))


def fake_checkpoint(name: str, config: dict, tensors: dict[str, np.ndarray], pooling: str | None = "mean") -> Path:
    """A model folder with exactly these tensors (published names), a config.json and a tokenizer."""
    folder = tm.ROOT / f"fake-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    tm._copy_tokenizer(folder)
    if pooling:
        tm.write_pooling(folder, pooling)
    return folder


def loaded_params(folder: Path, pooling: str | None = None):
    """Build the family for a folder and load its weights, reporting what was left unused.

    Returns (architecture, params, unused names); raises ModelLoadError on a missing weight.
    """
    spec = load_spec(folder, pooling=pooling)
    arch = models.build(spec, jnp.float32, "xla")
    reader = WeightReader(safetensors_files(folder), jnp.float32, arch.checkpoint_prefixes)
    params = arch.load_params(reader)
    return arch, params, reader.unused()


def shapes_match_module(arch, params) -> bool:
    """Every parameter the modules declare is loaded, with the declared shape, and no other."""
    ints = jnp.zeros((1, 16), jnp.int32)
    declared = jax.eval_shape(lambda: arch.encoder.init(jax.random.PRNGKey(0), ints, ints, ints, ints + 1))["params"]
    shapes = lambda tree: jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)  # noqa: E731
    return shapes(declared) == shapes(params["encoder"])


def texts_and_items(model, seed: int, n: int = 6, max_words: int = 30):
    texts = tm.random_texts(np.random.default_rng(seed), n, 1, max_words)
    return texts, [model.tokenizer.encode(t, truncate=True) for t in texts]
