"""The Python API's TEI semantics: inputs, truncation, prompts, ids, dimensions, dtypes, errors."""

import json
import shutil

import numpy as np
import pytest
import tiny_models as tm

import tei_jax
from tei_jax.engine import EMBED_ALL


@pytest.fixture(scope="module")
def folder():
    base = tm.make_model("bert", "base")
    tm.write_pooling(base, "mean")
    return base


@pytest.fixture(scope="module")
def model(folder):
    return tm.load_cached(folder)


@pytest.fixture(scope="module")
def prompt_model(folder, tmp_path_factory):
    dest = tmp_path_factory.mktemp("prompted") / "model"
    shutil.copytree(folder, dest)
    (dest / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"}))
    return tei_jax.load(str(dest), max_batch_tokens=256)


def test_single_and_batch_shapes(model):
    assert model.embed("hello").shape == (1, 32)
    assert model.embed(["hello", "world", "again"]).shape == (3, 32)
    assert np.allclose(np.linalg.norm(model.embed(["a b c", "d"]), axis=1), 1.0, atol=1e-6)


def test_token_id_inputs_equal_text(model):
    ids = list(model.tokenizer.encode("the cat sat", truncate=True).input_ids)
    by_ids = model.embed(ids)  # one id list is ONE input
    by_text = model.embed("the cat sat")
    assert by_ids.shape == (1, 32)
    assert np.abs(by_ids - by_text).max() < 1e-6
    mixed = model.embed(["the cat sat", ids])
    assert np.abs(mixed[0] - mixed[1]).max() < 1e-6


def test_truncation_directions_keep_the_right_end(folder):
    model = tm.load_cached(folder)
    limit = model.max_input_length
    words = " ".join(f"w{i}" for i in range(400))
    right = model.tokenizer.encode(words, truncate=True, truncation_direction="right")
    left = model.tokenizer.encode(words, truncate=True, truncation_direction="Left")
    assert len(right) == len(left) == limit
    assert right.input_ids[0] == 101 and left.input_ids[-1] == 102
    assert right.input_ids[1:5] != left.input_ids[1:5]
    # Left truncation keeps the end of the text: the last word pieces match an untruncated tail.
    tail = model.tokenizer.encode(" ".join(f"w{i}" for i in range(390, 400)), truncate=True)
    assert left.input_ids[-len(tail) + 1 : -1] == tail.input_ids[1:-1]
    with pytest.raises(tei_jax.ValidationError, match=f"must have less than {limit} tokens"):
        model.embed(words, truncate=False)
    emb_l = model.embed(words, truncation_direction="left")
    emb_r = model.embed(words, truncation_direction="right")
    assert not np.allclose(emb_l, emb_r)


def test_character_guard(model):
    text = "x" * (model.max_input_length * 250 + 1)
    with pytest.raises(tei_jax.ValidationError, match="characters"):
        model.embed(text, truncate=False)
    assert model.embed(text, truncate=True).shape == (1, 32)


def test_character_guard_bounds_multibyte_text_too(model):
    limit = model.max_input_length * 250
    for text in ("漢" * (limit + 7), "é" * limit + "漢" * 10, "x" * limit + "😀" * 5):
        cut = model.tokenizer._char_guard(text, truncate=True, share=1)
        assert 0 < len(cut.encode("utf-8")) <= limit and text.startswith(cut)
        pair = model.tokenizer._char_guard(text, truncate=True, share=2)
        assert len(pair.encode("utf-8")) <= limit // 2


def test_out_of_vocabulary_ids_are_dropped_as_tei_decodes_them(model):
    ids = list(model.tokenizer.encode("the cat sat", truncate=True).input_ids)
    with_unknown = [ids[0], 10**9, *ids[1:], model.tokenizer.vocab_size]
    assert np.abs(model.embed(with_unknown) - model.embed(ids)).max() < 1e-6
    with pytest.raises(tei_jax.EmptyInputError):
        model.embed([10**9])


class Fixed:
    """An executor that answers with fixed outputs (it still tokenizes, as executors do)."""

    def __init__(self, outputs):
        self.outputs = outputs

    def run(self, job, call=None):
        assert len(job.encode()) == len(self.outputs)
        return list(self.outputs)


def test_ties_come_out_last_index_first_as_in_tei():
    reranker = tm.load_cached(tm.make_model("bert", "classification", num_labels=1))
    fixed = Fixed([np.array([0.5]), np.array([0.1]), np.array([0.5])])
    ranks = reranker.with_executor(fixed).rerank("q", ["test", "other", "test"], raw_scores=True)
    assert [r["index"] for r in ranks] == [2, 0, 1]
    classifier = tm.load_cached(tm.make_model("bert", "classification", num_labels=3))
    [labels] = classifier.with_executor(Fixed([np.array([1.0, 1.0, 0.0])])).predict([["x"]], raw_scores=True)
    assert [p["label"] for p in labels] == ["LABEL_1", "LABEL_0", "LABEL_2"]


def test_similarity_is_a_cosine_of_unnormalized_vectors():
    from tei_jax.model import cosine_to_first

    scores = cosine_to_first(np.array([[2.0, 0.0], [5.0, 0.0], [0.0, 3.0], [0.0, 0.0]]))
    assert np.allclose(scores, [1.0, 0.0, 0.0])


def test_dimensions_then_normalize(model):
    full = model.embed("matryoshka", normalize=False)
    cut = model.embed("matryoshka", normalize=True, dimensions=8)
    assert cut.shape == (1, 8)
    assert np.allclose(cut, full[:, :8] / np.linalg.norm(full[:, :8]), atol=1e-6)
    with pytest.raises(tei_jax.ValidationError, match="positive"):
        model.embed("x", dimensions=0)
    with pytest.raises(tei_jax.ValidationError, match="smaller than the maximum"):
        model.embed("x", dimensions=33)


def test_prompts(prompt_model, model, folder):
    # As TEI, the config's default_prompt_name ("query") is not applied; an explicit one is.
    assert np.allclose(prompt_model.embed("hello"), model.embed("hello"), atol=1e-6)
    assert prompt_model.tokenizer.default_prompt is None
    defaulted = tei_jax.load(str(prompt_model.spec.model_dir), max_batch_tokens=256, default_prompt_name="query")
    assert defaulted.tokenizer.default_prompt == "query: "
    query = defaulted.embed("hello")
    assert np.allclose(query, model.embed("query: hello"), atol=1e-6)
    passage = prompt_model.embed("hello", prompt_name="passage")
    assert np.allclose(passage, model.embed("passage: hello"), atol=1e-6)
    with pytest.raises(tei_jax.ValidationError, match="`default-prompt-name` is set to `nope`"):
        prompt_model.embed("hello", prompt_name="nope")
    tokens = prompt_model.tokenize("hello", prompt_name="passage")[0]
    assert [t["text"] for t in tokens if not t["special"]] == ["passage", ":", "hello"]


def test_unknown_prompt_name_is_worded_as_tei(prompt_model):
    """A request's unknown `prompt_name` gets TEI's own text, which names the
    `default-prompt-name` option even here (core/src/tokenization.rs prepare_pre_prompt)."""
    with pytest.raises(tei_jax.ValidationError) as refused:
        prompt_model.embed("hello", prompt_name="nope")
    assert str(refused.value) == ("Input validation error: `default-prompt-name` is set to `nope` but it was not "
                                  'found in the Sentence Transformers prompts. Available prompts: ["query", "passage"]')


def test_embed_all_shapes(model):
    out = model.embed_all(["one", "one two three four"])
    assert [o.shape for o in out] == [(3, 32), (6, 32)]


def test_empty_inputs(model):
    with pytest.raises(tei_jax.EmptyInputError):
        model.embed("")
    with pytest.raises(tei_jax.EmptyInputError):
        model.embed([])
    with pytest.raises(tei_jax.EmptyInputError, match="`input_ids` cannot be empty"):
        model.decode([])


def test_wrong_model_kind_errors(model):
    with pytest.raises(tei_jax.BackendError, match="Model is not a classifier model"):
        model.predict("x")
    with pytest.raises(tei_jax.BackendError, match="model is not a re-ranker model"):
        model.rerank("q", ["a"])
    with pytest.raises(tei_jax.BackendError, match="SPLADE pooling"):
        model.embed_sparse("x")


def test_tokenize_byte_offsets_and_decode(model):
    text = "café au lait"
    tokens = model.tokenize(text)[0]
    assert tokens[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    raw = text.encode("utf-8")
    for tok in tokens[1:-1]:
        assert raw[tok["start"] : tok["stop"]].decode("utf-8") == tok["text"]
    assert model.tokenize(text, add_special_tokens=False)[0][0]["special"] is False
    ids = [t["id"] for t in tokens]
    assert model.decode(ids) == ["cafe au lait"]  # MiniLM's tokenizer strips accents
    assert model.decode([ids, ids[:2]], skip_special_tokens=False)[1] == "[CLS] cafe"


def test_predict_and_rerank_semantics():
    classifier = tm.load_cached(tm.make_model("bert", "classification", num_labels=3))
    single = classifier.predict("one text")
    assert len(single) == 3 and single[0]["score"] >= single[-1]["score"]
    assert abs(sum(r["score"] for r in single) - 1.0) < 1e-5  # softmax
    pair = classifier.predict(["first", "second"])  # one pair, not a batch
    assert isinstance(pair[0], dict)
    batch = classifier.predict([["first"], ["first", "second"]])
    assert len(batch) == 2 and batch[1] == pair
    reranker = tm.load_cached(tm.make_model("bert", "classification", num_labels=1))
    texts = tm.random_texts(np.random.default_rng(3), 5, 1, 12)
    ranks = reranker.rerank("what is a cat", texts, return_text=True)
    assert sorted(r["index"] for r in ranks) == list(range(5))
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    assert all(r["text"] == texts[r["index"]] for r in ranks)
    raw = reranker.rerank("what is a cat", texts, raw_scores=True)
    by_index = {r["index"]: r["score"] for r in raw}
    assert all(abs(1 / (1 + np.exp(-by_index[r["index"]])) - r["score"]) < 1e-6 for r in ranks)
    assert "text" not in raw[0]
    with pytest.raises(tei_jax.EmptyInputError, match="`texts` cannot be empty"):
        reranker.rerank("q", [])
    # each text's score is its own (query, text) pair's, whatever the batch tokenization's order
    alone = {i: reranker.predict(["what is a cat", t], raw_scores=True)[0]["score"] for i, t in enumerate(texts)}
    assert all(abs(alone[i] - s) < 1e-5 for i, s in by_index.items())
    # the first bad input in order is the one reported, with encode's text
    long = "word " * 300
    with pytest.raises(tei_jax.EmptyInputError, match="`inputs` cannot be empty"):
        reranker.rerank("q", ["ok", "", long], truncate=False)
    with pytest.raises(tei_jax.ValidationError, match="tokens. Given: "):
        reranker.rerank("q", ["ok", long, ""], truncate=False)
    with pytest.raises(tei_jax.ValidationError, match="tokens. Given: "):
        classifier.predict([["ok"], [long], ["a", ""]], truncate=False)
    assert len(classifier.predict([["ok"], [long], ["a", long]], truncate=True)) == 3


def test_bfloat16_close_to_float32(folder, model):
    texts = tm.random_texts(np.random.default_rng(5), 6, 3, 30)
    bf16 = tei_jax.load(str(folder), dtype="bfloat16", max_batch_tokens=256)
    assert bf16.info["model_dtype"] == "bfloat16"
    a, b = model.embed(texts), bf16.embed(texts)
    assert b.dtype == np.float32
    assert (a * b).sum(1).min() > 0.999  # stated tolerance: cosine > 0.999 in bfloat16


def test_compiles_once_per_shape(model):
    items = [model.tokenizer.encode(t, truncate=True) for t in ["a", "b c", "d e f"]]
    model.engine.run_all(EMBED_ALL, items)
    before = model.compile_count
    for _ in range(3):
        model.engine.run_all(EMBED_ALL, items)
    assert model.compile_count == before


def test_info_fields(model):
    info = model.info
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["model_dtype"] == "float32" and info["max_input_length"] == 128


@pytest.mark.parametrize("head", ["base", "classification", "masked_lm"])
def test_packed_and_padded_batches_agree(head):
    """Several sequences per row (packing) must give what one sequence per row gives."""
    folder = tm.make_model("roberta", head, num_labels=2)
    pooling = {"base": "cls", "classification": None, "masked_lm": "splade"}[head]
    packed = tm.load_cached(folder, pooling=pooling)
    padded = tm.load_cached(folder, pooling=pooling, packing=False)
    texts = tm.random_texts(np.random.default_rng(21), 12, 1, 25)
    plan = packed.engine.policy.plan([len(packed.tokenizer.encode(t, truncate=True)) for t in texts])
    assert max(len(set(p.row for p in b.placements)) < len(b.placements) for b in plan)  # really packed
    if head == "classification":
        a = packed.predict([[t] for t in texts], raw_scores=True)
        b = padded.predict([[t] for t in texts], raw_scores=True)
        assert np.allclose([[r["score"] for r in x] for x in a], [[r["score"] for r in x] for x in b], atol=1e-5)
        return
    assert np.abs(packed.embed(texts, normalize=False) - padded.embed(texts, normalize=False)).max() < 1e-5
    if head == "base":
        for x, y in zip(packed.embed_all(texts), padded.embed_all(texts)):
            assert np.abs(x - y).max() < 1e-5
