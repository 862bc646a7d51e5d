"""Heads on top of an encoder: classifier stacks, the masked-LM head (SPLADE), Dense modules.

Heads are small and differ between families only in their sequence of steps, so a family
describes its head as data (a tuple of steps) rather than as a new class.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ..config import ModelSpec
from . import table
from .layers import CHECKPOINT_ONLY, Activation, Norm, NormKind, activation, dense
from .table import Axis, Tensor

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
    hidden_act: Activation
    norm_eps: float
    norm_kind: NormKind = NormKind.LAYER
    transform_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    norm_bias: bool = True
    output_bias: bool = True  # False: a decoder without bias (ModernBERT decoder_bias=false)

    @nn.compact
    def __call__(self, hidden):
        x = dense(self.hidden_size, self.transform_bias, self.dtype, "transform")(hidden)
        x = activation(self.hidden_act)(x)
        x = Norm(self.norm_kind, self.norm_eps, self.norm_bias, self.dtype, name="norm")(x)
        decoder = self.param("decoder", CHECKPOINT_ONLY, (self.vocab_size, self.hidden_size), self.dtype)
        logits = jnp.einsum("...d,vd->...v", x, decoder, preferred_element_type=jnp.float32)
        if not self.output_bias:
            return logits
        bias = self.param("bias", nn.initializers.zeros, (self.vocab_size,), self.dtype)
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


def pooler_classifier(spec: ModelSpec, hidden_size: int, dtype,
                      prefixes: Sequence[str]) -> tuple[ClassificationHead, list[Tensor]]:
    """BERT-style classifier on the first token, as TEI builds it for JinaBERT and GTE (and
    transformers' NomicBertForSequenceClassification): tanh(pooler.dense(x)) when the
    checkpoint has the (prefixed) pooler, TEI making it optional, then a root `classifier`."""
    names = spec.tensor_names
    pooled = any(f"{prefix}pooler.dense.weight" in names for prefix in (*prefixes, ""))
    steps: tuple = (("dense", "classifier", None, True),)
    entries = table.linear("head/classifier", "/classifier", (Axis.EMBED, Axis.LABELS))
    if pooled:
        steps = (("dense", "pooler", hidden_size, True), ("act", "tanh")) + steps
        entries += table.linear("head/pooler", "pooler.dense", (Axis.EMBED, Axis.EMBED))
    return ClassificationHead(steps, len(spec.id2label), dtype), entries


def masked_lm_entries(transform: str, norm: str, decoder: str, bias: str | None,
                      transform_bias: bool = True, norm_bias: bool = True) -> list[Tensor]:
    """The MaskedLMHead's table: names of its transform, norm, decoder (often "a|b": the
    head's own, else the tied word embeddings) and output bias (None: none in the checkpoint)."""
    entries = (table.linear("head/transform", transform, (Axis.EMBED, Axis.EMBED), transform_bias)
               + table.norm("head/norm", norm, bias=norm_bias)
               + [Tensor("head/decoder", (Axis.VOCAB, Axis.EMBED), (decoder,))])
    if bias is not None:
        entries.append(Tensor("head/bias", (Axis.VOCAB,), (bias,)))
    return entries
