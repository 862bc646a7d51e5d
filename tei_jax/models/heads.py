"""Heads on top of an encoder: classifier stacks, the masked-LM head (SPLADE), Dense modules.

Heads are small and differ between families only in their sequence of steps, so a family
describes its head as data (a tuple of steps) rather than as a new class.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp
from safetensors import safe_open

from ..config import ModelSpec
from ..weights import WeightReader, safetensors_files
from .layers import CHECKPOINT_ONLY, Norm, activation, dense

# A step is ("dense", name, features or None for num_labels, use_bias), ("act", name) or
# ("norm", name, kind, eps, use_bias).
Step = tuple


class ClassificationHead(nn.Module):
    """Pooled vector [n, hidden] -> logits [n, num_labels] through a list of steps."""

    steps: Sequence[Step]
    num_labels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pooled):
        x = pooled.astype(self.dtype)
        for step in self.steps:
            if step[0] == "dense":
                _, name, features, use_bias = step
                x = dense(features or self.num_labels, use_bias, self.dtype, name)(x)
            elif step[0] == "act":
                x = activation(step[1])(x)
            elif step[0] == "norm":
                _, name, kind, eps, use_bias = step
                x = Norm(kind, eps, use_bias, self.dtype, name=name)(x)
            else:  # pragma: no cover - family definitions are static
                raise ValueError(f"unknown head step {step!r}")
        return x.astype(jnp.float32)


class MaskedLMHead(nn.Module):
    """transform dense -> activation -> norm -> decoder (tied to word embeddings) + bias."""

    hidden_size: int
    vocab_size: int
    hidden_act: str
    norm_eps: float
    norm_kind: str = "layernorm"
    transform_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    norm_bias: bool = True

    @nn.compact
    def __call__(self, hidden):
        x = dense(self.hidden_size, self.transform_bias, self.dtype, "transform")(hidden)
        x = activation(self.hidden_act)(x)
        x = Norm(self.norm_kind, self.norm_eps, self.norm_bias, self.dtype, name="norm")(x)
        decoder = self.param("decoder", CHECKPOINT_ONLY, (self.vocab_size, self.hidden_size), self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.vocab_size,), self.dtype)
        logits = jnp.einsum("...d,vd->...v", x, decoder, preferred_element_type=jnp.float32)
        return logits + bias.astype(jnp.float32)


class DenseStack(nn.Module):
    """sentence-transformers Dense modules applied in order to pooled embeddings."""

    layers: Sequence[tuple[int, bool, str]]  # (out_features, bias, activation)

    @nn.compact
    def __call__(self, x):
        x = x.astype(jnp.float32)
        for i, (features, use_bias, act) in enumerate(self.layers):
            x = dense(features, use_bias, jnp.float32, f"dense_{i}")(x)
            if act != "identity":
                x = activation(act)(x)
        return x


def checkpoint_names(spec: ModelSpec) -> set[str]:
    """Every tensor name in the checkpoint, from the safetensors headers alone (no data read):
    lets a family pick the head the checkpoint actually carries before its weights load."""
    names: set[str] = set()
    for path in safetensors_files(spec.model_dir):
        with safe_open(str(path), framework="numpy") as handle:
            names.update(handle.keys())
    return names


def pooler_classifier(
    spec: ModelSpec, hidden_size: int, dtype, prefixes: Sequence[str]
) -> tuple[ClassificationHead, Callable[[WeightReader], dict]]:
    """BERT-style classifier on the first token, as TEI builds it for JinaBERT and GTE (and
    transformers' NomicBertForSequenceClassification): tanh(pooler.dense(x)) when the
    checkpoint has the (prefixed) pooler, TEI making it optional, then a root `classifier`."""
    names = checkpoint_names(spec)
    pooled = any(f"{prefix}pooler.dense.weight" in names for prefix in (*prefixes, ""))
    steps: tuple = (("dense", "classifier", None, True),)
    if pooled:
        steps = (("dense", "pooler", hidden_size, True), ("act", "tanh")) + steps

    def load(reader: WeightReader) -> dict:
        params = {"classifier": reader.linear("classifier", prefixed=False)}
        if pooled:
            params["pooler"] = reader.linear("pooler.dense")
        return params

    return ClassificationHead(steps, len(spec.id2label), dtype), load
