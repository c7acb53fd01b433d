"""Slurm hostlist expressions: expand and compress as ``scontrol show hostnames|hostlist`` do."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocloud.batch.hostlist import MAX_HOSTS, compress, expand
from vocloud.errors import InvalidInput


@pytest.mark.parametrize(("expr", "names"), [
    ("c1", ["c1"]),
    ("node[1-3,5],gpu01", ["node1", "node2", "node3", "node5", "gpu01"]),
    ("n[08-11]", ["n08", "n09", "n10", "n11"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("n[1-2]-ib", ["n1-ib", "n2-ib"]),
    (" a , b ", ["a", "b"]),
    ("", []),
    ("c1,c1", ["c1", "c1"]),  # duplicates kept, as scontrol show hostnames keeps them
    ("vo.site-01", ["vo.site-01"]),
])
def test_expand(expr: str, names: list[str]) -> None:
    assert expand(expr) == names


@pytest.mark.parametrize(("expr", "why"), [
    ("n[1-3", "without ']'"),
    ("n1-3]", "without '['"),
    ("n[[1]]", "nested"),
    ("n[3-1]", "backwards"),
    ("n[a-b]", "not a number"),
    ("n[1-]", "not a number"),
    ("n[]", "not a number"),
    ("bad name", "not a host name"),
    ("n;rm", "not a host name"),
    (f"n[0-{MAX_HOSTS}]", "more than"),
    ("a[0-999]b[0-9999]", "more than"),
])
def test_expand_refuses_bad_expressions(expr: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why.replace("[", r"\[")):
        expand(expr)


@pytest.mark.parametrize(("names", "expr"), [
    (["node1", "node2", "node3", "node5", "gpu01"], "node[1-3,5],gpu01"),
    (["c2", "c1"], "c[1-2]"),
    (["c1", "c1"], "c1"),
    (["n9", "n10", "n11"], "n[9-11]"),
    (["n01", "n02", "n10"], "n[01-02,10]"),
    (["n1", "n01"], "n1,n01"),  # two different hosts: padding kept apart
    (["login", "c1"], "login,c1"),
    ([], ""),
])
def test_compress(names: list[str], expr: str) -> None:
    assert compress(names) == expr


_names = st.lists(st.builds(lambda p, n, w: f"{p}{str(n).zfill(w)}",
                            st.sampled_from(["c", "gpu", "n-", "rack1n"]),
                            st.integers(0, 300), st.sampled_from([0, 0, 2, 3])), max_size=40)


@given(_names)
def test_compress_then_expand_gives_the_same_hosts(names: list[str]) -> None:
    assert sorted(set(expand(compress(names)))) == sorted(set(names))


@given(_names)
def test_compress_is_stable(names: list[str]) -> None:
    once = compress(names)
    assert compress(expand(once)) == once
