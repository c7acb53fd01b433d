"""VO mapping rules: shorthands, inline rules, rules files, and bad rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from vocloud.errors import InvalidInput
from vocloud.sim.swf import read_swf
from vocloud.sim.synth import swf_line, swf_text
from vocloud.sim.vomap import UNMAPPED, map_vos, parse_rules


@pytest.fixture
def table(tmp_path: Path):  # type: ignore[no-untyped-def]
    lines = [
        swf_line(1, 0, 5, group=2, user=7, queue=1),
        swf_line(2, 1, 5, group=3, user=8, queue=2),
        swf_line(3, 2, 5, group=-1, user=-1, queue=9),
        swf_line(4, 3, 5, group=2, user=8, queue=2),
    ]
    p = tmp_path / "t.swf"
    p.write_text(swf_text(lines))
    return read_swf(p).jobs


def vos(table, spec: str) -> list[str]:  # type: ignore[no-untyped-def]
    codes, names = map_vos(table, parse_rules(spec))
    return [names[c] for c in codes]


def test_shorthands(table) -> None:  # type: ignore[no-untyped-def]
    assert vos(table, "group") == ["g2", "g3", "unknown", "g2"]
    assert vos(table, "user") == ["u7", "u8", "unknown", "u8"]
    assert vos(table, "queue") == ["short", "long", "q9", "long"]  # names from the header
    assert vos(table, "single") == ["all"] * 4


def test_inline_rules_first_match_wins_and_unmatched_is_reported(table) -> None:  # type: ignore[no-untyped-def]
    assert vos(table, "rules:group=2:atlas,user=8:cms") == ["atlas", "cms", UNMAPPED, "atlas"]


def test_rules_file(tmp_path: Path, table) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "vo.rules"
    f.write_text("# site mapping\nqueue long lhcb\ngroup (\\d) grp\\1  # group digits\n* * other\n")
    assert vos(table, str(f)) == ["grp2", "lhcb", "other", "lhcb"]
    assert vos(table, f"file:{f}") == ["grp2", "lhcb", "other", "lhcb"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("group 2\n", r"vo\.rules:1: expected 'FIELD REGEX VO'"),
        ("color 2 x\n", "unknown field 'color'"),
        ("group ( x\n", "bad regular expression"),
        ("# nothing\n", "no VO rules"),
    ],
)
def test_bad_rules_files(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "vo.rules"
    f.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        parse_rules(str(f))


def test_bad_specs(table) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match="not a shorthand"):
        parse_rules("groups")
    with pytest.raises(InvalidInput, match="FIELD=REGEX:VO"):
        parse_rules("rules:group2atlas")
    with pytest.raises(InvalidInput, match="invalid VO name"):
        map_vos(table, parse_rules("rules:group=2:bad name"))
