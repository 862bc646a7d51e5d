"""Print the float32 max abs error on hidden states, per family, against its reference.

    python tests/models/report_errors.py

Uses the same tiny models and references as the parity tests (transformers' classes, or the
NumPy reference for JinaBERT and the remote-code GTE/Nomic layouts), on a right-padded batch
and on each input alone. Not collected by pytest: the tests assert the bound (< 1e-5); this
reports the measured figures for the README and the issue.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import numpy as np  # noqa: E402
import test_decoders as dec  # noqa: E402
from deberta_models import VARIANTS, make_deberta  # noqa: E402
import test_gte  # noqa: E402
import test_gemma3  # noqa: E402
import test_jina  # noqa: E402
import test_llama  # noqa: E402
import test_nomic  # noqa: E402
import test_pplx  # noqa: E402
import tiny_models as tm  # noqa: E402
from encoder_models import fake_checkpoint, hf_model, random_weights, texts_and_items, torch_outputs  # noqa: E402
from numpy_reference import Weights, gte_new, jina, nomic  # noqa: E402

from tei_jax.engine import EMBED_ALL  # noqa: E402


def _errors(model, items, refs) -> tuple[float, float]:
    """(batched, one by one) max abs error; refs[k] is [len(items[k]), hidden]."""
    batched = model.engine.run_all(EMBED_ALL, items)
    alone = [model.engine.run_all(EMBED_ALL, [item])[0] for item in items]
    worst = lambda outs: max(float(np.abs(o - r).max()) for o, r in zip(outs, refs))  # noqa: E731
    return worst(batched), worst(alone)


def _hf(kind: str, pooling: str, seed: int, **overrides):
    folder = hf_model(kind, **overrides)
    tm.write_pooling(folder, pooling)
    model = tm.load_cached(folder)
    _, items = texts_and_items(model, seed=seed, n=6, max_words=40)
    out, _ = torch_outputs(folder, items)
    ref = out.last_hidden_state.numpy()
    return _errors(model, items, [ref[k, : len(i)] for k, i in enumerate(items)])


def _numpy(folder, config, tensors, forward, seed: int, **kwargs):
    model = tm.load_cached(folder)
    _, items = texts_and_items(model, seed=seed, n=6, max_words=40)
    weights, zero_types = Weights(tensors), kwargs.pop("zero_types", False)
    refs = [forward(weights, config, list(i.input_ids), [0] * len(i) if zero_types else list(i.type_ids), **kwargs)
            for i in items]
    return _errors(model, items, refs)


def _decoder(family: str, tag: str = "", bidirectional: bool = False, **overrides):
    folder = dec.make_decoder(family, tag=tag, **overrides)
    model = tm.load_cached(folder)
    items = [model.tokenizer.encode(t, truncate=True) for t in dec._texts(seed=len(family) + 7)]
    ref, _ = dec.reference(folder, items, bidirectional=bidirectional)
    return _errors(model, items, [ref[k, : len(i)] for k, i in enumerate(items)])


def rows():
    yield "NomicBERT (transformers NomicBertModel)", _hf("nomic_bert", "mean", 31)
    for version in ("v1.5", "v2-moe"):
        config = test_nomic.hub_config(version)
        tensors = random_weights(test_nomic.published_shapes(config), seed=32)
        folder = fake_checkpoint(f"nomic-{version}", config, tensors)
        yield f"NomicBERT {version} layout (NumPy reference)", _numpy(folder, config, tensors, nomic, 33, zero_types=True)
    for code in (test_jina.IMPLEMENTATION, test_jina.QK_POST_NORM):
        post = code == test_jina.QK_POST_NORM
        config = test_jina.jina_config(code)
        tensors = random_weights(test_jina.published_shapes(config, post), seed=1)
        folder = fake_checkpoint(f"jina-{post}", config, tensors)
        yield f"JinaBERT v2 {code.split('/')[1]} (NumPy reference)", _numpy(folder, config, tensors, jina, 3, qk_post_norm=post)
    yield "GTE (transformers GteModel)", _hf("gte", "cls", 21, type_vocab_size=2)
    config = test_gte.new_config()
    tensors = random_weights(test_gte.published_shapes(config), seed=23)
    folder = fake_checkpoint("gte-new", config, tensors, pooling="cls")
    yield "GTE `new` + NTK rotary (NumPy reference)", _numpy(folder, config, tensors, gte_new, 24)
    windowed = dict(num_hidden_layers=3, global_attn_every_n_layers=2, local_attention=8,
                    global_rope_theta=20000.0, local_rope_theta=500.0, norm_bias=True)
    yield "ModernBERT (transformers ModernBertModel, local window 8)", _hf("modernbert", "mean", 41, **windowed)
    yield "MPNet (transformers MPNetModel)", _hf("mpnet", "mean", 51)
    for family in dec.FAMILIES:
        yield f"{family} (transformers, causal)", _decoder(family)
    yield "qwen3 bidirectional (transformers, padding-only mask)", _decoder(
        "qwen3", tag="bidirectional", bidirectional=True, use_bidirectional_attention=True)
    yield "mistral sliding window 5 (transformers)", _decoder("mistral", tag="window", sliding_window=5)
    base, folder = test_pplx.make_pplx()
    model = tm.load_cached(folder)
    items = [model.tokenizer.encode(t, truncate=True) for t in dec._texts(seed=71)]
    ref, _ = dec.reference(base, items, bidirectional=True)
    yield "pplx (transformers Qwen3Model, bidirectional)", _errors(model, items, [ref[k, : len(i)] for k, i in enumerate(items)])
    for bidirectional in (False, True):
        folder = test_gemma3.make_gemma3(f"bidirectional-{bidirectional}", use_bidirectional_attention=bidirectional)
        model = tm.load_cached(folder)
        items = [model.tokenizer.encode(t, truncate=True) for t in test_gemma3._texts(seed=81)]
        ref, _ = test_gemma3.reference(folder, items)
        name = "bidirectional" if bidirectional else "causal"
        yield f"gemma3 {name}, window 8 (transformers Gemma3TextModel)", _errors(
            model, items, [ref[k, : len(i)] for k, i in enumerate(items)])
    for kind, params in test_llama.SCALINGS.items():
        yield f"llama, {kind} rotary (transformers LlamaModel)", _decoder("llama", tag=kind, rope_parameters=params)
    for variant in VARIANTS:
        folder = make_deberta(variant)
        model = tm.load_cached(folder)
        _, items = texts_and_items(model, seed=61, n=6, max_words=40)
        out, _ = torch_outputs(folder, items)
        ref = out.last_hidden_state.numpy()
        yield f"DeBERTa {variant} layout (transformers DebertaV2Model)", _errors(
            model, items, [ref[k, : len(i)] for k, i in enumerate(items)])


def main() -> None:
    print("| Family (reference) | max abs error, padded batch | max abs error, one by one |")
    print("|---|---|---|")
    for name, (batched, alone) in rows():
        print(f"| {name} | {batched:.2e} | {alone:.2e} |", flush=True)


if __name__ == "__main__":
    main()
