"""``vm log --follow``: the new part of a moving console tail, never lost, never repeated."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vocloud.cli.follow import ANCHOR, GAP, new_part


def test_growing_console() -> None:
    assert new_part("", "boot\n") == "boot\n"
    assert new_part("boot\n", "boot\n") == ""
    assert new_part("boot\n", "boot\nready\n") == "ready\n"


def test_window_moved_past_the_start() -> None:
    old = "".join(f"line {i}\n" for i in range(100))
    new = old[300:] + "line 100\n"  # the 64 KiB window dropped its head as the guest printed
    assert new_part(old, new) == "line 100\n"


def test_too_much_between_two_reads_is_marked_not_hidden() -> None:
    old = "x" * 10 + "".join(f"a{i}" for i in range(200))
    new = "".join(f"b{i}" for i in range(300))
    assert new_part(old, new) == GAP + new


@given(st.lists(st.text(alphabet="abc ", max_size=40), min_size=1, max_size=120),
       st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=4000))
def test_appended_lines_are_never_lost_whatever_the_window(texts: list[str], n_new: int, drop: int) -> None:
    # numbered lines, as a booting guest prints (a timestamp or counter on each)
    lines = [f"[{i:5d}] {t}\n" for i, t in enumerate(texts)]
    more = "".join(f"[{len(lines) + i:5d}] more\n" for i in range(n_new))
    console = "".join(lines)
    drop = max(0, min(drop, len(console) - ANCHOR))  # a window keeps at least the last read's anchor
    got = new_part(console, (console + more)[drop:])
    assert got == more
