"""Tokenization: encodings are those of tokenizers' plain `encode`, and the GIL is free while
a long text is tokenized (so the server's other threads keep running)."""

from __future__ import annotations

import threading
import time

import pytest
import tiny_models as tm

from tei_jax import errors, tokenization


def test_the_encoding_is_the_plain_encode_one():
    tokenizer = tm.load_cached(tm.make_model("bert", "base")).tokenizer
    texts = ["hello world", "café naïve ünïcode", "word " * 300, " spaced \t out \n", "a [SEP] b"]
    for truncate in (True, False):
        for direction in ("right", "left"):
            hf = tokenizer._truncating[direction] if truncate else tokenizer._plain
            for text in texts:
                for pair in (None, "a second text"):
                    for special in (True, False):
                        plain = hf.encode(text, pair, add_special_tokens=special)
                        ours = tokenization._encode_releasing_gil(hf, text, pair, special)
                        assert (ours.ids, ours.type_ids, ours.offsets) == (plain.ids, plain.type_ids, plain.offsets)


def test_other_threads_run_while_a_long_text_is_tokenized():
    # Before, one 500 kB text held the GIL for its whole tokenization: no other thread ran.
    tokenizer = tm.load_cached(tm.make_model("bert", "base")).tokenizer._plain
    text = "tokenization takes a while " * 20_000
    ticks, stop = [], threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        time.sleep(0.05)
        started = time.perf_counter()
        tokenization._encode_releasing_gil(tokenizer, text, None, True)
        ended = time.perf_counter()
    finally:
        stop.set()
        thread.join(10)
    inside = [t for t in ticks if started < t < ended]
    assert len(inside) >= 3, (len(inside), ended - started)


def test_encode_many_is_encode_of_each_and_raises_the_first_failure_in_order():
    tokenizer = tm.load_cached(tm.make_model("bert", "base")).tokenizer
    inputs = ["hello world", "café naïve ünïcode", "word " * 300, [101, 7592, 102], " spaced \t out \n"]
    for truncate in (True, False):
        for direction in ("right", "left"):
            kwargs = dict(truncate=truncate, truncation_direction=direction)
            if not truncate:  # the 300-word text is over the limit: the one-by-one error, same text
                with pytest.raises(errors.ValidationError) as one:
                    [tokenizer.encode(item, **kwargs) for item in inputs]
                with pytest.raises(errors.ValidationError) as many:
                    tokenizer.encode_many(inputs, **kwargs)
                assert str(many.value) == str(one.value)
                continue
            assert tokenizer.encode_many(inputs, **kwargs) == [tokenizer.encode(item, **kwargs) for item in inputs]
    # An empty input after an over-long one: the over-long one (first in order) is reported.
    with pytest.raises(errors.ValidationError, match="tokens"):
        tokenizer.encode_many(["ok", "word " * 300, ""], truncate=False)
    with pytest.raises(errors.EmptyInputError):
        tokenizer.encode_many(["ok", "", "word " * 300], truncate=False)


def test_encode_many_with_pairs_is_encode_of_each_pair_and_raises_the_first_failure_in_order():
    # predict's [text] / [text, pair] items and rerank's (query, text) pairs go through here.
    tokenizer = tm.load_cached(tm.make_model("bert", "base")).tokenizer
    firsts = ["what is jax?", "café naïve", "word " * 300, "one text alone", "q"]
    failed = []
    pairs = ["JAX is a library", "word " * 300, "a doc", None, "x" * (tokenizer.max_input_length * 300)]
    for truncate in (True, False):
        for direction in ("right", "left"):
            kwargs = dict(truncate=truncate, truncation_direction=direction)
            one_by_one = []
            try:
                for text, pair in zip(firsts, pairs):
                    one_by_one.append(tokenizer.encode(text, pair=pair, **kwargs))
            except errors.TEIError as exc:
                with pytest.raises(type(exc)) as many:
                    tokenizer.encode_many(firsts, pairs=pairs, **kwargs)
                assert str(many.value) == str(exc)
                failed.append(truncate)
                continue
            assert tokenizer.encode_many(firsts, pairs=pairs, **kwargs) == one_by_one
            # the pairs' type ids survive the batch call (a single's are all 0)
            assert {0, 1} <= set(one_by_one[0].type_ids) and set(one_by_one[3].type_ids) == {0}
    assert failed == [False, False], failed  # without truncation the long pair fails, both ways
    # the first failure in input order, whichever check finds it
    with pytest.raises(errors.ValidationError, match="tokens"):
        tokenizer.encode_many(["a", "b", "c"], pairs=["ok", "word " * 300, ""], truncate=False)
    with pytest.raises(errors.EmptyInputError):
        tokenizer.encode_many(["a", "b", "c"], pairs=["ok", "", "word " * 300], truncate=False)
    with pytest.raises(ValueError):
        tokenizer.encode_many(["a", "b"], pairs=["only one"], truncate=True)
