"""Requirement and rank expressions: syntax, semantics, errors and the trend analysis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vocloud.errors import ParseError
from vocloud.model.expr import compile_rank, compile_requirements, trend

HOST = {
    "NAME": "node12",
    "ID": 12,
    "FREE_CPU": 4.0,
    "FREE_MEM": 8192,
    "RUNNING_VMS": 3,
    "HYPERVISOR": "qemu",
    "CLUSTER": "blue",
    "CPU_SPEED": "2400",
    "PCI_DEVICES": "gpu, nvme,fpga",
    "LABEL": "abc",
}


def req(text: str, attrs: dict[str, object] | None = None) -> bool:
    return compile_requirements(text).matches(HOST if attrs is None else attrs)


def rank(text: str, attrs: dict[str, object] | None = None) -> float:
    return compile_rank(text).value(HOST if attrs is None else attrs)


# ------------------------------------------------------------------------------- requirements


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FREE_CPU > 1", True),
        ("FREE_CPU > 4", False),
        ("FREE_CPU >= 4", True),
        ("FREE_CPU < 4", False),
        ("FREE_CPU <= 4", True),
        ("FREE_CPU = 4", True),
        ("FREE_CPU == 4", True),
        ("FREE_CPU != 4", False),
        ("4 < FREE_CPU", False),
        ("1 < FREE_CPU", True),
        ('HYPERVISOR = "qemu"', True),
        ('HYPERVISOR != "qemu"', False),
        ('HYPERVISOR = "kvm"', False),
        ('"qemu" = HYPERVISOR', True),
        ('FREE_CPU > 1 & HYPERVISOR = "qemu"', True),
        ('FREE_CPU > 1 && HYPERVISOR = "kvm"', False),
        ('FREE_CPU > 8 || HYPERVISOR = "qemu"', True),
        ('!(NAME = "host1") | CLUSTER = "red"', True),
        ('!(NAME = "node12") | CLUSTER = "red"', False),
        ("FREE_CPU > -1", True),
        ("FREE_CPU = 4.0", True),
        ("FREE_CPU * 2 > 7.5", True),
        ("FREE_MEM / 1024 = 8", True),
        ("free_cpu > 1", True),
        ('Free_Cpu>1&hypervisor="qemu"', True),
        ("FREE_CPU > .5e1", False),
    ],
)
def test_requirements(text: str, expected: bool) -> None:
    assert req(text) is expected


@pytest.mark.parametrize("a", [0, 1])
@pytest.mark.parametrize("b", [1, 2])
@pytest.mark.parametrize("c", [2, 3])
def test_precedence_not_and_or(a: int, b: int, c: int) -> None:
    attrs: dict[str, object] = {"A": a, "B": b, "C": c}
    assert req("!A = 1 & B = 2 | C = 3", attrs) is ((a != 1 and b == 2) or c == 3)
    # & binds tighter than |, whichever comes first (OpenNebula would group left to right)
    assert req("A = 1 | B = 2 & C = 3", attrs) is (a == 1 or (b == 2 and c == 3))
    assert req("(A = 1 | B = 2) & C = 3", attrs) is ((a == 1 or b == 2) and c == 3)
    assert req("!!(A = 1)", attrs) is (a == 1)


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ('NAME = "node*"', "node12", True),
        ('NAME = "node*"', "xnode12", False),
        ('NAME = "*12"', "node12", True),
        ('NAME = "node?2"', "node12", True),
        ('NAME = "node[0-9]*"', "node12", True),
        ('NAME != "node*"', "node12", False),
        ('NAME != "node*"', "host1", True),
        ('NAME = "NODE*"', "node12", False),  # globs are case-sensitive, as fnmatch in OpenNebula
        ('NAME = "node"', "node12", False),
    ],
)
def test_glob(text: str, name: str, expected: bool) -> None:
    assert req(text, {"NAME": name}) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('PCI_DEVICES @> "gpu"', True),
        ('PCI_DEVICES @> "nvme"', True),  # items are stripped
        ('PCI_DEVICES @> "fpga"', True),
        ('PCI_DEVICES @> "gp"', False),  # whole items, not substrings
        ('PCI_DEVICES @> "g*"', True),
        ('PCI_DEVICES @> "x*"', False),
        ('MISSING @> "gpu"', False),
        ('!(PCI_DEVICES @> "tpu")', True),
        ("ID @> 12", True),
    ],
)
def test_contains(text: str, expected: bool) -> None:
    assert req(text) is expected


def test_contains_accepts_a_real_list() -> None:
    assert req('TAGS @> "b"', {"TAGS": ["a", "b"]})
    assert not req('TAGS @> "c"', {"TAGS": ("a", "b")})


@pytest.mark.parametrize(
    "text",
    [
        "MISSING = 1",
        "MISSING != 1",
        "MISSING > 1",
        "MISSING < 1",
        'MISSING = "x"',
        'MISSING != "x"',
        'MISSING = "x*"',
        'MISSING != "x*"',
        "MISSING * 2 > -100",
        "MISSING = MISSING",
        "FREE_CPU + MISSING > 0",
    ],
)
def test_missing_variable_makes_comparison_false(text: str) -> None:
    assert req(text) is False
    assert req(f"!({text})") is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CPU_SPEED > 2000", True),  # "2400" parses as a number
        ("CPU_SPEED = 2400", True),
        ("CPU_SPEED != 2400", False),
        ("CPU_SPEED < 2000.5", False),
        ('FREE_CPU = "4"', True),
        ('FREE_CPU > "3.5"', True),
        ("LABEL > 1", False),  # "abc" is not a number: false, whatever the operator
        ("LABEL < 1", False),
        ("LABEL = 1", False),
        ("LABEL != 1", False),
        ('LABEL > "abb"', True),  # two strings that are not numbers order as text
        ('CPU_SPEED > "300"', True),  # two numeric strings order as numbers
        ("CPU_SPEED = CPU_SPEED", True),
    ],
)
def test_string_number_comparison(text: str, expected: bool) -> None:
    assert req(text) is expected


def test_names_are_upper_case_and_complete() -> None:
    e = compile_requirements('free_cpu > 1 & (Hypervisor = "kvm" | running_vms * 2 < FREE_MEM)')
    assert e.names == frozenset({"FREE_CPU", "HYPERVISOR", "RUNNING_VMS", "FREE_MEM"})
    assert compile_rank("-running_vms").names == frozenset({"RUNNING_VMS"})


def test_compiled_expressions_are_cached_by_text() -> None:
    assert compile_requirements("FREE_CPU > 1") is compile_requirements("FREE_CPU > 1")
    assert compile_rank("FREE_CPU") is compile_rank("FREE_CPU")


def test_conjuncts_keep_their_source_text() -> None:
    e = compile_requirements('  FREE_CPU > 1 & (HYPERVISOR = "kvm" & NAME != "x*") & (A = 1 | B = 2)')
    assert [p.text for p in e.parts()] == [
        "FREE_CPU > 1",
        'HYPERVISOR = "kvm"',
        'NAME != "x*"',
        "A = 1 | B = 2",
    ]
    single = compile_requirements("A = 1")
    assert single.parts() == (single,)


def test_escaped_quotes_in_strings() -> None:
    assert req(r'LABEL = "a\"b"', {"LABEL": 'a"b'})
    assert req(r'LABEL = "a\\b"', {"LABEL": "a\\b"})


def test_value_of_a_requirement_and_match_of_a_rank() -> None:
    assert compile_requirements("FREE_CPU > 1").value(HOST) == 1.0
    assert compile_requirements("FREE_CPU > 9").value(HOST) == 0.0
    assert compile_rank("FREE_CPU - 4").matches(HOST) is False
    assert compile_rank("FREE_CPU").matches(HOST) is True


# ----------------------------------------------------------------------------------------- ranks


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-RUNNING_VMS", -3),
        ("RUNNING_VMS", 3),
        ("FREE_CPU * 2 + FREE_MEM / 1024", 16),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("10 - 4 - 3", 3),  # left associative
        ("16 / 4 / 2", 2),
        ("- - 2", 2),
        ("-(FREE_CPU - 10)", 6),
        ("2 * -FREE_CPU", -8),
        ("FREE_CPU / 0", 0),
        ("FREE_CPU / (RUNNING_VMS - 3)", 0),
        ("1 + FREE_CPU / MISSING", 1),
        ("MISSING", 0),
        ("MISSING * 5 + 1", 1),
        ("CPU_SPEED / 100", 24),
        ("LABEL + 1", 1),
        ("1.5 * 2", 3),
        ('"7" + 1', 8),
    ],
)
def test_rank(text: str, expected: float) -> None:
    assert rank(text) == pytest.approx(expected)


def test_rank_is_never_nan() -> None:
    assert rank("A - A", {"A": float("inf")}) == 0.0


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("FREE_CPU > ", 11, "unexpected end"),
        ("FREE_CPU >", 11, "unexpected end"),
        ("(FREE_CPU > 1", 14, "missing ')'"),
        ("((A = 1) & B = 2", 17, "missing ')'"),
        ("FREE_CPU > 1)", 13, "unbalanced ')'"),
        ('"unterminated', 1, "unterminated string"),
        ('NAME = "abc', 8, "unterminated string"),
        ("A = 1 = 2", 7, "chained"),
        ("A # 1", 3, "unexpected character '#'"),
        ("A = 1 B = 2", 7, "after a complete expression"),
        ("A = 1 &", 8, "unexpected end"),
        ("& A = 1", 1, "expected a value"),
        ("A = 1 & & B = 2", 9, "expected a value"),
        ("()", 2, "expected a value"),
        ("", 1, "empty"),
        ("   ", 1, "empty"),
        ("FREE_CPU", 1, "expected a comparison"),
        ("A = 1 & FREE_CPU", 9, "expected a comparison"),
        ("(A = 1) + 1 > 0", 2, "expected a number"),
        ("!FREE_CPU", 2, "expected a comparison"),
        ("A = (1", 7, "missing ')'"),
        ("A = 1 ] ", 7, "unexpected character"),
    ],
)
def test_requirement_syntax_errors(text: str, column: int, fragment: str) -> None:
    with pytest.raises(ParseError) as info:
        compile_requirements(text)
    err = info.value
    assert (err.line, err.column) == (1, column), err.message
    assert fragment in err.reason
    assert err.message.startswith(f"SCHED_REQUIREMENTS:1:{column}: ")


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("FREE_CPU > 1", 1, "expected a number"),
        ("FREE_CPU *", 11, "unexpected end"),
        ("-", 2, "unexpected end"),
        ("(FREE_CPU", 10, "missing ')'"),
        ("FREE_CPU FREE_MEM", 10, "after a complete expression"),
        ("2 ^ 3", 3, "unexpected character"),
    ],
)
def test_rank_syntax_errors(text: str, column: int, fragment: str) -> None:
    with pytest.raises(ParseError) as info:
        compile_rank(text)
    assert (info.value.line, info.value.column) == (1, column), info.value.message
    assert fragment in info.value.reason
    assert info.value.message.startswith("SCHED_RANK:")


# ----------------------------------------------------------------------------------------- trend

FILLING = {"FREE_CPU": -1, "FREE_MEM": -1, "USED_CPU": 1, "RUNNING_VMS": 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RUNNING_VMS", 1),
        ("-RUNNING_VMS", -1),
        ("FREE_CPU", -1),
        ("CPU_SPEED", 0),
        ("FREE_MEM / 1024 - RUNNING_VMS * 4", -1),
        ("FREE_CPU * 2 + FREE_MEM / 1024", -1),
        ("-2 * FREE_CPU", 1),
        ("FREE_CPU / -2", 1),
        ("FREE_CPU - RUNNING_VMS", -1),
        ("FREE_CPU + RUNNING_VMS", None),
        ("FREE_CPU * FREE_MEM", None),
        ("1 / FREE_CPU", None),
        ("CPU_SPEED * FREE_CPU", None),
        ("FREE_CPU / 0", 0),
    ],
)
def test_rank_trend(text: str, expected: int | None) -> None:
    assert trend(compile_rank(text), FILLING) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FREE_CPU >= 4 & FREE_MEM > 8192", -1),
        ("RUNNING_VMS < 20", -1),
        ("RUNNING_VMS > 2", 1),
        ("!(FREE_CPU > 2)", 1),
        ("FREE_CPU = 3", None),
        ("FREE_CPU > 1 | RUNNING_VMS > 3", None),
        ('HYPERVISOR = "kvm" & FREE_CPU > 1', -1),
        ('HYPERVISOR = "kvm"', 0),
        ("FREE_CPU > RUNNING_VMS", -1),
        ('PCI_DEVICES @> "gpu"', 0),
        ("RUNNING_VMS @> 1", None),
    ],
)
def test_requirement_trend(text: str, expected: int | None) -> None:
    assert trend(compile_requirements(text), FILLING) == expected


# ------------------------------------------------------------------- generated expressions

VARS = ("A", "B", "C")


def _arith(depth: int) -> st.SearchStrategy[tuple[str, Callable[[dict[str, int]], float]]]:
    leaf = st.one_of(
        st.integers(0, 9).map(lambda n: (str(n), lambda env, n=n: float(n))),
        st.sampled_from(VARS).map(lambda v: (v, lambda env, v=v: float(env[v]))),
    )
    if depth == 0:
        return leaf
    sub = _arith(depth - 1)

    def binary(
        parts: tuple[
            tuple[str, Callable[[dict[str, int]], float]], str, tuple[str, Callable[[dict[str, int]], float]]
        ],
    ) -> tuple[str, Callable[[dict[str, int]], float]]:
        (lt, lf), op, (rt, rf) = parts
        ops: dict[str, Callable[[float, float], float]] = {
            "+": lambda x, y: x + y,
            "-": lambda x, y: x - y,
            "*": lambda x, y: x * y,
            "/": lambda x, y: x / y if y else 0.0,
        }
        return f"({lt} {op} {rt})", lambda env: ops[op](lf(env), rf(env))

    def neg(
        part: tuple[str, Callable[[dict[str, int]], float]],
    ) -> tuple[str, Callable[[dict[str, int]], float]]:
        t, f = part
        return f"-{t}", lambda env: -f(env)

    return st.one_of(leaf, st.tuples(sub, st.sampled_from("+-*/"), sub).map(binary), sub.map(neg))


@settings(max_examples=300, deadline=None)
@given(expr=_arith(3), env=st.fixed_dictionaries({v: st.integers(-5, 5) for v in VARS}))
def test_generated_ranks_match_python_arithmetic(
    expr: tuple[str, Callable[[dict[str, int]], float]], env: dict[str, int]
) -> None:
    text, reference = expr
    assert compile_rank(text).value(env) == pytest.approx(reference(env))
    # whitespace is insignificant
    assert compile_rank(text.replace("(", " ( ")).value(env) == pytest.approx(reference(env))


@settings(max_examples=300, deadline=None)
@given(
    atoms=st.lists(
        st.tuples(
            st.sampled_from(VARS), st.sampled_from(["=", "!=", ">", "<", ">=", "<="]), st.integers(0, 3)
        ),
        min_size=1,
        max_size=5,
    ),
    joins=st.lists(st.sampled_from(["&", "|"]), min_size=4, max_size=4),
    negate=st.lists(st.booleans(), min_size=5, max_size=5),
    env=st.fixed_dictionaries({v: st.integers(0, 3) for v in VARS}),
)
def test_generated_requirements_follow_c_precedence(
    atoms: list[tuple[str, str, int]], joins: list[str], negate: list[bool], env: dict[str, int]
) -> None:
    ops: dict[str, Callable[[int, int], bool]] = {
        "=": lambda x, y: x == y,
        "!=": lambda x, y: x != y,
        ">": lambda x, y: x > y,
        "<": lambda x, y: x < y,
        ">=": lambda x, y: x >= y,
        "<=": lambda x, y: x <= y,
    }
    text_parts: list[str] = []
    truth = [ops[op](env[var], n) != negate[k] for k, (var, op, n) in enumerate(atoms)]
    for k, (var, op, n) in enumerate(atoms):
        text_parts.append(f"{'!' if negate[k] else ''}{var} {op} {n}")
        if k < len(atoms) - 1:
            text_parts.append(joins[k])
    # reference: split at | into runs joined by &, i.e. & binds tighter than |
    groups: list[list[bool]] = [[truth[0]]]
    for k in range(1, len(atoms)):
        if joins[k - 1] == "|":
            groups.append([])
        groups[-1].append(truth[k])
    expected = any(all(g) for g in groups)
    assert compile_requirements(" ".join(text_parts)).matches(env) is expected


def test_errors_in_multi_line_expressions_name_the_line() -> None:
    with pytest.raises(ParseError) as info:
        compile_requirements('FREE_CPU > 1 &\n  HYPERVISOR = "kvm" &\n  NAME # "x"')
    assert (info.value.line, info.value.column) == (3, 8)


@pytest.mark.parametrize(
    "text",
    ["(" * 3000 + "A = 1" + ")" * 3000, " + ".join(["A"] * 5000) + " > 1", "!" * 5000 + "A = 1"],
)
def test_pathological_nesting_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="nested too deeply"):
        compile_requirements(text)
