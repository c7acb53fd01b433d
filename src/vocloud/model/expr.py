"""Requirement and rank expressions (OpenNebula's SCHED_REQUIREMENTS / SCHED_RANK), without eval().

The scheduler evaluates these expressions for every (VM, host) pair it looks at, so a text is parsed
once into a small AST and then compiled into nested Python closures: evaluating an expression is a
handful of function calls, with no tree walking and no re-parsing. Compiled expressions are cached
by text because thousands of VMs usually share a few templates.

Semantics follow OpenNebula where it is defined and stay predictable where it is not:

* a variable missing from the attributes makes any comparison that reads it false, and counts as
  0 in a rank (so one host without ``CPU_SPEED`` is not an error, it just does not match);
* a string compared with a number is compared numerically if it parses as a number, else false;
* ``=`` / ``!=`` against a string literal holding ``*``, ``?`` or ``[`` is a shell-style glob
  match (OpenNebula uses ``fnmatch``);
* ``LIST @> "x"`` is true when the comma-separated attribute ``LIST`` contains the item ``x``;
* division by zero yields 0, never an exception: a rank must not crash a scheduling cycle;
* ``!`` binds tighter than ``&``, which binds tighter than ``|`` (OpenNebula gives the three one
  precedence level; the usual C order is what an administrator reading ``a & b | c`` expects).
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache, reduce
from typing import Any, Literal

from vocloud.errors import ParseError

__all__ = ["Expr", "compile_rank", "compile_requirements", "trend"]

Attrs = Mapping[str, object]
Pred = Callable[[Attrs], bool]
Num = Callable[[Attrs], float]
Opt = Callable[[Attrs], "float | None"]
Raw = Callable[[Attrs], object]
Kind = Literal["requirements", "rank"]

REQUIREMENTS = "SCHED_REQUIREMENTS"
RANK = "SCHED_RANK"


# --------------------------------------------------------------------------------------- tokens

_OPERATORS = (
    "&&", "||", "==", "!=", ">=", "<=", "@>",
    "=", ">", "<", "!", "&", "|", "(", ")", "+", "-", "*", "/",
)  # fmt: skip
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CANONICAL = {"&&": "&", "||": "|", "==": "="}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["num", "str", "id", "op", "end"]
    value: str
    pos: int  # 0-based offset into the text; columns are pos + 1
    end: int


def _tokenize(text: str, source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch.isspace():
            pos += 1
        elif ch == '"':
            start = pos
            value, pos = _read_string(text, pos, source)
            tokens.append(_Token("str", value, start, pos))
        elif m := _NUMBER.match(text, pos):
            tokens.append(_Token("num", m.group(), pos, m.end()))
            pos = m.end()
        elif m := _IDENT.match(text, pos):
            tokens.append(_Token("id", m.group().upper(), pos, m.end()))
            pos = m.end()
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, pos)), None)
            if op is None:
                raise _error(f"unexpected character {ch!r}", text, pos, source)
            tokens.append(_Token("op", _CANONICAL.get(op, op), pos, pos + len(op)))
            pos += len(op)
    end = len(text.rstrip())
    tokens.append(_Token("end", "", end, end))
    return tokens


def _error(message: str, text: str, pos: int, source: str) -> ParseError:
    """Locates offset ``pos`` as a 1-based line and column: templates may wrap long expressions."""
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return ParseError(message, line, column, source)


def _read_string(text: str, start: int, source: str) -> tuple[str, int]:
    """Reads a double-quoted string with ``\\"`` and ``\\\\`` escapes; returns (value, end)."""
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        ch = text[pos]
        if ch == '"':
            return "".join(out), pos + 1
        if ch == "\\" and pos + 1 < len(text):
            pos += 1
            ch = text[pos]
        out.append(ch)
        pos += 1
    raise _error("unterminated string", text, start, source)


# ------------------------------------------------------------------------------------------ AST


@dataclass(frozen=True, slots=True)
class _Node:
    kind: str  # num str var neg arith cmp not and or
    start: int
    end: int
    value: object = None  # literal value, variable name or operator
    args: tuple[_Node, ...] = ()

    @property
    def is_bool(self) -> bool:
        return self.kind in ("cmp", "not", "and", "or")


class _Parser:
    """Recursive descent over one precedence level per method, lowest first."""

    _CMP = frozenset({"=", "!=", ">", "<", ">=", "<=", "@>"})

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.tokens = _tokenize(text, source)
        self.i = 0

    def error(self, message: str, pos: int) -> ParseError:
        return _error(message, self.text, pos, self.source)

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at_op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.value in ops

    def parse(self) -> _Node:
        if self.peek().kind == "end":
            raise self.error("empty expression", 0)
        node = self.or_()
        tok = self.peek()
        if tok.kind != "end":
            if tok.value == ")":
                raise self.error("unbalanced ')'", tok.pos)
            raise self.error(f"unexpected {_describe(tok)} after a complete expression", tok.pos)
        return node

    def or_(self) -> _Node:
        return self.logical("|", self.and_, "or")

    def and_(self) -> _Node:
        return self.logical("&", self.not_, "and")

    def logical(self, op: str, sub: Callable[[], _Node], kind: str) -> _Node:
        items = [sub()]
        while self.at_op(op):
            self.take()
            items.append(sub())
        if len(items) == 1:
            return items[0]
        flat: list[_Node] = []
        for item in items:
            flat.extend(item.args if item.kind == kind else (item,))
        return _Node(kind, items[0].start, items[-1].end, op, tuple(flat))

    def not_(self) -> _Node:
        if self.at_op("!"):
            tok = self.take()
            operand = self.not_()
            return _Node("not", tok.pos, operand.end, "!", (operand,))
        return self.comparison()

    def comparison(self) -> _Node:
        left = self.additive()
        if not (self.peek().kind == "op" and self.peek().value in self._CMP):
            return left
        op = self.take().value
        right = self.additive()
        if self.peek().kind == "op" and self.peek().value in self._CMP:
            raise self.error("comparisons cannot be chained; join them with '&'", self.peek().pos)
        return _Node("cmp", left.start, right.end, op, (left, right))

    def additive(self) -> _Node:
        return self.arith(("+", "-"), self.multiplicative)

    def multiplicative(self) -> _Node:
        return self.arith(("*", "/"), self.unary)

    def arith(self, ops: tuple[str, ...], sub: Callable[[], _Node]) -> _Node:
        node = sub()
        while self.at_op(*ops):
            op = self.take().value
            right = sub()
            node = _Node("arith", node.start, right.end, op, (node, right))
        return node

    def unary(self) -> _Node:
        if self.at_op("-"):
            tok = self.take()
            operand = self.unary()
            if operand.kind == "num":
                return _Node("num", tok.pos, operand.end, -_as_float(operand.value))
            return _Node("neg", tok.pos, operand.end, "-", (operand,))
        return self.atom()

    def atom(self) -> _Node:
        tok = self.take()
        end = tok.end
        if tok.kind == "num":
            return _Node("num", tok.pos, end, float(tok.value))
        if tok.kind == "str":
            return _Node("str", tok.pos, end, tok.value)
        if tok.kind == "id":
            return _Node("var", tok.pos, end, tok.value)
        if tok.kind == "op" and tok.value == "(":
            inner = self.or_()
            if not self.at_op(")"):
                nxt = self.peek()
                if nxt.kind == "end":
                    raise self.error(f"missing ')' for the '(' at column {tok.pos + 1}", nxt.pos)
                raise self.error(f"expected ')' but found {_describe(nxt)}", nxt.pos)
            self.take()
            return inner
        if tok.kind == "end":
            raise self.error("unexpected end of expression, expected a value", tok.pos)
        raise self.error(f"expected a value but found {_describe(tok)}", tok.pos)


def _describe(tok: _Token) -> str:
    if tok.kind == "end":
        return "end of expression"
    if tok.kind == "str":
        return "a string"
    return repr(tok.value)


def _as_float(value: object) -> float:
    assert isinstance(value, float)
    return value


# -------------------------------------------------------------------------------- type checking


def _check(node: _Node, want_bool: bool, text: str, source: str) -> None:
    """Rejects a condition used as a number and vice versa, before any host is looked at."""
    if want_bool and not node.is_bool:
        raise _error("expected a comparison (e.g. FREE_CPU > 1)", text, node.start, source)
    if not want_bool and node.is_bool:
        raise _error("expected a number, not a condition", text, node.start, source)
    operands_bool = node.kind in ("not", "and", "or")
    for arg in node.args:
        _check(arg, operands_bool, text, source)


def _names(node: _Node) -> frozenset[str]:
    if node.kind == "var":
        return frozenset({str(node.value)})
    return frozenset().union(*(_names(a) for a in node.args))


# ------------------------------------------------------------------------------ value coercion


_NUMERIC_TEXT = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")


@lru_cache(maxsize=4096)
def _parse_number(text: str) -> float | None:
    """Host attributes arrive as strings from templates; parsing is cached because the same few
    values ("2400", "1") are compared over and over."""
    return float(text) if _NUMERIC_TEXT.fullmatch(text) else None


def _number(value: object) -> float | None:
    if type(value) is float or type(value) is int:
        return value
    if isinstance(value, str):
        return _parse_number(value)
    if isinstance(value, int | float):
        return float(value)
    return None


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def _compare(op: str, left: object, right: object) -> bool:
    """The general comparison; the compiler uses faster special cases where it can."""
    if left is None or right is None:
        return False
    if isinstance(left, str) and isinstance(right, str):
        if op in ("=", "!="):
            return _ORDER[op](left, right)
        ln, rn = _parse_number(left), _parse_number(right)
        return _ORDER[op](ln, rn) if ln is not None and rn is not None else _ORDER[op](left, right)
    ln, rn = _number(left), _number(right)
    if ln is None or rn is None:
        return False
    return _ORDER[op](ln, rn)


def _items(value: object) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",")]
    if isinstance(value, list | tuple | set | frozenset):
        return [str(item).strip() for item in value]
    return [] if value is None else [_text(value)]


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


# ------------------------------------------------------------------------------------ compiling


def _compile_bool(node: _Node) -> Pred:
    if node.kind == "not":
        inner = _compile_bool(node.args[0])
        return lambda a: not inner(a)
    if node.kind in ("and", "or"):
        parts = [_compile_bool(arg) for arg in node.args]
        join = _and if node.kind == "and" else _or
        return reduce(join, parts)
    return _compile_cmp(str(node.value), node.args[0], node.args[1])


def _and(f: Pred, g: Pred) -> Pred:
    return lambda a: f(a) and g(a)


def _or(f: Pred, g: Pred) -> Pred:
    return lambda a: f(a) or g(a)


def _compile_cmp(op: str, left: _Node, right: _Node) -> Pred:
    if op == "@>":
        return _compile_contains(left, right)
    if right.kind in ("var", "neg", "arith") and left.kind in ("num", "str"):
        left, right, op = right, left, _MIRROR[op]
    if left.kind == "var" and right.kind == "num":
        return _var_vs_number(str(left.value), op, _as_float(right.value))
    if left.kind == "var" and right.kind == "str":
        return _var_vs_string(str(left.value), op, str(right.value))
    lf, rf = _compile_raw(left), _compile_raw(right)
    return lambda a: _compare(op, lf(a), rf(a))


_MIRROR = {"=": "=", "!=": "!=", ">": "<", "<": ">", ">=": "<=", "<=": ">="}


def _var_vs_number(name: str, op: str, const: float) -> Pred:
    """The overwhelmingly common shape (``FREE_CPU > 1``), kept to one dict lookup and one test."""
    cmp = _ORDER[op]

    def pred(a: Attrs) -> bool:
        v = a.get(name)
        if type(v) is float or type(v) is int:
            return cmp(v, const)
        n = _number(v)
        return n is not None and cmp(n, const)

    return pred


def _var_vs_string(name: str, op: str, const: str) -> Pred:
    if op in ("=", "!=") and _is_glob(const):
        match = re.compile(fnmatch.translate(const)).match
        want = op == "="

        def glob(a: Attrs) -> bool:
            v = a.get(name)
            if v is None:
                return False
            return (match(v if isinstance(v, str) else _text(v)) is not None) is want

        return glob
    if op == "=":

        def equal(a: Attrs) -> bool:
            v = a.get(name)
            return v == const if type(v) is str else _compare(op, v, const)

        return equal
    return lambda a: _compare(op, a.get(name), const)


def _compile_contains(left: _Node, right: _Node) -> Pred:
    lf, rf = _compile_raw(left), _compile_raw(right)
    if right.kind == "str" and _is_glob(str(right.value)):
        match = re.compile(fnmatch.translate(str(right.value))).match
        return lambda a: any(match(item) is not None for item in _items(lf(a)))

    def contains(a: Attrs) -> bool:
        want = rf(a)
        return want is not None and _text(want) in _items(lf(a))

    return contains


def _compile_raw(node: _Node) -> Raw:
    """Operands of a comparison: variables keep their raw type so strings compare as strings."""
    if node.kind in ("num", "str"):
        const = node.value
        return lambda a: const
    if node.kind == "var":
        name = str(node.value)
        return lambda a: a.get(name)
    return _compile_opt(node)


def _compile_opt(node: _Node) -> Opt:
    """Arithmetic inside a requirement: a missing operand makes the whole value missing (None),
    so the comparison that reads it is false rather than silently comparing against 0."""
    if node.kind == "num":
        const = _as_float(node.value)
        return lambda a: const
    if node.kind == "str":
        parsed = _number(node.value)
        return lambda a: parsed
    if node.kind == "var":
        name = str(node.value)
        return lambda a: _number(a.get(name))
    if node.kind == "neg":
        inner = _compile_opt(node.args[0])
        return lambda a: _neg_opt(inner(a))
    lf, rf = _compile_opt(node.args[0]), _compile_opt(node.args[1])
    fn = _ARITH[str(node.value)]
    return lambda a: _arith_opt(fn, lf(a), rf(a))


def _neg_opt(v: float | None) -> float | None:
    return None if v is None else -v


def _arith_opt(fn: Callable[[float, float], float], x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else fn(x, y)


def _div(x: float, y: float) -> float:
    return x / y if y else 0.0


_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _div,
}


def _compile_num(node: _Node) -> Num:
    """Arithmetic inside a rank: missing or non-numeric operands count as 0."""
    if node.kind in ("num", "str"):
        const = _const(node)
        return lambda a: const
    if node.kind == "var":
        return _rank_var(str(node.value))
    if node.kind == "neg":
        return _compile_neg(node.args[0])
    return _compile_binary(str(node.value), node.args[0], node.args[1])


def _const(node: _Node) -> float:
    parsed = _number(node.value)
    return 0.0 if parsed is None else parsed


def _compile_neg(operand: _Node) -> Num:
    if operand.kind == "var":  # striping's -RUNNING_VMS: one call instead of two
        var = _rank_var(str(operand.value))
        return lambda a: -var(a)
    inner = _compile_num(operand)
    return lambda a: -inner(a)


def _compile_binary(op: str, left: _Node, right: _Node) -> Num:
    """Fuses the common ``VAR op constant`` shape into one closure; evaluation order and float
    results are the same as the unfused form, only the number of Python calls drops."""
    constant_right = right.kind in ("num", "str")
    if op == "/" and constant_right and not _const(right):
        return lambda a: 0.0
    fn: Callable[[float, float], float] = operator.truediv if op == "/" and constant_right else _ARITH[op]
    if left.kind == "var" and constant_right:
        return _var_op_const(str(left.value), fn, _const(right))
    if constant_right:
        lf, c = _compile_num(left), _const(right)
        return lambda a: fn(lf(a), c)
    rf = _compile_num(right)
    if left.kind in ("num", "str"):
        c = _const(left)
        return lambda a: fn(c, rf(a))
    lf = _compile_num(left)
    return lambda a: fn(lf(a), rf(a))


def _var_op_const(name: str, fn: Callable[[float, float], float], c: float) -> Num:
    def var_op_const(a: Attrs) -> float:
        v = a.get(name)
        if type(v) is float or type(v) is int:
            return fn(v, c)
        n = _number(v)
        return fn(0.0 if n is None else n, c)

    return var_op_const


def _rank_var(name: str) -> Num:
    def var(a: Attrs) -> float:
        v = a.get(name)
        if type(v) is float or type(v) is int:
            return v
        n = _number(v)
        return 0.0 if n is None else n

    return var


def _finite_rank(fn: Num) -> Num:
    """NaN (from inf - inf) would break the ordering a scheduler relies on; it ranks as 0."""

    def rank(a: Attrs) -> float:
        r = fn(a)
        return r if r == r else 0.0

    return rank


# ---------------------------------------------------------------------------------- public API


@dataclass(frozen=True, slots=True, eq=False)
class Expr:
    """A compiled expression; immutable and safe to share between VMs and threads.

    ``predicate`` and ``evaluate`` are exposed as attributes so that hot loops can bind them once
    instead of paying a method call per evaluation.
    """

    text: str
    names: frozenset[str]
    kind: Kind
    predicate: Pred = field(repr=False)
    evaluate: Num = field(repr=False)
    conjuncts: tuple[Expr, ...] = field(default=(), repr=False)
    tree: _Node | None = field(default=None, repr=False, compare=False)

    def matches(self, attrs: Mapping[str, object]) -> bool:
        return self.predicate(attrs)

    def value(self, attrs: Mapping[str, object]) -> float:
        return self.evaluate(attrs)

    def parts(self) -> tuple[Expr, ...]:
        """The top-level ``&`` operands, so a caller can evaluate the static ones once per host
        and only the dynamic ones after every change."""
        return self.conjuncts or (self,)


def _requirements_expr(text: str, source: str, node: _Node) -> Expr:
    pred = _compile_bool(node)
    conjuncts: tuple[Expr, ...] = ()
    if node.kind == "and":
        conjuncts = tuple(_requirements_expr(source[a.start : a.end], source, a) for a in node.args)
    return Expr(
        text=text,
        names=_names(node),
        kind="requirements",
        predicate=pred,
        evaluate=lambda a: 1.0 if pred(a) else 0.0,
        conjuncts=conjuncts,
        tree=node,
    )


@contextmanager
def _depth_guard(source: str) -> Iterator[None]:
    """Parsing and compiling recurse once per nesting level; a pathological expression (a
    thousand parentheses or terms) is a user error, not a crash."""
    try:
        yield
    except RecursionError:
        raise ParseError("expression is nested too deeply", 1, 1, source) from None


@lru_cache(maxsize=1024)
def compile_requirements(text: str) -> Expr:
    """Compiles a boolean SCHED_REQUIREMENTS expression; raises ParseError on bad syntax."""
    with _depth_guard(REQUIREMENTS):
        node = _Parser(text, REQUIREMENTS).parse()
        _check(node, True, text, REQUIREMENTS)
        return _requirements_expr(text.strip(), text, node)


@lru_cache(maxsize=1024)
def compile_rank(text: str) -> Expr:
    """Compiles a numeric SCHED_RANK expression; raises ParseError on bad syntax."""
    with _depth_guard(RANK):
        node = _Parser(text, RANK).parse()
        _check(node, False, text, RANK)
        fn = _finite_rank(_compile_num(node))
    return Expr(
        text=text.strip(),
        names=_names(node),
        kind="rank",
        predicate=lambda a: fn(a) != 0,
        evaluate=fn,
        tree=node,
    )


def trend(expr: Expr, directions: Mapping[str, int]) -> int | None:
    """How ``expr`` can move when variables move only in the given directions.

    ``directions`` maps a variable to +1 (it can only grow) or -1 (only shrink); other variables
    are constant. The answer is 0 (constant), +1 (a rank can only grow, a requirement can only
    turn from false to true), -1 (the opposite) or None (either way, or unknown). A scheduler
    uses it to know which cached evaluations a placement can invalidate: placements only add load
    to a host, and rounding is monotone, so the answer holds for floating-point evaluation too.
    """
    return _trend(expr.tree, directions) if expr.tree is not None else None


def _trend(node: _Node, dirs: Mapping[str, int]) -> int | None:
    if node.kind in ("num", "str"):
        return 0
    if node.kind == "var":
        return dirs.get(str(node.value), 0)
    subs = [_trend(arg, dirs) for arg in node.args]
    if None in subs:
        return None
    t = [x for x in subs if x is not None]
    if node.kind in ("neg", "not"):
        return -t[0]
    if node.kind in ("and", "or"):
        acc: int | None = 0
        for x in t:
            acc = _combine(acc, x)
        return acc
    if node.kind == "cmp":
        return _cmp_trend(str(node.value), _combine(t[0], -t[1]))
    return _arith_trend(str(node.value), node.args, t[0], t[1])


def _combine(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return None
    if a == 0 or a == b:
        return b
    return a if b == 0 else None


def _cmp_trend(op: str, diff: int | None) -> int | None:
    """``diff`` is the trend of left - right; ``>`` follows it, ``<`` opposes it, and equality
    tests can flip either way unless nothing moves."""
    if diff == 0:
        return 0
    if diff is None or op not in (">", ">=", "<", "<="):
        return None
    return diff if op in (">", ">=") else -diff


def _arith_trend(op: str, args: tuple[_Node, ...], a: int, b: int) -> int | None:
    if op == "+":
        return _combine(a, b)
    if op == "-":
        return _combine(a, -b)
    if a == 0 and b == 0:
        return 0
    left, right = args
    if op == "*" and left.kind == "num":
        return b * _sign(left.value)
    if right.kind == "num":  # x * c or x / c
        return a * _sign(right.value)
    return None


def _sign(value: object) -> int:
    v = _as_float(value)
    return (v > 0) - (v < 0)
