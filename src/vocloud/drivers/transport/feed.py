"""The protocol both transports' ``feed`` speak: a host command asks for data by printing a line.

The command prints ``SEND`` (send everything) or ``SEND <argument>`` (e.g. the offset it wants
the data from, when it kept part of an earlier transfer) once it is ready, typically after taking
a lock; the caller's :data:`Source` turns that argument into the chunks to stream. A command that
prints no such line is sent nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

#: Given the ready line's argument (``b""`` when there is none), the chunks to send.
Source = Callable[[bytes], Iterable[bytes]]


def ready_argument(line: bytes, ready: bytes) -> bytes | None:
    """``b""`` for a line ``ready``, ``b"arg"`` for ``ready arg``, None for any other line."""
    text = line.rstrip(b"\r\n")
    if text == ready:
        return b""
    if text.startswith(ready + b" "):
        return text[len(ready) + 1:].strip()
    return None


def close_quietly(chunks: Iterable[bytes]) -> None:
    """Close a generator the stream stopped reading (it may hold the image file open)."""
    close = getattr(chunks, "close", None)
    if callable(close):
        close()
