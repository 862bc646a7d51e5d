"""Independent NumPy forward passes for the remote-code families transformers does not ship:
JinaBERT v2 (both code variants), Alibaba GTE `new` (NTK rotary) and NomicBERT's remote-code
layout with v2's mixture of experts.

Written from each architecture's description, reading tensors by their published names; one
sequence at a time, unpadded, in float64, so a match also checks our padding, packing and
batching. Nothing here imports tei_jax.
"""

from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def silu(x):
    return x / (1.0 + np.exp(-x))


ACTIVATIONS = {"gelu": gelu, "relu": lambda x: np.maximum(x, 0.0), "silu": silu}


class Weights:
    """Published tensors (float64) under an optional prefix such as 'bert.'."""

    def __init__(self, tensors: dict, prefix: str = ""):
        self.tensors = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
        self.prefix = prefix

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[self.prefix + name]

    def top(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def linear(self, name: str, x: np.ndarray, bias: bool = True) -> np.ndarray:
        y = x @ self[name + ".weight"].T
        return y + self[name + ".bias"] if bias else y

    def layer_norm(self, name: str, x: np.ndarray, eps: float) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * self[name + ".weight"] + self[name + ".bias"]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention(q, k, v, heads: int, bias=None) -> np.ndarray:
    """Full bidirectional attention of one sequence: q, k, v [L, heads*d] -> [L, heads*d]."""
    length, width = q.shape
    d = width // heads
    split = lambda t: t.reshape(length, heads, d).transpose(1, 0, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(0, 2, 1) / math.sqrt(d)
    if bias is not None:
        scores = scores + bias
    return (softmax(scores) @ split(v)).transpose(1, 0, 2).reshape(length, width)


def alibi_bias(heads: int, length: int) -> np.ndarray:
    """Symmetric ALiBi: -m_h * |i - j|, slopes a geometric sequence from 2^(-8/n) (Press et al.);
    for a head count that is not a power of two, the closest power's slopes then every other
    slope of twice that many heads."""

    def geometric(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    power = 2 ** int(math.floor(math.log2(heads)))
    slopes = geometric(power) + geometric(2 * power)[0::2][: heads - power]
    distance = np.abs(np.arange(length)[:, None] - np.arange(length)[None, :])
    return -np.asarray(slopes)[:, None, None] * distance[None]


def rotate(x: np.ndarray, heads: int, inv_freq: np.ndarray) -> np.ndarray:
    """Rotate-half rotary on the first 2*len(inv_freq) dims of each head, positions 0..L-1."""
    length = x.shape[0]
    x = x.reshape(length, heads, -1)
    rot = 2 * len(inv_freq)
    angles = np.arange(length)[:, None] * inv_freq[None]
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    x1, x2 = x[..., : rot // 2], x[..., rot // 2 : rot]
    rotated = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return np.concatenate([rotated, x[..., rot:]], axis=-1).reshape(length, -1)


def inv_freq(dim: int, theta: float, ntk_factor: float | None = None) -> np.ndarray:
    """Plain rotary frequencies, or GTE's fixed NTK: base theta*factor, all divided by factor^(2/d)."""
    exponents = np.arange(0, dim, 2) / dim
    if ntk_factor is None:
        return 1.0 / theta ** exponents
    return 1.0 / (theta * ntk_factor) ** exponents / ntk_factor ** (2.0 / dim)


def jina(w: Weights, c: dict, ids, types, qk_post_norm: bool) -> np.ndarray:
    """JinaBERT v2: post-norm, ALiBi, GLU MLP. The qk-post-norm code adds LayerNorms on q and k,
    renormalises (attention block + layer input), and puts the value half first in its MLP."""
    eps, heads, width = c["layer_norm_eps"], c["num_attention_heads"], c["intermediate_size"]
    act = ACTIVATIONS[{"geglu": "gelu", "reglu": "relu"}[c["feed_forward_type"]]]
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][types]
    x = w.layer_norm("embeddings.LayerNorm", x, eps)
    bias = alibi_bias(heads, len(ids))
    for i in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = w.linear(p + "attention.self.query", x)
        k = w.linear(p + "attention.self.key", x)
        if qk_post_norm:
            q = w.layer_norm(p + "attention.self.layer_norm_q", q, eps)
            k = w.layer_norm(p + "attention.self.layer_norm_k", k, eps)
        context = attention(q, k, w.linear(p + "attention.self.value", x), heads, bias)
        a = w.layer_norm(p + "attention.output.LayerNorm", w.linear(p + "attention.output.dense", context) + x, eps)
        if qk_post_norm:
            h = w.layer_norm(p + "layer_norm_1", a + x, eps)
            up = w.linear(p + "mlp.up_gated_layer", h, bias=False)
            value, gate = up[:, :width], up[:, width:]
            x = w.layer_norm(p + "layer_norm_2", w.linear(p + "mlp.down_layer", act(gate) * value) + h, eps)
        else:
            up = w.linear(p + "mlp.gated_layers", a, bias=False)
            gate, value = up[:, :width], up[:, width:]
            x = w.layer_norm(p + "mlp.layernorm", w.linear(p + "mlp.wo", act(gate) * value) + a, eps)
    return x


def gte_new(w: Weights, c: dict, ids, types) -> np.ndarray:
    """Alibaba GTE (remote code 'new'): post-norm, NTK-scaled rotary, up_gate_proj = [up | gate]."""
    eps, heads, width, hidden = c["layer_norm_eps"], c["num_attention_heads"], c["intermediate_size"], c["hidden_size"]
    act = ACTIVATIONS[c["hidden_act"]]
    scaling = c.get("rope_scaling")
    freqs = inv_freq(hidden // heads, c["rope_theta"], scaling["factor"] if scaling else None)
    x = w["embeddings.word_embeddings.weight"][ids]
    if c["type_vocab_size"]:
        x = x + w["embeddings.token_type_embeddings.weight"][types]
    x = w.layer_norm("embeddings.LayerNorm", x, eps)
    for i in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        qkv = w.linear(p + "attention.qkv_proj", x)
        q, k, v = qkv[:, :hidden], qkv[:, hidden : 2 * hidden], qkv[:, 2 * hidden :]
        context = attention(rotate(q, heads, freqs), rotate(k, heads, freqs), v, heads)
        a = w.layer_norm(p + "attn_ln", x + w.linear(p + "attention.o_proj", context), eps)
        up_gate = w.linear(p + "mlp.up_gate_proj", a, bias=False)
        up, gate = up_gate[:, :width], up_gate[:, width:]
        x = w.layer_norm(p + "mlp_ln", a + w.linear(p + "mlp.down_proj", act(gate) * up), eps)
    return x


def pooler_classifier(w: Weights, hidden: np.ndarray) -> np.ndarray:
    """BERT-style head: tanh(pooler.dense(first token)) -> classifier (unprefixed)."""
    pooled = np.tanh(w.linear("pooler.dense", hidden[0]))
    return pooled @ w.top("classifier.weight").T + w.top("classifier.bias")


def nomic(w: Weights, c: dict, ids, types) -> np.ndarray:
    """NomicBERT remote code: post-norm, rotary, fused Wqkv; SwiGLU (fc11 value, fc12 gate) or
    GELU fc1/fc2 MLPs; on layers i % moe_every_n_layers == 1 a router over experts whose top-k
    softmax weights (not renormalised) mix expert outputs, plus one shared bias."""
    eps, heads, hidden, width = c["layer_norm_epsilon"], c["n_head"], c["n_embd"], c["n_inner"]
    head_dim = hidden // heads
    freqs = inv_freq(int(head_dim * c["rotary_emb_fraction"]), c["rotary_emb_base"])
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][types]
    x = w.layer_norm("emb_ln", x, eps)
    every = c.get("moe_every_n_layers") or 0
    for i in range(c["n_layer"]):
        p = f"encoder.layers.{i}."
        qkv = w.linear(p + "attn.Wqkv", x, c["qkv_proj_bias"])
        q, k, v = qkv[:, :hidden], qkv[:, hidden : 2 * hidden], qkv[:, 2 * hidden :]
        context = attention(rotate(q, heads, freqs), rotate(k, heads, freqs), v, heads)
        a = w.layer_norm(p + "norm1", x + w.linear(p + "attn.out_proj", context, c["qkv_proj_bias"]), eps)
        if every and i % every == 1:
            probs = softmax(a @ w[p + "mlp.router.layer.weight"].T)
            w1 = w[p + "mlp.experts.mlp.w1"].reshape(c["num_experts"], width, hidden)
            w2 = w[p + "mlp.experts.mlp.w2"].reshape(c["num_experts"], width, hidden)
            m = np.zeros_like(a)
            for t in range(len(ids)):
                for e in np.argsort(-probs[t])[: c["moe_top_k"]]:
                    m[t] += probs[t, e] * (gelu(a[t] @ w1[e].T) @ w2[e])
            m = m + w[p + "mlp.experts.bias"]
        elif c["activation_function"] == "swiglu":
            value = w.linear(p + "mlp.fc11", a, c["mlp_fc1_bias"])
            gate = w.linear(p + "mlp.fc12", a, c["mlp_fc1_bias"])
            m = w.linear(p + "mlp.fc2", value * silu(gate), c["mlp_fc2_bias"])
        else:
            m = w.linear(p + "mlp.fc2", gelu(w.linear(p + "mlp.fc1", a, c["mlp_fc1_bias"])), c["mlp_fc2_bias"])
        x = w.layer_norm(p + "norm2", a + m, eps)
    return x
