"""TEI's words for malformed and ill-shaped bodies, against texts serde itself produced.

tests/server/data/serde_cases.json: 800 bodies (valid ones, every truncation, values of the
wrong type, random byte edits) for each TEI request type, with the status and text that
serde_json 1.0.87 + serde 1.0.152 + serde_path_to_error 0.1.9 gave when deserializing them
into TEI's request types the way axum's Json does (null for bodies TEI accepts). Two version
differences are written as TEI's newer crates print them: no `.: ` / `?: ` path prefix for an
error at the top level (serde_path_to_error 0.1.10+), and `floating point `1000.0`` (serde's
decimal point for whole floats)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import json_rejection as jr

SHAPES = {"embed": jr.EMBED, "embed_all": jr.EMBED_ALL, "predict": jr.PREDICT, "rerank": jr.RERANK,
          "similarity": jr.SIMILARITY, "openai": jr.OPENAI, "tokenize": jr.TOKENIZE, "decode": jr.DECODE,
          "vertex": jr.VERTEX}
CASES = json.loads((Path(__file__).parent / "data" / "serde_cases.json").read_text())


def test_every_recorded_body_gets_serdes_status_and_text():
    wrong = [(case["route"], case["body"], case["expected"], got) for case in CASES
             if (got := jr.rejection(case["body"].encode(), SHAPES[case["route"]])) != (
                 tuple(case["expected"]) if case["expected"] else None)]
    assert not wrong, wrong[:5]
    assert {case["route"] for case in CASES} == set(SHAPES)
    assert sum(case["expected"] is None for case in CASES) > 50  # accepted bodies are in there too


@pytest.mark.parametrize("shape, body, status, text", [
    (jr.EMBED, b"{nope", 400, "Failed to parse the request body as JSON: key must be a string at line 1 column 2"),
    (jr.EMBED, b'{"inputs": "a",}', 400, "Failed to parse the request body as JSON: trailing comma at line 1 column 16"),
    (jr.EMBED, b'{"inputs": "a"} x', 400,
     "Failed to parse the request body as JSON: trailing characters at line 1 column 17"),
    (jr.EMBED, b'{"nothing": 1}', 422,
     "Failed to deserialize the JSON body into the target type: missing field `inputs` at line 1 column 14"),
    (jr.EMBED, b'{"inputs": "a", "normalize": "yes"}', 422, "Failed to deserialize the JSON body into the target "
     'type: normalize: invalid type: string "yes", expected a boolean at line 1 column 34'),
    (jr.EMBED, b'{"inputs": 5}', 422, "Failed to deserialize the JSON body into the target type: inputs: data did "
     "not match any variant of untagged enum Input at line 1 column 13"),
    (jr.RERANK, b'{"query": "q",\n "texts": ["a", 2]}', 422, "Failed to deserialize the JSON body into the target "
     "type: texts[1]: invalid type: integer `2`, expected a string at line 2 column 17"),
    (jr.EMBED, b'{"inputs": "a", "truncation_direction": "up"}', 422, "Failed to deserialize the JSON body into "
     "the target type: truncation_direction: unknown variant `up`, expected `Left` or `Right` at line 1 column 44"),
])
def test_the_common_mistakes(shape, body, status, text):
    assert jr.rejection(body, shape) == (status, text)


def test_a_body_tei_takes_is_not_refused():
    assert jr.rejection(b'{"inputs": ["a", [1, 2]], "unknown": {"x": [1.5, null]}}', jr.EMBED) is None
    assert jr.rejection(b'{"inputs": [["a"], ["a", "b"]], "truncation_direction": "left"}', jr.PREDICT) is None


def test_a_long_body_is_read_in_one_pass():
    # A 2 MB text whose last field is wrong: the answer names it, the text is not echoed.
    body = b'{"inputs": "' + b"word " * 400_000 + b'", "normalize": 1}'
    status, text = jr.rejection(body, jr.EMBED)
    assert status == 422 and text.endswith("normalize: invalid type: integer `1`, expected a boolean "
                                           f"at line 1 column {len(body) - 1}")
