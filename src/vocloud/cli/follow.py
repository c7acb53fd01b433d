"""``vm log --follow``: what is new in a console tail since the last read.

The daemon answers with the *tail* of the console (at most 64 KiB), so two reads overlap by an
unknown amount and the start of the window moves as the guest prints. What is new is what follows
the longest suffix of the previous text that the new text starts with... which is quadratic to
find naively; instead the last ``ANCHOR`` characters of the previous read are located in the new
one (searching from the end), and everything after them is new. When they cannot be found (the
guest printed more than a window between two reads, or the console was reset by a reboot) the
whole new text is printed, after a marker line, so nothing is silently lost.
"""

from __future__ import annotations

ANCHOR = 256
GAP = "[... console skipped ahead: more than one window was printed between two reads ...]\n"


def new_part(old: str, new: str) -> str:
    """The text of ``new`` not already shown in ``old`` (both tails of one growing console)."""
    if not old:
        return new
    if new == old:
        return ""
    if new.startswith(old):
        return new[len(old):]
    anchor = old[-ANCHOR:]
    at = new.find(anchor)
    if at >= 0:
        return new[at + len(anchor):]
    return GAP + new
