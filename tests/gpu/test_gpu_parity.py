"""Every family in 16 bits on the GPU against the same tiny model in torch on the same GPU.

For each family with a transformers class, tei_jax in bfloat16 and float16 (with each attention
implementation: xla, pallas, cudnn) is compared with transformers on the same device, both in the
same 16-bit dtype and in float32: pooled vectors must reach cosine >= 0.999 each, classifier
scores (TEI's softmax scores) must agree within 1e-2. JinaBERT v2 and the remote-code GTE have no
transformers class; their 16-bit vectors are compared with tei_jax in float32 on the same device,
which the default CPU suite checks against a NumPy reference at 1e-5.

GPU only (`pytest -m gpu`); TEI_JAX_GPU_TESTS_ON_CPU=1 runs the same checks on the CPU backend
(tests/gpu_env.py). The tiny models come from the family tests' own factories.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU

import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

import tiny_models as tm  # noqa: E402
from gpu_env import HAS_GPU, needs_gpu, torch_device  # noqa: E402

pytestmark = [pytest.mark.gpu, needs_gpu]

COSINE = 0.999
SCORE_TOL = 1e-2
DTYPES = ("bfloat16", "float16")
ATTENTIONS = ("xla", "pallas", "cudnn")
# family -> (factory, pooling); factories return a cached folder of a tiny random model.
ENCODERS = {
    "bert": (lambda head="base", **kw: tm.make_model("bert", head, **kw), "mean"),
    "roberta": (lambda head="base", **kw: tm.make_model("roberta", head, **kw), "mean"),
    "xlm-roberta": (lambda head="base", **kw: tm.make_model("xlm-roberta", head, **kw), "cls"),
    "camembert": (lambda head="base", **kw: tm.make_model("camembert", head, **kw), "mean"),
    "distilbert": (lambda head="base", **kw: tm.make_model("distilbert", head, **kw), "mean"),
}
HF_KINDS = {"nomic_bert": "mean", "gte": "cls", "modernbert": "mean", "mpnet": "mean"}
DECODERS = ("mistral", "qwen2", "qwen3", "llama")
TORCH_FAMILIES = [*ENCODERS, *HF_KINDS, *DECODERS, "gemma3", "deberta"]
CLASSIFIER_FAMILIES = ["bert", "roberta", "distilbert", "gte", "modernbert", "mpnet", "deberta", *DECODERS]
REMOTE_FAMILIES = ["jina", "jina-code", "gte-new", "pplx"]
# config.json model types (tei_jax.models.supported_model_types()) each test family stands for;
# a default-run test checks that every supported type is here.
MODEL_TYPES = {**{f: f for f in TORCH_FAMILIES}, "gemma3": "gemma3_text", "deberta": "deberta-v2", "jina": "bert", "jina-code": "bert",
               "gte-new": "new", "pplx": "bidirectional_pplx_qwen3"}
COVERED_BY = {"llama_bidirec": "llama (the same decoder class with is_causal false; bidirectional "
                               "attention is the encoders' path, tested in every encoder family)"}


def folder_for(family: str, head: str = "base") -> tuple[Path, str]:
    """(model folder, pooling) of the family's tiny model; classifiers get three labels."""
    labels = {"num_labels": 3} if head == "classification" else {}
    if family in ENCODERS:
        factory, pooling = ENCODERS[family]
        return factory(head, **labels), pooling
    if family in HF_KINDS:
        from encoder_models import hf_model

        extra = {"type_vocab_size": 2} if family == "gte" else {}
        return hf_model(family, head, **labels, **extra), HF_KINDS[family]
    if family in DECODERS:
        from test_decoders import make_decoder

        return make_decoder(family, head, **labels), "last_token"
    if family == "gemma3":
        from test_gemma3 import make_gemma3

        return make_gemma3("gpu"), "mean"
    if family == "deberta":
        from deberta_models import make_deberta

        return make_deberta("v3", head, **labels), "mean"
    raise KeyError(family)


def remote_folder(family: str) -> tuple[Path, str]:
    """Fake checkpoints with the published names (no transformers class exists for these)."""
    from encoder_models import fake_checkpoint, random_weights

    if family == "pplx":  # a bidirectional Qwen3 under its own model_type (no transformers class)
        from test_pplx import make_pplx

        return make_pplx()[1], "mean"  # (the plain Qwen3 it was made from, its own folder)
    if family in ("jina", "jina-code"):
        import test_jina

        code = test_jina.QK_POST_NORM if family == "jina-code" else test_jina.IMPLEMENTATION
        config = test_jina.jina_config(code)
        tensors = random_weights(test_jina.published_shapes(config, family == "jina-code"), seed=1)
        return fake_checkpoint(f"gpu-{family}", config, tensors), "mean"
    import test_gte

    config = test_gte.new_config()
    tensors = random_weights(test_gte.published_shapes(config), seed=23)
    return fake_checkpoint("gpu-gte-new", config, tensors, pooling="cls"), "cls"


def missing_factories() -> list[str]:
    """The family tests' helpers this file builds its models with, that no longer exist (a
    default-run test calls this, so a rename there shows up without a GPU)."""
    import importlib

    wanted = {"tiny_models": ("make_model", "random_texts"), "encoder_models": ("hf_model", "fake_checkpoint", "random_weights"),
              "test_decoders": ("make_decoder",), "test_jina": ("jina_config", "published_shapes", "IMPLEMENTATION", "QK_POST_NORM"),
              "test_gte": ("new_config", "published_shapes"), "test_gemma3": ("make_gemma3",),
              "test_pplx": ("make_pplx",), "deberta_models": ("make_deberta",)}
    missing = []
    for module, names in wanted.items():
        try:
            loaded = importlib.import_module(module)
        except ImportError as error:
            missing.append(f"{module} ({error})")
            continue
        missing += [f"{module}.{name}" for name in names if not hasattr(loaded, name)]
    return missing


_MODELS: dict = {}


def ours(folder: Path, dtype: str, attention: str = "xla", pooling: str | None = None):
    """tei_jax.load once per configuration (a small token budget: few shapes to compile)."""
    import tei_jax

    key = (str(folder), dtype, attention, pooling)
    if key not in _MODELS:
        _MODELS[key] = tei_jax.load(str(folder), dtype=dtype, attention=attention, pooling=pooling,
                                    max_batch_tokens=256)
    return _MODELS[key]


def texts(seed: int, n: int = 6) -> list[str]:
    return tm.random_texts(np.random.default_rng(seed), n, 1, 24)


def torch_model(folder: Path, head: str, dtype: str):
    import torch
    import transformers

    auto = transformers.AutoModel if head == "base" else transformers.AutoModelForSequenceClassification
    model = auto.from_pretrained(folder, attn_implementation="eager").eval()
    return model.to(device=torch_device(), dtype=getattr(torch, dtype))


def torch_inputs(model, items, with_types: bool):
    import torch

    length = max(len(i) for i in items)
    pad = model.config.pad_token_id or 0
    ids = [list(i.input_ids) + [pad] * (length - len(i)) for i in items]
    mask = [[1] * len(i) + [0] * (length - len(i)) for i in items]
    kwargs = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    if with_types:
        kwargs["token_type_ids"] = torch.tensor([list(i.type_ids) + [0] * (length - len(i)) for i in items])
    return {k: v.to(torch_device()) for k, v in kwargs.items()}, np.asarray(mask)


def _takes_token_types(model) -> bool:
    import inspect

    return "token_type_ids" in inspect.signature(model.forward).parameters


def torch_pooled(folder: Path, items, pooling: str, dtype: str) -> np.ndarray:
    """transformers' last hidden state, pooled as tei_jax pools (float64 numpy)."""
    import torch

    model = torch_model(folder, "base", dtype)
    kwargs, mask = torch_inputs(model, items, _takes_token_types(model))
    with torch.inference_mode():
        hidden = model(**kwargs).last_hidden_state.float().cpu().numpy().astype(np.float64)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last_token":
        return hidden[np.arange(len(items)), mask.sum(1) - 1]
    return (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)


def torch_scores(folder: Path, items, dtype: str) -> np.ndarray:
    """transformers' classifier logits as TEI's scores (softmax over the labels)."""
    import torch

    model = torch_model(folder, "classification", dtype)
    kwargs, _ = torch_inputs(model, items, _takes_token_types(model))
    with torch.inference_mode():
        logits = model(**kwargs).logits.float().cpu().numpy().astype(np.float64)
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def check_vectors(name: str, got: np.ndarray, want: np.ndarray) -> None:
    assert np.isfinite(got).all(), f"{name}: non-finite values"
    cos = cosines(got, want)
    assert cos.min() >= COSINE, f"{name}: least cosine {cos.min():.6f} < {COSINE} (all: {np.round(cos, 6)})"


def skip_unsupported(attention: str) -> None:
    if attention == "cudnn" and not HAS_GPU:
        pytest.skip("cuDNN attention needs a GPU (this run is on the CPU backend)")


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", TORCH_FAMILIES)
def test_embeddings_match_torch(family, dtype, attention):
    skip_unsupported(attention)
    folder, pooling = folder_for(family)
    model = ours(folder, dtype, attention, pooling)
    batch = texts(len(family))
    items = [model.tokenizer.encode(t, truncate=True) for t in batch]
    got = model.embed(batch, normalize=False)
    check_vectors(f"{family} {dtype} {attention} vs torch {dtype}", got, torch_pooled(folder, items, pooling, dtype))
    check_vectors(f"{family} {dtype} {attention} vs torch float32", got,
                  torch_pooled(folder, items, pooling, "float32"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", CLASSIFIER_FAMILIES)
def test_classifier_scores_match_torch(family, dtype):
    folder, _ = folder_for(family, "classification")
    model = ours(folder, dtype)
    rng = np.random.default_rng(len(family) + 7)
    pairs = list(zip(tm.random_texts(rng, 5, 1, 16), tm.random_texts(rng, 5, 1, 16)))
    items = [model.tokenizer.encode(a, pair=b, truncate=True) for a, b in pairs]
    labels = [model.spec.id2label[i] for i in range(len(model.spec.id2label))]
    predicted = model.predict([list(p) for p in pairs])
    got = np.array([[{d["label"]: d["score"] for d in row}[label] for label in labels] for row in predicted])
    assert np.isfinite(got).all()
    for reference in (dtype, "float32"):
        want = torch_scores(folder, items, reference)
        err = float(np.abs(got - want).max())
        assert err <= SCORE_TOL, f"{family} {dtype} scores vs torch {reference}: max abs error {err:.4f} > {SCORE_TOL}"


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", REMOTE_FAMILIES)
def test_remote_code_families_match_float32(family, dtype, attention):
    skip_unsupported(attention)
    folder, pooling = remote_folder(family)
    batch = texts(len(family) + 3)
    reference = ours(folder, "float32", "xla", pooling).embed(batch, normalize=False)
    got = ours(folder, dtype, attention, pooling).embed(batch, normalize=False)
    check_vectors(f"{family} {dtype} {attention} vs tei_jax float32", got, reference)
