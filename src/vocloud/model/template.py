"""The template language: OpenNebula's ``KEY = VALUE`` syntax, plus JSON and TOML.

Templates arrive from users (CLI files, REST bodies, XML-RPC strings), so every mistake must come
back as a typed error that points at the exact line and column, and nothing here may evaluate
user text. That is why the ONE syntax is read by a small hand-written tokenizer and parser rather
than by regular expressions or ``eval``: each token remembers where it started.

The data model shared by all three input formats:

* keys are case-insensitive and stored UPPER-case; they are letters, digits and ``_`` and do not
  start with a digit (so that every template can be written back in ONE syntax);
* a value is a string (numbers become strings, booleans become ``YES``/``NO``), or a *vector*
  ``[K=V, ...]`` (a ``dict[str, str]`` with UPPER keys);
* a key that occurs several times keeps every occurrence, in order, as a list. This follows
  OpenNebula, which keeps them all: ``DISK`` and ``NIC`` are repeated vectors, and a repeated
  single value is kept too, but :meth:`Template.get` refuses to pick one of them, so the mistake
  surfaces when the value is used. Mixing a vector and a single value under one key is an error;
* one occurrence is stored bare, never as a one-element list, and an empty list removes the key,
  so that equal templates compare equal whatever format they came from.

ONE syntax details that are decisions rather than facts of the format: one attribute per line
(``A=1 B=2`` is an error, which catches a forgotten quote); the value starts on the same line as
the ``=``; inside ``[...]`` newlines are free and a trailing comma is allowed; ``#`` starts a comment
only where a token could start (``a#b`` is a word); in quoted strings ``\\"``, ``\\'``, ``\\\\``,
``\\n``, ``\\t`` and ``\\r`` are escapes and any other backslash is kept as written; a key repeated
inside one vector is an error, because a vector is a mapping.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import Enum
from fractions import Fraction
from typing import Any, TypeAlias

from vocloud.errors import InvalidInput, ParseError

__all__ = [
    "FORMATS",
    "MAX_CPU",
    "MAX_MEMORY_MIB",
    "MAX_TEMPLATE_BYTES",
    "MAX_TEMPLATE_DEPTH",
    "Scalar",
    "Template",
    "Value",
    "Vector",
    "check_size",
    "nesting_depth",
    "parse_size_mib",
    "parse_template",
]

Scalar: TypeAlias = str
Vector: TypeAlias = dict[str, str]
Value: TypeAlias = Scalar | Vector | list[Vector] | list[Scalar]

FORMATS = ("auto", "one", "json", "toml")

MAX_CPU = 1024
MAX_MEMORY_MIB = 16 * 1024 * 1024  # 16 TiB: beyond any host, so surely a unit mistake

# ---------------------------------------------------------------------------------------------
# Scalar conversions shared by Template getters and VMTemplate validation
# ---------------------------------------------------------------------------------------------

# Python's int()/float() also accept "1_000", "nan", "inf" and non-ASCII digits, which are not
# numbers to a user.
_INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)", re.ASCII)
_SIZE_UNITS: dict[str, Fraction] = {
    "": Fraction(1),
    "K": Fraction(1, 1024),
    "M": Fraction(1),
    "G": Fraction(1024),
    "T": Fraction(1024 * 1024),
}
_TRUE = frozenset({"YES", "TRUE", "1"})
_FALSE = frozenset({"NO", "FALSE", "0"})


def _parse_int(label: str, text: str) -> int:
    if not _INT_RE.fullmatch(text.strip()):
        raise InvalidInput(f"{label} must be an integer, got {text!r}", attribute=label, value=text)
    return int(text)


def _parse_float(label: str, text: str) -> float:
    if not _FLOAT_RE.fullmatch(text.strip()):
        raise InvalidInput(f"{label} must be a number, got {text!r}", attribute=label, value=text)
    return float(text)


def _size_factor(unit: str) -> Fraction | None:
    """Map K/KB/KiB, M/MB/MiB, ... to MiB; OpenNebula reads MB as MiB, and so do we."""
    unit = unit.upper()
    for suffix in ("IB", "B"):
        if len(unit) > len(suffix) and unit.endswith(suffix):
            unit = unit[: -len(suffix)]
            break
    return _SIZE_UNITS.get(unit)


def parse_size_mib(text: str, label: str = "size") -> int:
    """Read ``512``, ``512M``, ``2G``, ``1.5GB``, ``1T`` as MiB (no suffix means MiB).

    Fractions of a MiB are rounded up: a guest gets at least what was asked for.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    factor = _size_factor(match.group(2)) if match else None
    if match is None or factor is None:
        raise InvalidInput(
            f"{label} must be a size such as 512, 512M or 2G, got {text!r}", attribute=label, value=text
        )
    return math.ceil(Fraction(match.group(1)) * factor)


def _parse_bool(label: str, text: str) -> bool:
    word = text.strip().upper()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise InvalidInput(f"{label} must be YES or NO, got {text!r}", attribute=label, value=text)


# ---------------------------------------------------------------------------------------------
# Keys and value normalization (shared by the Template constructor, set() and JSON/TOML input)
# ---------------------------------------------------------------------------------------------


_GOOD_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _bad_key_char(name: str) -> int | None:
    """Index of the first character that cannot be in a key, or None if the key is valid."""
    if not name:
        return 0
    if _GOOD_KEY.fullmatch(name):  # the common case, in C (a loop per character was a hot spot)
        return None
    for index, ch in enumerate(name):
        if not (ch.isascii() and (ch.isalnum() or ch == "_")) or (index == 0 and ch.isdigit()):
            return index
    return None


def _key_problem(name: str, index: int) -> str:
    if not name:
        return "empty attribute name"
    if index == 0 and name[0].isdigit():
        return f"attribute name {name!r} must start with a letter or '_'"
    return f"invalid character {name[index]!r} in attribute name {name!r}; use letters, digits and '_'"


def _normalize_key(key: object, where: str = "") -> str:
    if not isinstance(key, str):
        raise InvalidInput(f"attribute name{where} must be a string, got {key!r}")
    bad = _bad_key_char(key)
    if bad is not None:
        raise InvalidInput(_key_problem(key, bad) + where)
    return key.upper()


def _scalar(label: str, raw: object) -> str:
    """Turn a JSON/TOML/Python scalar into the string the data model stores."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):  # before int: bool is an int
        return "YES" if raw else "NO"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        return _float_text(label, raw)
    if isinstance(raw, datetime | date | time):
        return raw.isoformat()
    if raw is None:
        raise InvalidInput(f"{label} has no value (null)", attribute=label)
    raise InvalidInput(f"{label} cannot hold {raw!r}", attribute=label)


def _float_text(label: str, raw: float) -> str:
    """2.0 reads as "2" so that get_int() works on numbers that went through a float."""
    if not math.isfinite(raw):
        raise InvalidInput(f"{label} must be a finite number, got {raw!r}", attribute=label)
    if raw.is_integer() and abs(raw) < 2**53:
        return str(int(raw))
    return repr(raw)


def _normalize_vector(name: str, raw: Mapping[Any, Any]) -> Vector:
    out: Vector = {}
    for key, value in raw.items():
        sub = _normalize_key(key, f" in vector {name}")
        if sub in out:
            raise InvalidInput(f"{sub} is given twice in vector {name} (names are case-insensitive)")
        if isinstance(value, Mapping):
            raise InvalidInput(f"a vector cannot contain another vector: {name} > {sub}")
        if isinstance(value, list | tuple):
            raise InvalidInput(f"{sub} in vector {name} must be a single value, not a list")
        out[sub] = _scalar(f"{sub} in vector {name}", value)
    return out


def _normalize_value(name: str, raw: object) -> Value | None:
    """Canonical form of a value; None means "no occurrence", i.e. drop the key."""
    if isinstance(raw, Mapping):
        return _normalize_vector(name, raw)
    if not isinstance(raw, list | tuple):
        return _scalar(name, raw)
    if any(isinstance(item, list | tuple) for item in raw):
        raise InvalidInput(f"{name} cannot hold a list inside a list")
    if all(isinstance(item, Mapping) for item in raw):
        vectors = [_normalize_vector(name, item) for item in raw]
        return _bare_if_single(vectors)
    if any(isinstance(item, Mapping) for item in raw):
        raise InvalidInput(f"{name} mixes vectors and single values")
    return _bare_if_single([_scalar(name, item) for item in raw])


def _bare_if_single(items: list[Vector] | list[Scalar]) -> Value | None:
    if not items:
        return None
    if len(items) == 1:
        return items[0]
    return items


def _not_single(name: str, value: Value) -> InvalidInput:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return InvalidInput(f"{name} is given {len(value)} times; expected a single value", attribute=name)
    return InvalidInput(f"{name} is a vector ({name}=[...]), not a single value", attribute=name)


def _occurrences(value: Value) -> list[Vector | Scalar]:
    return list(value) if isinstance(value, list) else [value]


# ---------------------------------------------------------------------------------------------
# Template
# ---------------------------------------------------------------------------------------------


class Template:
    """An ordered mapping KEY -> Value, whatever format it was written in.

    Getters convert on read (rather than storing typed values) so that a template round-trips
    exactly and a bad value is reported, with its attribute name, by whoever needs it.
    """

    __slots__ = ("attrs",)

    def __init__(self, attrs: Mapping[str, Any] | None = None) -> None:
        self.attrs: dict[str, Value] = {}
        seen: set[str] = set()
        for key, value in (attrs or {}).items():
            name = _normalize_key(key)
            if name in seen:
                raise InvalidInput(f"attribute {name} is given twice (names are case-insensitive)")
            seen.add(name)
            self.set(name, value)

    # -- single values --------------------------------------------------------------------------

    def get(self, key: str, default: str | None = None) -> str | None:
        """The single value of KEY; a vector or a repeated value is an error, never a guess."""
        name = key.upper()
        value = self.attrs.get(name)
        if value is None:
            return default
        if isinstance(value, str):
            return value
        raise _not_single(name, value)

    def get_int(self, key: str, default: int | None = None) -> int | None:
        text = self.get(key)
        return default if text is None else _parse_int(key.upper(), text)

    def get_float(self, key: str, default: float | None = None) -> float | None:
        text = self.get(key)
        return default if text is None else _parse_float(key.upper(), text)

    def get_size_mib(self, key: str, default: int | None = None) -> int | None:
        text = self.get(key)
        return default if text is None else parse_size_mib(text, key.upper())

    def get_bool(self, key: str, default: bool | None = None) -> bool | None:
        text = self.get(key)
        return default if text is None else _parse_bool(key.upper(), text)

    # -- vectors --------------------------------------------------------------------------------

    def vectors(self, key: str) -> list[Vector]:
        """Every occurrence of a repeatable vector (DISK, NIC); copies, so callers cannot alter us."""
        name = key.upper()
        value = self.attrs.get(name)
        if value is None:
            return []
        out: list[Vector] = []
        for item in _occurrences(value):
            if not isinstance(item, dict):
                raise InvalidInput(f"{name} must be a vector like {name}=[...], got {item!r}", attribute=name)
            out.append(dict(item))
        return out

    def vector(self, key: str) -> Vector | None:
        """The one occurrence of a vector that makes sense once (CONTEXT)."""
        found = self.vectors(key)
        if len(found) > 1:
            name = key.upper()
            raise InvalidInput(f"{name} is given {len(found)} times; expected one", attribute=name)
        return found[0] if found else None

    # -- changes --------------------------------------------------------------------------------

    def set(self, key: str, value: Value) -> None:
        """Replace KEY; an empty list removes it, numbers and booleans are stored as strings."""
        name = _normalize_key(key)
        normal = _normalize_value(name, value)
        if normal is None:
            self.attrs.pop(name, None)
        else:
            self.attrs[name] = normal

    def merge(self, other: Template) -> Template:
        """A new template where each key of ``other`` replaces ours as a whole.

        Whole-key replacement (not a vector-by-vector merge) is what instantiating with extra
        attributes means: ``CONTEXT=[...]`` given at instantiation is the context the user wants.
        """
        merged = self.copy()
        for name, value in other.attrs.items():
            merged.attrs[name] = _copy_value(value)
        return merged

    def copy(self) -> Template:
        return Template(self.to_dict())

    # -- output ---------------------------------------------------------------------------------

    def to_one(self) -> str:
        """Canonical ONE syntax: every value quoted, one vector attribute per line."""
        lines = [
            f"{name}={_one_value(item)}\n"
            for name, value in self.attrs.items()
            for item in _occurrences(value)
        ]
        return "".join(lines)

    def to_one_many(self, items: Sequence[Mapping[str, object]]) -> list[str]:
        """``to_one()`` of a copy of this template with each item's keys :meth:`set`, for many
        items at once (``vm create --count N``: N stored templates that differ only in VMID,
        NAME and NICs). The same text as the one-by-one way; the lines of the keys no item
        sets are rendered once. Every item must set the same keys."""
        if not items:
            return []
        slots = [_normalize_key(k) for k in items[0]]
        order = list(self.attrs) + [k for k in slots if k not in self.attrs]
        fixed = {name: "".join(f"{name}={_one_value(v)}\n" for v in _occurrences(value))
                 for name, value in self.attrs.items() if name not in slots}
        out = []
        for item in items:
            given = {_normalize_key(k): v for k, v in item.items()}
            if given.keys() != set(slots):
                raise ValueError("to_one_many: every item must set the same keys")
            parts = []
            for name in order:
                if name in fixed:
                    parts.append(fixed[name])
                    continue
                value = _normalize_value(name, given[name])
                if value is not None:
                    parts.extend(f"{name}={_one_value(v)}\n" for v in _occurrences(value))
            out.append("".join(parts))
        return out

    def to_dict(self) -> dict[str, Value]:
        return {name: _copy_value(value) for name, value in self.attrs.items()}

    # -- mapping protocol -----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return self.attrs == other.attrs

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.upper() in self.attrs

    def __len__(self) -> int:
        return len(self.attrs)

    def __iter__(self) -> Iterator[str]:
        return iter(self.attrs)

    def __repr__(self) -> str:
        return f"Template({self.attrs!r})"


def _copy_value(value: Value) -> Value:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [dict(item) for item in value if isinstance(item, dict)]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return value


_QUOTE_TABLE = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _quote(text: str) -> str:
    return '"' + text.translate(_QUOTE_TABLE) + '"'


def _one_value(item: Vector | Scalar) -> str:
    if isinstance(item, str):
        return _quote(item)
    if not item:
        return "[]"
    pairs = ",\n".join(f"  {key}={_quote(value)}" for key, value in item.items())
    return f"[\n{pairs} ]"


# ---------------------------------------------------------------------------------------------
# ONE syntax: tokenizer
# ---------------------------------------------------------------------------------------------


class _Kind(Enum):
    WORD = "word"
    STRING = "string"
    EQUALS = "'='"
    LBRACKET = "'['"
    RBRACKET = "']'"
    COMMA = "','"
    NEWLINE = "end of line"
    EOF = "end of input"


_PUNCT = {"=": _Kind.EQUALS, "[": _Kind.LBRACKET, "]": _Kind.RBRACKET, ",": _Kind.COMMA}
_WORD_STOP = frozenset("=[],\"'")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    text: str
    line: int
    column: int

    def describe(self) -> str:
        """How the token reads in an error message: the user must recognise what we saw."""
        shown = self.text if len(self.text) <= 30 else self.text[:27] + "..."
        if self.kind is _Kind.WORD:
            return repr(shown)
        if self.kind is _Kind.STRING:
            return f"string {json.dumps(shown)}"
        return str(self.kind.value)


class _Lexer:
    """Splits ONE text into tokens, tracking 1-based line and column of each token's start."""

    def __init__(self, text: str, source: str) -> None:
        self._text = text
        self._source = source
        self._pos = 0
        self._line = 1
        self._column = 1

    def tokens(self) -> list[_Token]:
        out: list[_Token] = []
        while (token := self._next_token()) is not None:
            out.append(token)
        out.append(_Token(_Kind.EOF, "", self._line, self._column))
        return out

    def _advance(self) -> None:
        if self._text[self._pos] == "\n":
            self._line += 1
            self._column = 1
        else:
            self._column += 1
        self._pos += 1

    def _next_token(self) -> _Token | None:
        text = self._text
        while self._pos < len(text):
            ch = text[self._pos]
            line, column = self._line, self._column
            if ch == "\n":
                self._advance()
                return _Token(_Kind.NEWLINE, ch, line, column)
            if ch.isspace():
                self._advance()
            elif ch == "#":
                self._skip_comment()
            elif ch in "\"'":
                return _Token(_Kind.STRING, self._string(ch), line, column)
            elif ch in _PUNCT:
                self._advance()
                return _Token(_PUNCT[ch], ch, line, column)
            else:
                return _Token(_Kind.WORD, self._word(), line, column)
        return None

    def _skip_comment(self) -> None:
        while self._pos < len(self._text) and self._text[self._pos] != "\n":
            self._advance()

    def _word(self) -> str:
        start = self._pos
        while self._pos < len(self._text):
            ch = self._text[self._pos]
            if ch.isspace() or ch in _WORD_STOP:
                break
            self._advance()
        return self._text[start : self._pos]

    def _string(self, quote: str) -> str:
        """Read a quoted string; an unterminated one is reported where it *started*."""
        line, column = self._line, self._column
        text = self._text
        self._advance()
        parts: list[str] = []
        while self._pos < len(text):
            ch = text[self._pos]
            if ch == quote:
                self._advance()
                return "".join(parts)
            if ch == "\\" and self._pos + 1 < len(text):
                escaped = text[self._pos + 1]
                parts.append(_ESCAPES.get(escaped, "\\" + escaped))
                self._advance()
                self._advance()
                continue
            parts.append(ch)
            self._advance()
        raise ParseError(
            f"unterminated string: the {quote} opened here is never closed", line, column, self._source
        )


# ---------------------------------------------------------------------------------------------
# ONE syntax: parser
# ---------------------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the token list; every error names the token it stopped at."""

    def __init__(self, tokens: list[_Token], source: str) -> None:
        self._tokens = tokens
        self._index = 0
        self._source = source

    def _next(self, *, skip_newlines: bool) -> _Token:
        token = self._tokens[self._index]
        while skip_newlines and token.kind is _Kind.NEWLINE:
            self._index += 1
            token = self._tokens[self._index]
        if token.kind is not _Kind.EOF:
            self._index += 1
        return token

    def _error(self, message: str, token: _Token) -> ParseError:
        return ParseError(message, token.line, token.column, self._source)

    def parse(self) -> Template:
        scalars: dict[str, list[Scalar]] = {}
        vectors: dict[str, list[Vector]] = {}
        first_seen: dict[str, _Token] = {}
        while (token := self._next(skip_newlines=True)).kind is not _Kind.EOF:
            name = self._key(token, "")
            value = self._attribute_value(name)
            self._end_of_line(name)
            self._check_same_kind(name, value, token, first_seen.setdefault(name, token), vectors)
            if isinstance(value, dict):
                vectors.setdefault(name, []).append(value)
            else:
                scalars.setdefault(name, []).append(value)
        attrs: dict[str, Value | None] = {
            name: _bare_if_single(vectors[name] if name in vectors else scalars[name]) for name in first_seen
        }
        return Template(attrs)

    def _check_same_kind(
        self,
        name: str,
        value: Vector | Scalar,
        token: _Token,
        first: _Token,
        vectors: dict[str, list[Vector]],
    ) -> None:
        if first is token or isinstance(value, dict) == (name in vectors):
            return
        was = "a vector" if name in vectors else "a single value"
        now = "a vector" if isinstance(value, dict) else "a single value"
        raise self._error(f"{name} was {was} on line {first.line}, it cannot also be {now}", token)

    def _key(self, token: _Token, where: str) -> str:
        if token.kind is not _Kind.WORD:
            raise self._error(f"expected an attribute name{where}, found {token.describe()}", token)
        bad = _bad_key_char(token.text)
        if bad is not None:
            problem = _key_problem(token.text, bad)
            raise ParseError(problem, token.line, token.column + bad, self._source)
        return token.text.upper()

    def _attribute_value(self, name: str) -> Vector | Scalar:
        equals = self._next(skip_newlines=False)
        if equals.kind is not _Kind.EQUALS:
            raise self._error(f"expected '=' after {name}, found {equals.describe()}", equals)
        token = self._next(skip_newlines=False)
        if token.kind in (_Kind.WORD, _Kind.STRING):
            return token.text
        if token.kind is _Kind.LBRACKET:
            return self._vector(name, token)
        if token.kind in (_Kind.NEWLINE, _Kind.EOF):
            raise self._error(f"missing value for {name}", token)
        raise self._error(f"expected a value for {name}, found {token.describe()}", token)

    def _end_of_line(self, name: str) -> None:
        token = self._next(skip_newlines=False)
        if token.kind not in (_Kind.NEWLINE, _Kind.EOF):
            raise self._error(
                f"expected end of line after the value of {name}, found {token.describe()}", token
            )

    def _unclosed(self, name: str, opening: _Token) -> ParseError:
        return self._error(f"missing ']': the vector {name} opened here is never closed", opening)

    def _vector(self, name: str, opening: _Token) -> Vector:
        vector: Vector = {}
        token = self._next(skip_newlines=True)
        while token.kind is not _Kind.RBRACKET:  # "[]" and a trailing comma both end here
            sub = self._vector_key(name, opening, token)
            if sub in vector:
                raise self._error(f"{sub} is given twice in vector {name}", token)
            vector[sub] = self._vector_value(name, sub, opening)
            separator = self._next(skip_newlines=True)
            if separator.kind is _Kind.RBRACKET:
                break
            if separator.kind is _Kind.EOF:
                raise self._unclosed(name, opening)
            if separator.kind is not _Kind.COMMA:
                raise self._error(
                    f"expected ',' or ']' after {sub} in vector {name}, found {separator.describe()}"
                    " (is a ']' missing?)",
                    separator,
                )
            token = self._next(skip_newlines=True)
        return vector

    def _vector_key(self, name: str, opening: _Token, token: _Token) -> str:
        if token.kind is _Kind.EOF:
            raise self._unclosed(name, opening)
        if token.kind is _Kind.COMMA:
            raise self._error(f"unexpected ',' in vector {name}", token)
        if token.kind is _Kind.LBRACKET:
            raise self._error(f"a vector cannot contain another vector (in {name})", token)
        return self._key(token, f" in vector {name}")

    def _vector_value(self, name: str, sub: str, opening: _Token) -> str:
        equals = self._next(skip_newlines=True)
        if equals.kind is not _Kind.EQUALS:
            raise self._error(f"expected '=' after {sub} in vector {name}, found {equals.describe()}", equals)
        token = self._next(skip_newlines=True)
        if token.kind in (_Kind.WORD, _Kind.STRING):
            return token.text
        if token.kind is _Kind.LBRACKET:
            raise self._error(f"a vector cannot contain another vector ({name} > {sub})", token)
        if token.kind is _Kind.EOF:
            raise self._unclosed(name, opening)
        raise self._error(f"missing value for {sub} in vector {name}", token)


# ---------------------------------------------------------------------------------------------
# Formats and detection
# ---------------------------------------------------------------------------------------------

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = "(at end of document)"
# A line holding only a TOML table header: "[name]" or "[[name]]". ONE has no such line.
_TOML_HEADER = re.compile(r"^[ \t]*\[\[?[^\[\]=\n]+\]\]?[ \t]*(?:#.*)?$", re.MULTILINE)
# "KEY = {" or "KEY = [" followed by something no ONE vector key starts with (quote, digit, ...).
_TOML_INLINE = re.compile(r"^[ \t]*[\w.\-\"']+[ \t]*=[ \t]*(?:\{|\[[ \t]*[\[{\"'0-9+\-])", re.MULTILINE)


#: Defaults of the ``max_template_bytes`` and ``max_template_depth`` settings (docs/security.md).
MAX_TEMPLATE_BYTES = 64 * 1024
MAX_TEMPLATE_DEPTH = 8


def check_size(text: str, max_bytes: int | None, source: str = "template") -> None:
    """Refuse a template larger than ``max_bytes`` (UTF-8), before any parsing work."""
    if max_bytes is None:
        return
    # len(text) is a lower bound of the UTF-8 size and at most 4x smaller: encode only if close
    if len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode()) > max_bytes):
        raise InvalidInput(f"{source} is larger than {max_bytes} bytes (setting max_template_bytes)",
                           limit=max_bytes)


def nesting_depth(text: str, limit: int) -> int:
    """How deep ``[``/``{`` nest outside strings, counted up to ``limit + 1`` (then it stops).

    One linear pass without recursion, so a document nested 100,000 deep costs microseconds and
    never reaches the recursive JSON/TOML readers (which would raise RecursionError). Strings
    are skipped with JSON/TOML quoting (``"..."`` with backslash escapes, TOML ``'...'``), and
    TOML comments (``#`` to the end of the line) too; brackets inside them do not count.
    """
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif ch == "'":
            end = text.find("'", i + 1)
            i = n if end < 0 else end
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        i += 1
    return deepest


def parse_template(text: str, fmt: str = "auto", source: str = "template",
                   max_bytes: int | None = MAX_TEMPLATE_BYTES,
                   max_depth: int = MAX_TEMPLATE_DEPTH) -> Template:
    """Read a template written in ONE syntax, JSON or TOML.

    ``max_bytes`` (``None``: no limit, for the service's own stored templates) and ``max_depth``
    (nesting of JSON/TOML arrays and objects; the data model needs 3) bound the work a request
    can cause; both are refused with a clear error before parsing.

    ``fmt="auto"``: JSON when the first non-blank character is ``{``; otherwise ONE syntax. Only
    if that fails *and* the text shows TOML-only syntax -- a ``[table]`` or ``[[array]]`` header
    line, or a value that is an inline table or array (``KEY = {...}``, ``KEY = ["a", 1]``) -- is
    it read as TOML, and then TOML's error is the one reported. Text valid in both
    (``CPU = 1``) is read as ONE; a header-like line inside a ONE multi-line string is harmless.
    An explicit ``fmt`` is always obeyed.
    """
    text = text.removeprefix("\ufeff")
    check_size(text, max_bytes, source)
    kind = fmt.lower()
    if kind in ("json", "toml", "auto") and nesting_depth(text, max_depth) > max_depth:
        raise InvalidInput(f"{source} nests deeper than {max_depth} levels of [ ] or {{ }} "
                           "(setting max_template_depth)", limit=max_depth)
    if kind == "one":
        return _parse_one(text, source)
    if kind == "json":
        return _parse_json(text, source)
    if kind == "toml":
        return _parse_toml(text, source)
    if kind == "auto":
        return _parse_auto(text, source)
    raise InvalidInput(f"unknown template format {fmt!r}; use one of {', '.join(FORMATS)}")


def _parse_auto(text: str, source: str) -> Template:
    if text.lstrip().startswith("{"):
        return _parse_json(text, source)
    try:
        return _parse_one(text, source)
    except ParseError:
        if not _looks_like_toml(text):
            raise
    return _parse_toml(text, source)


def _looks_like_toml(text: str) -> bool:
    return bool(_TOML_HEADER.search(text) or _TOML_INLINE.search(text))


#: one line of the common simple form, ``KEY="value"`` (no quote, backslash or newline inside)
_SIMPLE_LINE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="([^"\\\n]*)"')


def _parse_simple(text: str) -> Template | None:
    """The common case in C: every non-empty line is ``KEY="value"``, each key once (the
    service's stored templates of VMs without disks or NICs). The same Template the full parser
    gives; None (then the full parser runs, with its error messages) for anything else. The
    lexer was most of the lifecycle's cost at 10,000 VMs, whose stored texts all differ."""
    attrs: dict[str, Value] = {}
    for line in text.split("\n"):
        if not line:
            continue
        m = _SIMPLE_LINE.fullmatch(line)
        if m is None:
            return None
        key = m.group(1).upper()
        if key in attrs:
            return None
        attrs[key] = m.group(2)
    t = Template()
    t.attrs = attrs  # what the constructor would store: the regex admits only valid keys, str values
    return t


def _parse_one(text: str, source: str) -> Template:
    fast = _parse_simple(text)
    if fast is not None:
        return fast
    return _Parser(_Lexer(text, source).tokens(), source).parse()


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse duplicate keys, which json.loads would silently resolve to the last one."""
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for key, value in pairs:
        if key.upper() in seen:
            raise InvalidInput(f"key {key!r} is given twice (names are case-insensitive)")
        seen.add(key.upper())
        out[key] = value
    return out


def _parse_json(text: str, source: str) -> Template:
    try:
        data = json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError as exc:
        raise ParseError(exc.msg, exc.lineno, exc.colno, source) from None
    except RecursionError:  # the depth check comes first; this is the backstop
        raise InvalidInput(f"{source} nests too deeply") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: a JSON template must be an object {{...}}, got {type(data).__name__}")
    return Template(data)


def _parse_toml(text: str, source: str) -> Template:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(str(exc), text, source) from None
    except RecursionError:  # the depth check comes first; this is the backstop
        raise InvalidInput(f"{source} nests too deeply") from None
    return Template(data)


def _toml_error(message: str, text: str, source: str) -> ParseError:
    """tomllib puts the position only in its message: "... (at line 3, column 5)"."""
    match = _TOML_POSITION.search(message)
    if match:
        return ParseError(message[: match.start()], int(match.group(1)), int(match.group(2)), source)
    if message.endswith(_TOML_END):
        last_line = text.rsplit("\n", 1)[-1]
        reason = message.removesuffix(_TOML_END).rstrip() + " at end of document"
        return ParseError(reason, text.count("\n") + 1, len(last_line) + 1, source)
    return ParseError(message, 1, 1, source)
