"""The functional face (tei_jax/functional.py): params, batch, apply against embed/predict.

Tolerance (float32): max abs error 1e-5 between `apply` (jitted, padded or packed batch) and
`embed`/`embed_all`/`predict` on the same inputs, for every family's tiny model.
"""

import families
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models as tm

from tei_jax.errors import ValidationError
from tei_jax.functional import Batch

TOL = 1e-5
TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog again and again", "café", "a b c d e"]


@pytest.mark.parametrize("name", sorted(families.EMBEDDERS))
def test_apply_equals_embed_for_every_family(name):
    model = families.load(name)
    expected = model.embed(TEXTS)
    run = jax.jit(lambda params, batch: model.apply(params, batch, normalize=True))
    for packed in (False, True):
        got = run(model.params, model.batch(TEXTS, packed=packed))
        assert isinstance(got, jax.Array) and got.shape == expected.shape
        assert np.abs(np.asarray(got) - expected).max() < TOL, packed
    raw = model.apply(model.params, model.batch(TEXTS))
    assert np.abs(np.asarray(raw) - model.embed(TEXTS, normalize=False)).max() < TOL


def test_apply_embed_all_is_the_padded_token_states():
    model = families.load("bert")
    batch = model.batch(TEXTS)
    states = model.apply(model.params, batch, "embed_all")
    assert states.shape[:2] == batch.input_ids.shape
    for i, expected in enumerate(model.embed_all(TEXTS)):
        assert batch.length[i] == len(expected)
        assert np.abs(np.asarray(states[i, : len(expected)]) - expected).max() < TOL


def test_apply_predict_gives_the_logits_of_predict():
    model = tm.load_cached(families.CLASSIFIER())
    pairs = [["what is jax?", "a library"], ["one text"]]
    logits = np.asarray(jax.jit(lambda p, b: model.apply(p, b, "predict"))(model.params, model.batch(pairs)))
    for row, ranked in zip(logits, model.predict(pairs, raw_scores=True)):
        by_label = {r["label"]: r["score"] for r in ranked}
        assert np.abs(row - [by_label[f"LABEL_{i}"] for i in range(len(row))]).max() < TOL
    with pytest.raises(ValueError, match="not available"):
        model.apply(model.params, model.batch(["x"]), "embed_all")


def test_splade_apply_equals_embed():
    model = tm.load_cached(families.SPLADE(), pooling="splade")
    got = model.apply(model.params, model.batch(TEXTS[:2]))
    assert np.abs(np.asarray(got) - model.embed(TEXTS[:2], normalize=False)).max() < TOL


def test_batch_follows_embed_truncation_and_prompts():
    model = families.load("bert")
    long = " ".join(["word"] * 400)
    batch = model.batch([long, "short"])
    assert batch.length[0] == model.max_input_length and isinstance(batch, Batch)
    assert batch.input_ids.dtype == np.int32 and batch.input_ids.shape[1] % 16 == 0
    ids = model.tokenizer.encode("short", truncate=True).input_ids
    assert list(batch.input_ids[1, : batch.length[1]]) == list(ids)
    assert np.abs(np.asarray(model.apply(model.params, batch, normalize=True)) - model.embed([long, "short"])).max() < TOL


def test_grad_is_finite_and_matches_a_finite_difference():
    model = families.load("bert")
    batch = model.batch(TEXTS)
    params = jax.tree.map(lambda a: a.astype(jnp.float32), model.params)

    def loss(p):
        vectors = model.apply(p, batch, normalize=True)
        return jnp.sum((vectors @ vectors.T) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.isfinite(g).all()) for g in leaves) and any(float(jnp.abs(g).max()) > 0 for g in leaves)
    keys = iter(jax.random.split(jax.random.PRNGKey(0), len(leaves)))
    direction = jax.tree.map(lambda a: jax.random.normal(next(keys), a.shape, a.dtype), params)
    analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(leaves, jax.tree.leaves(direction)))
    eps = 1e-3
    shifted = lambda s: loss(jax.tree.map(lambda a, d: a + s * eps * d, params, direction))  # noqa: E731
    numeric = (float(shifted(1.0)) - float(shifted(-1.0))) / (2 * eps)
    assert abs(analytic - numeric) < 1e-2 * max(1.0, abs(numeric)), (analytic, numeric)


def test_vmap_over_parameter_variants():
    model = families.load("bert")
    batch = model.batch(TEXTS[:2])
    scales = jnp.array([1.0, 0.5])
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), model.params)

    def with_scale(params, scale):
        return model.apply(jax.tree.map(lambda a: a * scale, params), batch)

    out = jax.vmap(with_scale)(stacked, scales)
    for k in range(2):
        one = model.apply(jax.tree.map(lambda a: a * scales[k], model.params), batch)
        assert np.abs(np.asarray(out[k]) - np.asarray(one)).max() < TOL


def test_embed_output_jax():
    model = families.load("bert")
    on_device = model.embed(TEXTS, output="jax")
    assert isinstance(on_device, jax.Array)
    assert np.array_equal(np.asarray(on_device), model.embed(TEXTS))
    with pytest.raises(ValidationError, match="output"):
        model.embed("x", output="torch")


def test_params_carry_logical_axis_names():
    model = families.load("bert")
    axes = model.param_axes
    shapes = jax.tree.map(lambda a: a.ndim, {"encoder": model.params["encoder"]})
    names = jax.tree.map(len, {"encoder": axes["encoder"]}, is_leaf=lambda x: isinstance(x, tuple))
    assert shapes == names
