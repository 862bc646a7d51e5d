"""Mistral, Qwen2, Qwen3 decoders against transformers at float32 on tiny random models.

Tolerances (float32): hidden states and pooled last-token vectors max abs error < 1e-5 against
transformers' *Model (right-padded batch and each input alone), classifier logits < 1e-5
against *ForSequenceClassification. The bidirectional variants (Qwen3
use_bidirectional_attention, the remote-code Qwen2 of gte-Qwen2) are compared with the same
transformers classes given a padding-only attention mask.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models as tm

import tei_jax
from tei_jax.config import load_spec
from tei_jax.engine import EMBED_ALL, PREDICT
from tei_jax.errors import ModelLoadError, ValidationError
from tei_jax.models import decoder
from tei_jax.tokenization import Tokenizer

FAMILIES = ["mistral", "qwen2", "qwen3"]
TOL = 1e-5
QUERY_PROMPT = "Instruct: find the passage\nQuery: "
_CLASSES = {"mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama"}
# Per family: a rotary base of its own, and Qwen3 with head_dim != hidden/heads and biases.
_FAMILY_CONFIG = {
    "mistral": dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    "qwen2": dict(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    "qwen3": dict(rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, head_dim=16,
                  attention_bias=True),
    # Llama (test_llama.py): biases on q/k/v/o and the MLP, head_dim != hidden/heads.
    "llama": dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, head_dim=16,
                  attention_bias=True, mlp_bias=True),
}
_LABELS = {1: ["score"], 3: ["neg", "neu", "pos"]}


def make_decoder(family: str, head: str = "base", num_labels: int = 3, tag: str = "", **overrides):
    """A tiny random `family` model (head base | classification) saved with MiniLM's tokenizer,
    last-token pooling and an instruction prompt; cached per session like tiny_models."""
    folder = tm.ROOT / f"decoder-{family}-{head}-{num_labels}-{tag}"
    def build(into) -> None:
        import torch
        import transformers

        torch.manual_seed(len(family) + num_labels)
        kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=37, vocab_size=30522, max_position_embeddings=128, pad_token_id=0,
                      rms_norm_eps=1e-6, **_FAMILY_CONFIG[family])
        kwargs.update(overrides)
        if head == "classification":
            kwargs["id2label"] = dict(enumerate(_LABELS[num_labels]))
            kwargs["label2id"] = {v: k for k, v in kwargs["id2label"].items()}
        config = getattr(transformers, _CLASSES[family] + "Config")(**kwargs)
        suffix = "Model" if head == "base" else "ForSequenceClassification"
        model = getattr(transformers, _CLASSES[family] + suffix)(config).eval()
        with torch.no_grad():  # norms start at one and biases at zero: make them matter
            for name, param in model.named_parameters():
                if "norm" in name or name.endswith("bias"):
                    param.add_(torch.randn_like(param) * 0.1)
        into.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(into, safe_serialization=True)
        shutil.copy(tm.minilm_dir() / "tokenizer.json", into / "tokenizer.json")
        tm.write_pooling(into, "last_token")
        (into / "config_sentence_transformers.json").write_text(
            json.dumps({"prompts": {"query": QUERY_PROMPT, "document": ""}, "default_prompt_name": None}))

    return tm.build_once(folder, build)


def reference(folder, items, head="base", bidirectional=False, model_class=None):
    """transformers outputs for a right-padded batch: (last_hidden_state or logits, mask)."""
    import torch
    import transformers

    config = json.loads((folder / "config.json").read_text())
    family = _CLASSES[config["model_type"]]
    cls = model_class or getattr(transformers, family + ("Model" if head == "base" else "ForSequenceClassification"))
    model = cls.from_pretrained(folder, attn_implementation="eager").eval()
    length = max(len(i) for i in items)
    ids = torch.tensor([list(i.input_ids) + [0] * (length - len(i)) for i in items])
    mask = torch.tensor([[1] * len(i) + [0] * (length - len(i)) for i in items])
    attention_mask = mask
    if bidirectional:  # padding-only additive mask, given per layer type so no causal mask is added
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        attention_mask = {"full_attention": additive.expand(-1, 1, length, -1)}
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=attention_mask)
    values = out.last_hidden_state if head == "base" else out.logits
    return values.numpy(), mask.numpy()


def _texts(seed: int, n: int = 6) -> list[str]:
    return tm.random_texts(np.random.default_rng(seed), n, 1, 30)


def _last_tokens(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return hidden[np.arange(len(mask)), mask.sum(1) - 1]


def _check_embeddings(model, folder, texts, bidirectional=False, model_class=None) -> None:
    """Token states and last-token embeddings: padded batch, each input alone, batch vs single."""
    items = [model.tokenizer.encode(t, truncate=True) for t in texts]
    ref, mask = reference(folder, items, bidirectional=bidirectional, model_class=model_class)
    ours = model.engine.run_all(EMBED_ALL, items)
    for k, hidden in enumerate(ours):
        assert hidden.shape == (len(items[k]), ref.shape[-1])
        assert np.abs(hidden - ref[k, : len(items[k])]).max() < TOL
    pooled = model.embed(texts, normalize=False)
    assert np.abs(pooled - _last_tokens(ref, mask)).max() < TOL
    alone_ref, _ = reference(folder, items[:1], bidirectional=bidirectional, model_class=model_class)
    assert np.abs(model.embed(texts[0], normalize=False)[0] - alone_ref[0, -1]).max() < TOL
    singles = np.concatenate([model.embed(t, normalize=False) for t in texts[1:4]])
    assert np.abs(singles - pooled[1:4]).max() < TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_causal_decoders_match_transformers(family):
    folder = make_decoder(family)
    model = tm.load_cached(folder)
    assert model.spec.pooling == "last_token" and model.embedding_dim == 32
    _check_embeddings(model, folder, _texts(seed=len(family)))


def test_qwen3_bidirectional_attention():
    folder = make_decoder("qwen3", tag="bidirectional", use_bidirectional_attention=True)
    model = tm.load_cached(folder)
    assert not model.engine.arch.config.causal
    _check_embeddings(model, folder, _texts(seed=5), bidirectional=True)


def test_remote_code_qwen2_is_bidirectional_and_ends_with_endoftext():
    """gte-Qwen2 / stella: auto_map.AutoModel = modeling_qwen.Qwen2Model. TEI appends
    <|endoftext|> (151643) to single and pair inputs and runs the stack bidirectionally."""
    import transformers

    folder = make_decoder("qwen2", tag="remote", vocab_size=151646)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_qwen.Qwen2Model"}
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer = json.loads((folder / "tokenizer.json").read_text())  # Qwen2's byte-level post-processor
    tokenizer["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                                   "use_regex": False}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    model = tm.load_cached(folder)
    single = model.tokenizer.encode("the cat sat", truncate=True).input_ids
    plain = Tokenizer(folder, 64).encode("the cat sat", truncate=True).input_ids
    assert single == plain + (151643,)
    pair = model.tokenizer.encode("the cat", pair="sat", truncate=True).input_ids
    assert pair.count(151643) == 2 and pair[-1] == 151643
    _check_embeddings(model, folder, _texts(seed=9), bidirectional=True, model_class=transformers.Qwen2Model)


@pytest.mark.parametrize("family,num_labels", [("mistral", 3), ("qwen2", 1), ("qwen3", 3)])
def test_sequence_classification_scores_the_last_token(family, num_labels):
    folder = make_decoder(family, "classification", num_labels)
    model = tm.load_cached(folder)
    assert model.kind == ("reranker" if num_labels == 1 else "classifier")
    texts = _texts(seed=num_labels + 20)
    items = [model.tokenizer.encode(t, truncate=True) for t in texts]
    ref, _ = reference(folder, items, head="classification")
    logits = np.stack(model.engine.run_all(PREDICT, items))
    assert np.abs(logits - ref).max() < TOL
    ranked = model.predict([[t] for t in texts[:2]], raw_scores=True)
    for k, scores in enumerate(ranked):
        by_label = {r["label"]: r["score"] for r in scores}
        assert np.allclose([by_label[name] for name in _LABELS[num_labels]], ref[k], atol=TOL)


def test_instruction_prompt_from_sentence_transformers_config():
    model = tm.load_cached(make_decoder("qwen3"))
    assert model.spec.prompts["query"] == QUERY_PROMPT
    text = "what is a decoder embedder?"
    prompted = model.embed(text, prompt_name="query", normalize=False)
    assert np.abs(prompted - model.embed(QUERY_PROMPT + text, normalize=False)).max() < 1e-6
    assert np.abs(prompted - model.embed(text, normalize=False)).max() > 1e-3
    ids = model.tokenizer.encode(text, truncate=True, prompt_name="query").input_ids
    assert ids == model.tokenizer.encode(QUERY_PROMPT + text, truncate=True).input_ids


def test_sliding_window_matches_transformers():
    """Mistral with a window shorter than the inputs: transformers keeps keys with
    query - key < window on every layer."""
    folder = make_decoder("mistral", tag="window", sliding_window=5)
    model = tm.load_cached(folder)
    cfg = model.engine.arch.config
    assert cfg.local_layers == (0, 1) and cfg.local_window == 4
    texts = [t for t in tm.random_texts(np.random.default_rng(3), 8, 8, 30)]
    _check_embeddings(model, folder, texts)


def test_voyage_style_projection_with_model_prefix():
    """Qwen3 + num_labels + a root `linear.weight` (voyage-4-nano): every token is projected,
    the checkpoint's stack sits under `model.`, attention is bidirectional."""
    import torch
    from safetensors.torch import load_file, save_file

    base = make_decoder("qwen3", tag="bidirectional", use_bidirectional_attention=True)
    folder = tm.ROOT / "decoder-qwen3-voyage"
    def build(into) -> None:
        shutil.copytree(base, into, dirs_exist_ok=True)
        weights = {f"model.{k}": v for k, v in load_file(into / "model.safetensors").items()}
        weights["linear.weight"] = torch.randn(48, 32, generator=torch.Generator().manual_seed(1))
        save_file(weights, into / "model.safetensors")
        config = json.loads((into / "config.json").read_text())
        (into / "config.json").write_text(json.dumps({**config, "num_labels": 48}))
    tm.build_once(folder, build)
    model = tm.load_cached(folder)
    assert model.embedding_dim == 48
    texts = _texts(seed=13)
    items = [model.tokenizer.encode(t, truncate=True) for t in texts]
    ref, mask = reference(base, items, bidirectional=True)
    projection = load_file(folder / "model.safetensors")["linear.weight"].numpy()
    projected = ref @ projection.T
    ours = model.engine.run_all(EMBED_ALL, items)
    assert all(np.abs(h - projected[k, : len(items[k])]).max() < TOL for k, h in enumerate(ours))
    assert np.abs(model.embed(texts, normalize=False) - _last_tokens(projected, mask)).max() < TOL
    assert model.embed(texts[0], dimensions=40).shape == (1, 40)
    with pytest.raises(ValidationError):
        model.embed(texts[0], dimensions=49)


@pytest.mark.parametrize("change,field", [
    ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, "rope_scaling"),
    ({"rope_parameters": {"rope_type": "proportional", "rope_theta": 1e6, "factor": 4.0}}, "rope_parameters.rope_type"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e6, "factor": 4.0}},
     "rope_parameters.original_max_position_embeddings"),
    ({"hidden_act": "relu2"}, "hidden_act"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ({"use_bidirectional_attention": True, "use_sliding_window": True, "sliding_window": 4,
      "layer_types": ["sliding_attention"] * 2}, "sliding_window"),
])
def test_unsupported_configs_are_refused_by_field(change, field):
    spec = load_spec(make_decoder("qwen3"))
    spec = dataclasses.replace(spec, config={**spec.config, **change})
    with pytest.raises(ModelLoadError, match=field.replace(".", r"\.")):
        decoder.build(spec, jnp.float32, "xla")


def test_rope_theta_from_either_field_and_qwen_sliding_layers():
    assert decoder.rope_theta({"rope_theta": 1e6, "rope_scaling": None}) == 1e6
    assert decoder.rope_theta({"rope_parameters": {"rope_type": "default", "rope_theta": 5e5}}) == 5e5
    spec = load_spec(make_decoder("qwen2"))
    qwen2 = decoder.FAMILIES["qwen2"]
    windowed = {**spec.config, "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1,
                "layer_types": None}
    assert decoder.sliding_layers(dataclasses.replace(spec, config=windowed), qwen2, 2) == ((1,), 8)
    unused = {**windowed, "use_sliding_window": False}
    assert decoder.sliding_layers(dataclasses.replace(spec, config=unused), qwen2, 2) == ((), 0)


def test_bfloat16_checkpoint_loads_as_bfloat16():
    import torch
    from safetensors.torch import load_file, save_file

    base = make_decoder("qwen3")
    folder = tm.ROOT / "decoder-qwen3-bf16"
    def build(into) -> None:
        shutil.copytree(base, into, dirs_exist_ok=True)
        weights = {k: v.to(torch.bfloat16) for k, v in load_file(into / "model.safetensors").items()}
        save_file(weights, into / "model.safetensors")
    tm.build_once(folder, build)
    model = tei_jax.load(str(folder), dtype="bfloat16", max_batch_tokens=64)
    leaves = jax.tree_util.tree_leaves(model.engine.params["encoder"])
    assert leaves and all(leaf.dtype == jnp.bfloat16 for leaf in leaves)
    reference32 = tm.load_cached(base).embed("the quick brown fox")
    cosine = float(model.embed("the quick brown fox")[0] @ reference32[0])
    assert cosine > 0.99


# Peak RSS (VmHWM) after loading minus the resident size just before it.
_RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    import jax, jax.numpy as jnp
    from tei_jax.config import load_spec
    from tei_jax.models import build
    from tei_jax.weights import WeightReader, safetensors_files, to_device
    dtype = getattr(jnp, sys.argv[2])
    spec = load_spec(sys.argv[1])
    arch = build(spec, dtype, "xla")
    jax.block_until_ready(jnp.ones(8, dtype).T)
    before = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
    params = to_device(arch.load_params(WeightReader(safetensors_files(spec.model_dir), dtype, arch.checkpoint_prefixes)))
    jax.block_until_ready(params)
    # VmHWM belongs to this process's own memory map; ru_maxrss would carry the (large) peak
    # of the pytest process that forked us.
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(peak * 1024 - before)
""")


def test_bfloat16_load_peak_memory_stays_near_checkpoint_size(tmp_path):
    """A ~200 MB bf16 Mistral-shaped checkpoint: loading it in bfloat16 must not hold a float32
    copy. Peak RSS counts the checkpoint's mapped pages (read once) plus the parameters, so
    it grows by about 2x the file; a float32 copy of the weights would add 2x more."""
    import torch
    from safetensors.torch import save_file

    hidden, inter, layers, vocab, kv = 1024, 2816, 8, 32000, 256
    shapes = {"embed_tokens.weight": (vocab, hidden), "norm.weight": (hidden,)}
    for i in range(layers):
        p = f"layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (kv, hidden),
                       p + "self_attn.v_proj.weight": (kv, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
                       p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
                       p + "mlp.down_proj.weight": (hidden, inter), p + "input_layernorm.weight": (hidden,),
                       p + "post_attention_layernorm.weight": (hidden,)})
    generator = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(s, generator=generator, dtype=torch.bfloat16) for k, s in shapes.items()},
              tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "mistral", "architectures": ["MistralModel"], "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 8,
        "num_key_value_heads": 2, "vocab_size": vocab, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "sliding_window": None}))
    tm.write_pooling(tmp_path, "last_token")
    size = (tmp_path / "model.safetensors").stat().st_size
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(tmp_path), "bfloat16"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    growth = int(out.stdout.strip().splitlines()[-1])
    assert growth < 2.6 * size, f"peak RSS grew {growth / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB checkpoint"
