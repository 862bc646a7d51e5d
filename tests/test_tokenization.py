"""Tokenization: encodings are those of tokenizers' plain `encode`, and the GIL is free while
a long text is tokenized (so the server's other threads keep running)."""

from __future__ import annotations

import threading
import time

import tiny_models as tm

from tei_jax import tokenization


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
