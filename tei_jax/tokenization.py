"""Text (or token ids) -> model inputs, with TEI's validation, truncation and prompts.

The tokenizer.json of many models carries fixed padding and truncation settings; we switch
them off and keep three read-only tokenizers (no truncation, truncate right, truncate left) so
the threads that tokenize at once (the server's tokenization workers) never mutate shared state.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence, Union

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import processors

from .errors import EmptyInputError, ModelLoadError, TokenizerError, ValidationError

Input = Union[str, Sequence[int]]
CHARS_PER_TOKEN_LIMIT = 250  # TEI's character guard: max_input_length * 250


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One tokenized queue entry."""

    input_ids: tuple[int, ...]
    type_ids: tuple[int, ...]
    chars: int  # what x-compute-characters counts for this input

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """An input checked and ready to tokenize: the tokenizer to use and its arguments."""

    tokenizer: HFTokenizer
    text: str
    pair: str | None
    special: bool
    chars: int

    @property
    def sequence(self) -> str | tuple[str, str]:
        """What `encode_batch` takes for this input: the text, or (text, pair)."""
        return self.text if self.pair is None else (self.text, self.pair)


def normalize_direction(direction: str) -> str:
    value = str(direction).lower()
    if value not in ("left", "right"):
        raise ValidationError(f"`truncation_direction` must be Left or Right, got {direction!r}")
    return value


class Tokenizer:
    """Encodes singles and pairs for one model with TEI's rules."""

    def __init__(
        self,
        model_dir: Path,
        max_input_length: int,
        prompts: dict[str, str] | None = None,
        default_prompt: str | None = None,
        appended_token: tuple[str, int] | None = None,
    ):
        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(f"{model_dir}: tokenizer.json is required (a fast tokenizer)")
        try:
            self._plain = HFTokenizer.from_file(str(path))
        except Exception as exc:
            raise ModelLoadError(f"{path}: cannot be read by tokenizers ({exc})") from exc
        self._plain.no_padding()
        self._plain.no_truncation()
        _append_token(self._plain, appended_token)
        self._truncating = {}
        for direction in ("right", "left"):
            tok = HFTokenizer.from_file(str(path))
            tok.no_padding()
            _append_token(tok, appended_token)
            tok.enable_truncation(max_input_length, stride=0, strategy="longest_first", direction=direction)
            self._truncating[direction] = tok
        self.max_input_length = max_input_length
        self.prompts = dict(prompts or {})
        self.default_prompt = default_prompt
        self.vocab_size = self._plain.get_vocab_size(with_added_tokens=True)

    # Prompts -----------------------------------------------------------------------------
    def prompt_text(self, prompt_name: str | None) -> str | None:
        """The text to prepend: the named prompt, else the default prompt, else None."""
        if prompt_name is None:
            return self.default_prompt
        # TEI words a request's unknown prompt_name with the option's name too
        # (core/src/tokenization.rs prepare_pre_prompt); kept verbatim, clients match on it.
        if not self.prompts:
            raise ValidationError(f"`default-prompt-name` is set to `{prompt_name}` but no prompts were found "
                                  "in the Sentence Transformers configuration")
        if prompt_name not in self.prompts:
            raise ValidationError(
                f"`default-prompt-name` is set to `{prompt_name}` but it was not found in the "
                f"Sentence Transformers prompts. Available prompts: {rust_list(self.prompts)}"
            )
        return self.prompts[prompt_name]

    # Encoding ----------------------------------------------------------------------------
    def _ids_to_text(self, ids: Sequence[int], skip_special: bool) -> str:
        if len(ids) == 0:
            raise EmptyInputError("`inputs` cannot be empty")
        bad = [i for i in ids if not isinstance(i, int) or isinstance(i, bool) or i < 0]
        if bad:
            raise TokenizerError(f"token id {bad[0]!r} is not a token id")
        # As TEI: the ids are decoded, and decoding drops ids outside the vocabulary.
        return self._plain.decode([i for i in ids if i < self.vocab_size], skip_special_tokens=skip_special)

    def _char_guard(self, text: str, truncate: bool, share: int) -> str:
        limit = self.max_input_length * CHARS_PER_TOKEN_LIMIT
        chars = len(text)
        if chars <= limit:
            return text
        if not truncate:
            raise ValidationError(
                f"`inputs` must have less than {limit} characters. Given: {chars}"
            )
        # TEI cuts at byte `limit` only when that is a character boundary and otherwise leaves
        # the text whole (a long CJK text was then tokenized in full). We cut at the last
        # boundary at or before it, so the work per input is bounded whatever the script.
        return text.encode("utf-8")[: limit // share].decode("utf-8", errors="ignore")

    def encode(
        self,
        inputs: Input,
        *,
        truncate: bool,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
        pair: str | None = None,
        add_special_tokens: bool = True,
    ) -> Encoded:
        """Validate and tokenize one input (or a pair) into a queue entry."""
        job = self._prepare(inputs, truncate, truncation_direction, prompt_name, pair, add_special_tokens)
        try:
            encoding = _encode_releasing_gil(job.tokenizer, job.text, job.pair, job.special)
        except Exception as exc:
            raise TokenizerError(str(exc)) from exc
        return self._finish(encoding, job.chars)

    def encode_many(
        self,
        inputs: Sequence[Input],
        *,
        truncate: bool,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
        pairs: Sequence[str | None] | None = None,
    ) -> list[Encoded]:
        """`encode` of each input (with `pair=pairs[i]` when `pairs` is given: predict's and
        rerank's second texts, None for a single), with one `encode_batch` per tokenizer setting
        instead of one call per input: tokenizers then spreads the texts over its threads (with
        the GIL released), which for a call of 32 short queries takes about a third off
        tokenizing. Raises what `encode` raises for the first input (in order) that fails."""
        if pairs is not None and len(pairs) != len(inputs):
            raise ValueError(f"{len(pairs)} pairs for {len(inputs)} inputs")
        prepared: list[_Prepared | Exception] = []
        for index, item in enumerate(inputs):
            pair = None if pairs is None else pairs[index]
            try:
                prepared.append(self._prepare(item, truncate, truncation_direction, prompt_name, pair, True))
            except Exception as exc:  # noqa: BLE001 - raised in input order below
                prepared.append(exc)
        encodings: list = [None] * len(prepared)
        groups: dict[tuple[int, bool], list[int]] = {}
        for index, job in enumerate(prepared):
            if isinstance(job, _Prepared):
                groups.setdefault((id(job.tokenizer), job.special), []).append(index)
        for members in groups.values():
            first = prepared[members[0]]
            try:
                batch = first.tokenizer.encode_batch([prepared[i].sequence for i in members],
                                                     add_special_tokens=first.special)
            except Exception:  # noqa: BLE001 - one by one, so the failing input is the one named
                batch = [self._encode_or_error(prepared[i]) for i in members]
            for i, encoding in zip(members, batch):
                encodings[i] = encoding
        results = []
        for job, encoding in zip(prepared, encodings):
            if isinstance(job, Exception):
                raise job
            if isinstance(encoding, Exception):
                raise encoding
            results.append(self._finish(encoding, job.chars))
        return results

    @staticmethod
    def _encode_or_error(job: "_Prepared"):
        try:
            return _encode_releasing_gil(job.tokenizer, job.text, job.pair, job.special)
        except Exception as exc:  # noqa: BLE001
            return TokenizerError(str(exc))

    def _prepare(self, inputs: Input, truncate: bool, truncation_direction: str, prompt_name: str | None,
                 pair: str | None, add_special_tokens: bool) -> "_Prepared":
        """TEI's checks before tokenizing, and what to tokenize with which tokenizer."""
        direction = normalize_direction(truncation_direction)
        prompt = self.prompt_text(prompt_name)
        if pair is not None and prompt_name is not None:
            raise ValidationError("`prompt_name` cannot be set with dual inputs")
        if pair is not None:
            prompt = None
        special = add_special_tokens
        if isinstance(inputs, str):
            if inputs == "":
                raise EmptyInputError("`inputs` cannot be empty")
            text, chars = inputs, len(inputs)
        else:
            ids = list(inputs)
            chars = len(ids)
            if prompt is None:
                text = self._ids_to_text(ids, skip_special=False)
                special = False
            else:
                text = self._ids_to_text(ids, skip_special=True)
        if pair is not None and pair == "":
            raise EmptyInputError("`inputs` cannot be empty")
        if prompt:
            text = prompt + text
        share = 2 if pair is not None else 1
        text = self._char_guard(text, truncate, share)
        if pair is not None:
            pair = self._char_guard(pair, truncate, share)
            chars += len(pair)
        tokenizer = self._truncating[direction] if truncate else self._plain
        return _Prepared(tokenizer, text, pair, special, chars)

    def _finish(self, encoding, chars: int) -> Encoded:
        """TEI's checks after tokenizing, and the queue entry."""
        n = len(encoding.ids)
        if n > self.max_input_length:
            raise ValidationError(
                f"`inputs` must have less than {self.max_input_length} "
                f"tokens. Given: {n}"
            )
        if n == 0:
            raise EmptyInputError("`inputs` cannot be empty")
        return Encoded(tuple(encoding.ids), tuple(encoding.type_ids), chars)

    def encode_whole(self, text: str, *, prompt_name: str | None = None) -> tuple[Encoded, int, int]:
        """Tokenize one text whatever its length (chunking splits it afterwards): the entry, and
        how many of its first and last tokens every window repeats: the template's special
        tokens, plus the prompt's tokens when they tokenize as a clean prefix."""
        if not isinstance(text, str):
            raise ValidationError("`inputs` must be a string to be chunked")
        if text == "":
            raise EmptyInputError("`inputs` cannot be empty")
        prompt = self.prompt_text(prompt_name)
        try:
            encoding = self._plain.encode((prompt or "") + text)
            prompt_ids = self._plain.encode(prompt, add_special_tokens=False).ids if prompt else []
        except Exception as exc:
            raise TokenizerError(str(exc)) from exc
        ids, mask = encoding.ids, encoding.special_tokens_mask
        lead = next((i for i, special in enumerate(mask) if not special), len(ids))
        trail = next((i for i, special in enumerate(reversed(mask)) if not special), 0)
        if prompt_ids and ids[lead:lead + len(prompt_ids)] == prompt_ids:
            lead += len(prompt_ids)
        return Encoded(tuple(ids), tuple(encoding.type_ids), len(text)), lead, trail

    # /tokenize and /decode -----------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = True, prompt_name: str | None = None) -> list[dict]:
        """TEI's /tokenize tokens: id, text, special, and byte offsets into (prompt + text)."""
        if text == "":
            raise EmptyInputError("`inputs` cannot be empty")
        prompt = self.prompt_text(prompt_name)
        full = (prompt or "") + text
        full = self._char_guard(full, truncate=False, share=1)
        try:
            encoding = self._plain.encode(full, add_special_tokens=add_special_tokens)
        except Exception as exc:
            raise TokenizerError(str(exc)) from exc
        byte_at = _char_to_byte_offsets(full)
        tokens = []
        for token_id, token, special_mask, (start, stop) in zip(
            encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets
        ):
            is_special = bool(special_mask)
            if is_special:
                tokens.append({"id": token_id, "text": token, "special": True, "start": None, "stop": None})
            else:
                tokens.append({
                    "id": token_id, "text": full[start:stop], "special": False,
                    "start": byte_at[start], "stop": byte_at[stop],
                })
        return tokens

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        if len(ids) == 0:
            raise EmptyInputError("`input_ids` cannot be empty")
        try:
            return self._plain.decode(list(ids), skip_special_tokens=skip_special_tokens)
        except Exception as exc:
            raise TokenizerError(str(exc)) from exc


def _encode_releasing_gil(tokenizer: HFTokenizer, text: str, pair: str | None, special: bool):
    """`tokenizer.encode`, through `encode_batch` of one: the same encoding, but tokenizers
    releases the GIL in `encode_batch` only, and a 60 KB text takes tens of milliseconds, during
    which every other Python thread of the server (HTTP, batching) would otherwise stand still."""
    return tokenizer.encode_batch([text if pair is None else (text, pair)], add_special_tokens=special)[0]


def rust_list(names) -> str:
    """Names as Rust's `{:?}` prints them (TEI's error texts): ["a", "b"]."""
    return "[" + ", ".join(f'"{name}"' for name in names) + "]"


def _append_token(tokenizer: HFTokenizer, token: tuple[str, int] | None) -> None:
    """Add `token` after the single input and after each input of a pair, behind whatever
    post-processing the tokenizer already does (TEI's rule for remote-code Qwen2 models)."""
    if token is None:
        return
    text = token[0]
    template = processors.TemplateProcessing(
        single=f"$A:0 {text}:0", pair=f"$A:0 {text}:0 $B:1 {text}:1", special_tokens=[token]
    )
    existing = tokenizer.post_processor
    if isinstance(existing, processors.TemplateProcessing):  # tokenizers cannot chain two templates
        raise ModelLoadError(f"tokenizer.json: a TemplateProcessing post_processor cannot be followed by {text}")
    tokenizer.post_processor = template if existing is None else processors.Sequence([existing, template])


def _char_to_byte_offsets(text: str) -> list[int]:
    """offsets[i] = byte offset of character i in UTF-8 (with one past the end)."""
    offsets = [0] * (len(text) + 1)
    total = 0
    for i, ch in enumerate(text):
        offsets[i] = total
        total += len(ch.encode("utf-8"))
    offsets[len(text)] = total
    return offsets
