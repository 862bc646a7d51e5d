"""TEI's texts for a body that is not valid JSON or not of the route's shape.

TEI's handlers take `axum::Json<T>`: serde_json reads the body into T's serde types, with
serde_path_to_error tracking where, and axum answers 400 "Failed to parse the request body as
JSON: ..." for a syntax error or 422 "Failed to deserialize the JSON body into the target
type: ..." for a value of the wrong shape, then serde's own words, the field path and serde_json's
"at line L column C". pydantic validates our bodies (schemas.py); only when it refuses one does
this module read the body again, the way serde_json would (one pass, stopping at the first
problem, its positions and its wording), to say what TEI would say. The shapes below are TEI's
request types (router/src/http/types.rs); `tests/server/data/serde_cases.json` holds texts
produced by serde_json 1.0.87 / serde 1.0.152 / serde_path_to_error 0.1.9 to check against (the
path prefix written as 0.1.10 and later do: none when it is only the top level).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Union

import orjson


class Category(enum.Enum):
    SYNTAX = 400
    DATA = 422


SYNTAX_PREFIX = "Failed to parse the request body as JSON: "
DATA_PREFIX = "Failed to deserialize the JSON body into the target type: "


# The shapes ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Prim:
    kind: str  # bool, string, usize, u32
    expecting: str


@dataclasses.dataclass(frozen=True)
class Opt:
    inner: "Shape"


@dataclasses.dataclass(frozen=True)
class Seq:
    item: "Shape"


@dataclasses.dataclass(frozen=True)
class UnitEnum:
    variants: tuple[str, ...]  # the names an error lists
    accepted: frozenset[str]  # with the aliases


@dataclasses.dataclass(frozen=True)
class Untagged:
    name: str
    variants: tuple["Shape", ...]


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    shape: "Shape"
    default: bool = False  # #[serde(default)]: a missing field (or array element) is fine


@dataclasses.dataclass(frozen=True)
class Struct:
    name: str
    fields: tuple[Field, ...]


class AnyValue:
    """serde_json::Value: any JSON."""


class PredictInput:
    """TEI's hand-written PredictInput: a text, a pair, or a batch of [text] / [text, pair]."""

    expecting = ("a string, a pair of strings [string, string] or a batch of mixed strings and pairs "
                 "[[string], [string, string], ...]")


Shape = Union[Prim, Opt, Seq, UnitEnum, Untagged, Struct, AnyValue, PredictInput]

BOOL = Prim("bool", "a boolean")
STRING = Prim("string", "a string")
USIZE = Prim("usize", "usize")
U32 = Prim("u32", "u32")
DIRECTION = UnitEnum(("Left", "Right"), frozenset({"Left", "left", "Right", "right"}))
INPUT_TYPE = Untagged("InputType", (STRING, Seq(U32)))
INPUT = Untagged("Input", (INPUT_TYPE, Seq(INPUT_TYPE)))
_TRUNCATE = (Field("truncate", Opt(BOOL), True), Field("truncation_direction", DIRECTION, True))

EMBED = Struct("EmbedRequest", (Field("inputs", INPUT), *_TRUNCATE, Field("prompt_name", Opt(STRING)),
                                Field("normalize", BOOL, True), Field("dimensions", Opt(USIZE))))
EMBED_ALL = Struct("EmbedAllRequest", (Field("inputs", INPUT), *_TRUNCATE, Field("prompt_name", Opt(STRING))))
EMBED_SPARSE = Struct("EmbedSparseRequest", EMBED_ALL.fields)
PREDICT = Struct("PredictRequest", (Field("inputs", PredictInput()), *_TRUNCATE, Field("raw_scores", BOOL, True)))
RERANK = Struct("RerankRequest", (Field("query", STRING), Field("texts", Seq(STRING)), *_TRUNCATE,
                                  Field("raw_scores", BOOL, True), Field("return_text", BOOL, True)))
SIMILARITY = Struct("SimilarityRequest", (
    Field("inputs", Struct("SimilarityInput", (Field("source_sentence", STRING), Field("sentences", Seq(STRING))))),
    Field("parameters", Opt(Struct("SimilarityParameters", (*_TRUNCATE, Field("prompt_name", Opt(STRING)))))),
))
OPENAI = Struct("OpenAICompatRequest", (
    Field("input", INPUT), Field("model", Opt(STRING)), Field("user", Opt(STRING)),
    Field("encoding_format", UnitEnum(("float", "base64"), frozenset({"float", "base64"})), True),
    Field("dimensions", Opt(USIZE))))
TOKENIZE = Struct("TokenizeRequest", (Field("inputs", Untagged("TokenizeInput", (STRING, Seq(STRING)))),
                                      Field("add_special_tokens", BOOL, True), Field("prompt_name", Opt(STRING))))
DECODE = Struct("DecodeRequest", (Field("ids", Untagged("InputIds", (Seq(U32), Seq(Seq(U32))))),
                                  Field("skip_special_tokens", BOOL, True)))
VERTEX = Struct("VertexRequest", (Field("instances", Seq(AnyValue())),))


# Errors --------------------------------------------------------------------------------------
class Rejection(Exception):
    """What serde_json would raise: its message, the path, where (None: not placed yet)."""

    def __init__(self, message: str, category: Category, path: tuple, at: tuple[int, int] | None = None):
        super().__init__(message)
        self.message, self.category, self.path, self.at = message, category, path, at

    def text(self) -> str:
        where = _path_text(self.path)
        line, column = self.at or (0, 0)
        body = f"{where}: {self.message}" if where else self.message
        prefix = SYNTAX_PREFIX if self.category is Category.SYNTAX else DATA_PREFIX
        return f"{prefix}{body} at line {line} column {column}"


UNKNOWN = object()  # serde_path_to_error's `?`


def _path_text(path: tuple) -> str:
    if all(segment is UNKNOWN for segment in path):
        return ""
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        else:
            out += ("." if out else "") + ("?" if segment is UNKNOWN else segment)
    return out


class _Custom(Exception):
    """A serde error without a position yet (serde_json places it when its call returns)."""

    def __init__(self, message: str, path: tuple):
        super().__init__(message)
        self.message, self.path = message, path


class _Untagged(_Custom):
    """An untagged enum's refusal: raised after its value was read, outside any serde_json
    call, so the enclosing object or array places it (after reading its own end)."""


def _rust_str(text: str) -> str:
    """Rust's {:?} of a str."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif code < 0x20 or code == 0x7F:
            out.append("\\u{%x}" % code)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _rust_float(value: float) -> str:
    """serde's `floating point` text: Rust's shortest Display, with a decimal point."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(value)
    if "e" in text or "E" in text:
        mantissa, exponent = text.lower().split("e")
        negative = mantissa.startswith("-")
        digits = mantissa.lstrip("-").replace(".", "")
        point = len(mantissa.lstrip("-").split(".")[0]) + int(exponent)
        if point <= 0:
            text = "0." + "0" * (-point) + digits
        elif point >= len(digits):
            text = digits + "0" * (point - len(digits))
        else:
            text = digits[:point] + "." + digits[point:]
        text = ("-" if negative else "") + text
    if text.endswith(".0") and "." in text[:-2]:
        text = text[:-2]
    return text if "." in text else text + ".0"


@dataclasses.dataclass
class _Number:
    kind: str  # u64, i64, f64
    value: Any

    def unexpected(self) -> str:
        if self.kind == "f64":
            return f"floating point `{_rust_float(self.value)}`"
        return f"integer `{self.value}`"


# Content: what an untagged enum buffers before trying its variants.
_SEQ, _MAP = "seq", "map"


# The reader ------------------------------------------------------------------------------------
class _Reader:
    """serde_json's Deserializer over a byte slice, as far as these shapes need it."""

    WHITESPACE = b" \n\t\r"

    def __init__(self, data: bytes):
        self.s = data
        self.i = 0
        self.depth = 0

    # positions
    def _position(self, index: int) -> tuple[int, int]:
        start = self.s.rfind(b"\n", 0, index) + 1
        return self.s.count(b"\n", 0, start) + 1, index - start

    def error(self, message: str, path: tuple) -> Rejection:  # at the current index
        return Rejection(message, Category.SYNTAX, path, self._position(self.i))

    def peek_error(self, message: str, path: tuple) -> Rejection:  # at the next byte
        return Rejection(message, Category.SYNTAX, path, self._position(min(len(self.s), self.i + 1)))

    def place(self, custom: _Custom) -> Rejection:
        return Rejection(custom.message, Category.DATA, custom.path, self._position(self.i))

    # bytes
    def ws(self) -> int | None:
        s, i = self.s, self.i
        while i < len(s) and s[i] in self.WHITESPACE:
            i += 1
        self.i = i
        return s[i] if i < len(s) else None

    def ident(self, rest: bytes, path: tuple) -> None:
        for expected in rest:
            if self.i >= len(self.s):
                raise self.error("EOF while parsing a value", path)
            got = self.s[self.i]
            self.i += 1
            if got != expected:
                raise self.error("expected ident", path)

    def string(self, path: tuple, validate_utf8: bool = True) -> str:
        """A string whose opening quote was eaten."""
        s = self.s
        parts = []
        start = self.i
        while True:
            j = start
            while j < len(s) and s[j] not in b'"\\' and s[j] >= 0x20:
                j += 1
            parts.append(s[start:j])
            self.i = j
            if j >= len(s):
                raise self.error("EOF while parsing a string", path)
            ch = s[j]
            if ch == 0x22:  # "
                self.i = j + 1
                try:
                    return b"".join(parts).decode("utf-8", "strict" if validate_utf8 else "replace")
                except UnicodeDecodeError:
                    raise self.error("invalid unicode code point", path) from None
            if ch == 0x5C:  # backslash
                self.i = j + 1
                parts.append(self._escape(path, validate_utf8))
                start = self.i
                continue
            if validate_utf8:  # a string read for its value; a skipped one stops before the byte
                self.i = j + 1
            raise self.error("control character (\\u0000-\\u001F) found while parsing a string", path)

    def _escape(self, path: tuple, validate: bool = True) -> bytes:
        if self.i >= len(self.s):
            raise self.error("EOF while parsing a string", path)
        ch = self.s[self.i]
        self.i += 1
        simple = {0x22: b'"', 0x5C: b"\\", 0x2F: b"/", 0x62: b"\b", 0x66: b"\f", 0x6E: b"\n", 0x72: b"\r", 0x74: b"\t"}
        if ch in simple:
            return simple[ch]
        if ch != 0x75:  # u
            raise self.error("invalid escape", path)
        code = self._hex4(path)
        if not validate:
            return b"?"
        if 0xDC00 <= code <= 0xDFFF:
            raise self.error("lone leading surrogate in hex escape", path)
        if 0xD800 <= code <= 0xDBFF:
            for expected in b"\\u":
                if self.i >= len(self.s):
                    raise self.error("EOF while parsing a string", path)
                self.i += 1
                if self.s[self.i - 1] != expected:
                    raise self.error("unexpected end of hex escape", path)
            low = self._hex4(path)
            if not 0xDC00 <= low <= 0xDFFF:
                raise self.error("lone leading surrogate in hex escape", path)
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        return chr(code).encode("utf-8", "surrogatepass")

    def _hex4(self, path: tuple) -> int:
        if self.i + 4 > len(self.s):
            self.i = len(self.s)
            raise self.error("EOF while parsing a string", path)
        value = 0
        for _ in range(4):
            ch = self.s[self.i]
            self.i += 1
            digit = int(chr(ch), 16) if chr(ch) in "0123456789abcdefABCDEF" else None
            if digit is None:
                raise self.error("invalid escape", path)
            value = value * 16 + digit
        return value

    def number(self, path: tuple, ignored: bool = False) -> _Number:
        """A number at the current byte (a leading '-' not yet eaten). `ignored`: read as
        serde_json skips a value nobody takes (its EOF cases say "invalid number")."""
        s = self.s
        start = self.i
        negative = s[self.i] == 0x2D
        if negative:
            self.i += 1
        if self.i >= len(s):
            raise self.error("invalid number" if ignored else "EOF while parsing a value", path)
        first = s[self.i]
        self.i += 1
        if first == 0x30:
            if self.i < len(s) and 0x30 <= s[self.i] <= 0x39:
                raise self.peek_error("invalid number", path)
        elif not 0x31 <= first <= 0x39:
            raise self.error("invalid number", path)
        while self.i < len(s) and 0x30 <= s[self.i] <= 0x39:
            self.i += 1
        is_float = False
        if self.i < len(s) and s[self.i] == 0x2E:
            is_float = True
            self.i += 1
            if self.i >= len(s):
                raise self.peek_error("invalid number" if ignored else "EOF while parsing a value", path)
            if not 0x30 <= s[self.i] <= 0x39:
                raise self.peek_error("invalid number", path)
            while self.i < len(s) and 0x30 <= s[self.i] <= 0x39:
                self.i += 1
        if self.i < len(s) and s[self.i] in b"eE":
            is_float = True
            self.i += 1
            if self.i < len(s) and s[self.i] in b"+-":
                self.i += 1
            if self.i >= len(s):
                raise self.error("invalid number" if ignored else "EOF while parsing a value", path)
            ch = s[self.i]
            self.i += 1
            if not 0x30 <= ch <= 0x39:
                raise self.error("invalid number", path)
            while self.i < len(s) and 0x30 <= s[self.i] <= 0x39:
                self.i += 1
        text = s[start:self.i].decode()
        if not is_float:
            value = int(text)
            if 0 <= value < 2**64:
                return _Number("u64", value)
            if -(2**63) <= value < 0:
                return _Number("i64", value)
        value = float(text)
        if math.isinf(value):
            raise self.error("number out of range", path)
        return _Number("f64", value)

    # compound framing
    def end_seq(self, path: tuple) -> None:
        if self.ws() == 0x5D:
            self.i += 1
            return
        raise self.peek_error("trailing characters", path)  # only ever after another error

    def end_map(self, path: tuple) -> None:
        if self.ws() == 0x7D:
            self.i += 1
            return
        raise self.peek_error("trailing characters", path)  # only ever after another error

    def next_element(self, first: bool, path: tuple) -> bool:
        """Before a sequence element: True if there is one (the reader is at it)."""
        peek = self.ws()
        if peek == 0x5D:
            return False
        if peek is None:
            raise self.peek_error("EOF while parsing a list", path)
        if peek == 0x2C and not first:
            self.i += 1
            peek = self.ws()
        elif not first:
            raise self.peek_error("expected `,` or `]`", path)
        if peek is None:
            raise self.peek_error("EOF while parsing a value", path)
        if peek == 0x5D:
            raise self.peek_error("trailing comma", path)
        return True

    def next_key(self, first: bool, path: tuple) -> str | None:
        path = path + (UNKNOWN,)
        peek = self.ws()
        if peek == 0x7D:
            return None
        if peek is None:
            raise self.peek_error("EOF while parsing an object", path)
        if peek == 0x2C and not first:
            self.i += 1
            peek = self.ws()
        elif not first:
            raise self.peek_error("expected `,` or `}`", path)
        if peek is None:
            raise self.peek_error("EOF while parsing a value", path)
        if peek == 0x22:
            self.i += 1
            return self.string(path)
        if peek == 0x7D:
            raise self.peek_error("trailing comma", path)
        raise self.peek_error("key must be a string", path)

    def colon(self, path: tuple) -> None:
        peek = self.ws()
        if peek == 0x3A:
            self.i += 1
            return
        if peek is None:
            raise self.peek_error("EOF while parsing an object", path)
        raise self.peek_error("expected `:`", path)

    def _nest(self, path: tuple) -> None:
        """Entering an array or object (at its bracket): serde_json's 128 levels."""
        self.depth += 1
        if self.depth >= 128:
            raise self.peek_error("recursion limit exceeded", path)

    # values
    def invalid_type(self, expecting: str, path: tuple) -> _Custom | Rejection:
        """serde_json's peek_invalid_type: reads a scalar, leaves `[`/`{` in place."""
        peek = self.ws()
        if peek is None:
            return self.peek_error("EOF while parsing a value", path)
        try:
            if peek == 0x6E:
                self.i += 1
                self.ident(b"ull", path)
                return _Custom(f"invalid type: null, expected {expecting}", path)
            if peek in (0x74, 0x66):
                self.i += 1
                self.ident(b"rue" if peek == 0x74 else b"alse", path)
                return _Custom(f"invalid type: boolean `{'true' if peek == 0x74 else 'false'}`, expected {expecting}", path)
            if peek == 0x2D or 0x30 <= peek <= 0x39:
                return _Custom(f"invalid type: {self.number(path).unexpected()}, expected {expecting}", path)
            if peek == 0x22:
                self.i += 1
                return _Custom(f"invalid type: string {_rust_str(self.string(path))}, expected {expecting}", path)
        except Rejection as exc:
            return exc
        if peek == 0x5B:
            return _Custom(f"invalid type: sequence, expected {expecting}", path)
        if peek == 0x7B:
            return _Custom(f"invalid type: map, expected {expecting}", path)
        return self.peek_error("expected value", path)

    def skip(self, path: tuple) -> None:
        """serde_json's ignore_value: read past one value nobody takes (its own error cases)."""
        stack: list[int] = []
        enclosing: int | None = None
        while True:
            peek = self.ws()
            if peek is None:
                raise self.peek_error("EOF while parsing a value", path)
            frame = None
            if peek in (0x6E, 0x74, 0x66):
                self.i += 1
                self.ident({0x6E: b"ull", 0x74: b"rue", 0x66: b"alse"}[peek], path)
            elif peek == 0x2D or 0x30 <= peek <= 0x39:
                self.number(path, ignored=True)
            elif peek == 0x22:
                self.i += 1
                self.string(path, validate_utf8=False)
            elif peek in (0x5B, 0x7B):
                if enclosing is not None:
                    stack.append(enclosing)
                    enclosing = None
                self.i += 1
                frame = peek
            else:
                raise self.peek_error("expected value", path)
            if frame is not None:
                accept_comma = False
            else:
                if enclosing is not None:
                    frame, enclosing = enclosing, None
                elif stack:
                    frame = stack.pop()
                else:
                    return
                accept_comma = True
            while True:
                peek = self.ws()
                if peek == 0x2C and accept_comma:
                    self.i += 1
                    break
                if (peek == 0x5D and frame == 0x5B) or (peek == 0x7D and frame == 0x7B):
                    self.i += 1
                    if not stack:
                        return
                    frame = stack.pop()
                    accept_comma = True
                    continue
                if peek is None:
                    raise self.peek_error("EOF while parsing a list" if frame == 0x5B else "EOF while parsing an object",
                                          path)
                if accept_comma:
                    raise self.peek_error("expected `,` or `]`" if frame == 0x5B else "expected `,` or `}`", path)
                break
            if frame == 0x7B:
                peek = self.ws()
                if peek is None:
                    raise self.peek_error("EOF while parsing an object", path)
                if peek != 0x22:
                    raise self.peek_error("key must be a string", path)
                self.i += 1
                self.string(path, validate_utf8=False)
                peek = self.ws()
                if peek is None:
                    raise self.peek_error("EOF while parsing an object", path)
                if peek != 0x3A:
                    raise self.peek_error("expected `:`", path)
                self.i += 1
            enclosing = frame

    def content(self, path: tuple, ignored: bool = False) -> Any:
        """deserialize_any into serde's Content (for untagged enums and serde_json::Value), or
        with `ignored` the skipping of an unknown field's value. Errors inside keep `path`
        (serde_path_to_error does not see into them)."""
        peek = self.ws()
        if peek is None:
            raise self.peek_error("EOF while parsing a value", path)
        if peek == 0x6E:
            self.i += 1
            self.ident(b"ull", path)
            return None
        if peek == 0x74:
            self.i += 1
            self.ident(b"rue", path)
            return True
        if peek == 0x66:
            self.i += 1
            self.ident(b"alse", path)
            return False
        if peek == 0x2D or 0x30 <= peek <= 0x39:
            return self.number(path, ignored)
        if peek == 0x22:
            self.i += 1
            return self.string(path)
        if peek == 0x5B:
            self._nest(path)
            self.i += 1
            items, first = [], True
            try:
                while self.next_element(first, path):
                    first = False
                    items.append(self.content(path + (len(items),)))
            finally:
                self.depth -= 1
            self.end_seq(path)
            return (_SEQ, items)
        if peek == 0x7B:
            self._nest(path)
            self.i += 1
            pairs, first = [], True
            try:
                while (key := self.next_key(first, path)) is not None:
                    first = False
                    self.colon(path)
                    pairs.append((key, self.content(path + (key,))))
            finally:
                self.depth -= 1
            self.end_map(path)
            return (_MAP, pairs)
        raise self.peek_error("expected value", path)

    def value(self, shape: Shape, path: tuple) -> Any:
        """Deserialize `shape` here; custom errors are placed as the serde_json call returns."""
        try:
            return self._value(shape, path)
        except _Untagged:
            raise
        except _Custom as custom:
            raise self.place(custom) from None

    def _value(self, shape: Shape, path: tuple) -> Any:
        if isinstance(shape, Opt):
            if self.ws() == 0x6E:
                self.i += 1
                self.ident(b"ull", path)
                return None
            return self._value(shape.inner, path)
        if isinstance(shape, Prim):
            return self._prim(shape, path)
        if isinstance(shape, Seq):
            return self._seq(shape, path)
        if isinstance(shape, Struct):
            return self._struct(shape, path)
        if isinstance(shape, UnitEnum):
            return self._unit_enum(shape, path)
        if isinstance(shape, AnyValue):
            return self.content(path)
        if isinstance(shape, Untagged):
            content = self.content(path)
            if not _matches(shape, content):
                raise _Untagged(f"data did not match any variant of untagged enum {shape.name}", path)
            return content
        if isinstance(shape, PredictInput):
            return self._predict_input(shape, path)
        raise TypeError(shape)

    def _prim(self, shape: Prim, path: tuple) -> Any:
        peek = self.ws()
        if shape.kind == "bool" and peek in (0x74, 0x66):
            self.i += 1
            self.ident(b"rue" if peek == 0x74 else b"alse", path)
            return peek == 0x74
        if shape.kind == "string" and peek == 0x22:
            self.i += 1
            return self.string(path)
        if shape.kind in ("usize", "u32") and peek is not None and (peek == 0x2D or 0x30 <= peek <= 0x39):
            number = self.number(path)
            limit = 2**64 if shape.kind == "usize" else 2**32
            if number.kind == "f64":
                raise _Custom(f"invalid type: {number.unexpected()}, expected {shape.expecting}", path)
            if not 0 <= number.value < limit:
                raise _Custom(f"invalid value: {number.unexpected()}, expected {shape.expecting}", path)
            return number.value
        problem = self.invalid_type(shape.expecting, path)
        raise problem

    def _close(self, failure: "Rejection | _Custom | None", close, path: tuple) -> None:
        """Read the container's closing bracket (serde reads it even after a failure inside),
        then raise the first problem: a custom error placed where serde reports it, else the
        syntax error."""
        try:
            close(path)
        except Rejection as exc:
            failure = failure or exc
        if isinstance(failure, _Custom):
            raise self.place(failure)
        if failure is not None:
            raise failure

    def _seq(self, shape: Seq, path: tuple) -> list:
        if self.ws() != 0x5B:
            raise self.invalid_type("a sequence", path)
        self._nest(path)
        self.i += 1
        items, first, failure = [], True, None
        try:
            while self.next_element(first, path):
                first = False
                items.append(self.value(shape.item, path + (len(items),)))
        except (Rejection, _Custom) as exc:
            failure = exc
        finally:
            self.depth -= 1
        self._close(failure, self.end_seq, path)
        return items

    def _struct(self, shape: Struct, path: tuple) -> dict:
        peek = self.ws()
        if peek == 0x5B:
            return self._struct_from_seq(shape, path)
        if peek != 0x7B:
            raise self.invalid_type(f"struct {shape.name}", path)
        self._nest(path)
        self.i += 1
        fields = {field.name: field for field in shape.fields}
        found: dict[str, Any] = {}
        failure: Rejection | _Custom | None = None
        first = True
        try:
            while (key := self.next_key(first, path)) is not None:
                first = False
                field = fields.get(key)
                if field is not None and key in found:
                    raise _Custom(f"duplicate field `{key}`", path)
                self.colon(path)
                if field is None:
                    self.skip(path + (key,))  # nobody takes it, but it is read
                    continue
                found[key] = self.value(field.shape, path + (key,))
            for field in shape.fields:
                if field.name not in found and not field.default and not isinstance(field.shape, Opt):
                    raise _Custom(f"missing field `{field.name}`", path)
        except (Rejection, _Custom) as exc:
            failure = exc
        finally:
            self.depth -= 1
        self._close(failure, self.end_map, path)
        return found

    def _struct_from_seq(self, shape: Struct, path: tuple) -> dict:
        self._nest(path)
        self.i += 1
        found, failure = {}, None
        try:
            for index, field in enumerate(shape.fields):
                if not self.next_element(index == 0, path):
                    if field.default:
                        continue
                    raise _Custom(f"invalid length {index}, expected struct {shape.name} with "
                                  f"{len(shape.fields)} element{'s' if len(shape.fields) != 1 else ''}", path)
                found[field.name] = self.value(field.shape, path + (index,))
        except (Rejection, _Custom) as exc:
            failure = exc
        finally:
            self.depth -= 1
        self._close(failure, self.end_seq, path)
        return found

    def _unit_enum(self, shape: UnitEnum, path: tuple) -> str:
        peek = self.ws()
        if peek == 0x22:
            self.i += 1
            name = self.string(path)
            if name not in shape.accepted:
                raise _Custom(f"unknown variant `{name}`, expected {_one_of(shape.variants)}", path)
            return name
        if peek is None:
            raise self.peek_error("EOF while parsing a value", path)
        if peek == 0x7B:  # {"Variant": ...}: the key names the variant
            self.i += 1
            if self.ws() != 0x22:
                raise self.invalid_type("variant identifier", path)
            self.i += 1
            name = self.string(path)
            if name not in shape.accepted:
                raise _Custom(f"unknown variant `{name}`, expected {_one_of(shape.variants)}", path)
            self.colon(path)
            if self.ws() != 0x6E:
                raise self.invalid_type("unit variant", path)
            self.i += 1
            self.ident(b"ull", path)
            peek = self.ws()
            if peek == 0x7D:
                self.i += 1
                return name
            raise self.error("expected value" if peek is not None else "EOF while parsing an object", path)
        raise self.peek_error("expected value", path)

    def _predict_input(self, shape: PredictInput, path: tuple) -> Any:
        peek = self.ws()
        if peek == 0x22:
            self.i += 1
            return self.string(path)
        if peek == 0x7B:  # deserialize_any enters the map, the visitor refuses it
            self.i += 1
            if self.ws() == 0x7D:
                self.i += 1
            raise _Custom(f"invalid type: map, expected {shape.expecting}", path)
        if peek != 0x5B:
            problem = self.invalid_type(shape.expecting, path)
            raise problem
        self._nest(path)
        self.i += 1
        failure = None
        try:
            self._predict_seq(shape, path)
        except (Rejection, _Custom) as exc:
            failure = exc
        finally:
            self.depth -= 1
        self._close(failure, self.end_seq, path)
        return True

    def _predict_seq(self, shape: PredictInput, path: tuple) -> None:
        internal = Untagged("Internal", (STRING, Seq(STRING)))
        if not self.next_element(True, path):
            raise _Custom(f"invalid length 0, expected {shape.expecting}", path)
        head = self.value(internal, path + (0,))
        if isinstance(head, str):  # a single text or a pair
            if self.next_element(False, path):
                self.value(STRING, path + (1,))
                if self.next_element(False, path):
                    self.value(STRING, path + (2,))
                    raise _Custom(f"invalid length 3, expected {shape.expecting}", path)
            return
        if len(head[1]) not in (1, 2):
            raise _Custom(f"invalid length {len(head[1])}, expected {shape.expecting}", path)
        index = 1
        while self.next_element(False, path):
            batch_item = self.value(Seq(STRING), path + (index,))
            if len(batch_item) not in (1, 2):
                raise _Custom(f"invalid length {len(batch_item)}, expected {shape.expecting}", path)
            index += 1


def _one_of(names: tuple[str, ...]) -> str:
    quoted = [f"`{name}`" for name in names]
    if not quoted:
        return "there are no variants"
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} or {quoted[1]}"
    return "one of " + ", ".join(quoted)


def _matches(shape: Shape, content: Any) -> bool:
    """Whether buffered content deserializes as `shape` (serde's ContentRefDeserializer)."""
    if isinstance(shape, Untagged):
        return any(_matches(variant, content) for variant in shape.variants)
    if isinstance(shape, Prim):
        if shape.kind == "string":
            return isinstance(content, str)
        if shape.kind == "bool":
            return isinstance(content, bool)
        if isinstance(content, _Number) and content.kind == "u64":
            return content.value < (2**32 if shape.kind == "u32" else 2**64)
        return False
    if isinstance(shape, Seq):
        return isinstance(content, tuple) and content[0] == _SEQ and all(_matches(shape.item, c) for c in content[1])
    if isinstance(shape, Opt):
        return content is None or _matches(shape.inner, content)
    if isinstance(shape, AnyValue):
        return True
    raise TypeError(shape)


def rejection(body: bytes, shape: Struct) -> tuple[int, str] | None:
    """(status, TEI's text) for a body TEI's Json<shape> refuses; None if TEI would take it."""
    reader = _Reader(body)
    try:
        reader.value(shape, ())
        if reader.ws() is not None:
            raise reader.peek_error("trailing characters", ())
    except Rejection as exc:
        return exc.category.value, exc.text()
    except RecursionError:
        return 400, f"{SYNTAX_PREFIX}recursion limit exceeded at line 1 column 1"
    return None


def value_rejection(value: Any, shape: Struct) -> str | None:
    """serde_json::from_value's words for an already parsed JSON value that TEI's `shape`
    refuses, None if TEI would take it. TEI reads each /vertex instance this way: serde's
    message alone (a Value has no positions, and no serde_path_to_error path is kept), its
    objects' keys visited in sorted order (serde_json's Map is a BTreeMap in TEI's build), and
    a struct given as an array with elements left over refused by length, not as trailing
    characters."""
    reader = _Reader(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    try:
        reader.value(shape, ())
    except Rejection as exc:
        if isinstance(value, list) and exc.message == "trailing characters":
            return f"invalid length {len(value)}, expected fewer elements in array"
        return exc.message
    except RecursionError:
        return None
    return None
