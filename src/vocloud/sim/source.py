"""Opening trace files: plain or gzip, detected by content rather than by name.

Archive files are often renamed or re-compressed; trusting the ``.gz`` suffix would either fail on
a plain file called ``x.swf.gz`` or feed compressed bytes to the parser. The two magic bytes are
the reliable signal. Decompression errors surface while *iterating*, so :func:`iter_lines` turns
them into a typed error that names the file and how far the read got.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from vocloud.errors import InvalidInput

GZIP_MAGIC = b"\x1f\x8b"


def open_text(path: Path) -> IO[str]:
    """Open ``path`` for reading text, decompressing when it starts with the gzip magic."""
    try:
        with path.open("rb") as probe:
            magic = probe.read(2)
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file", path=str(path)) from None
    except IsADirectoryError:
        raise InvalidInput(f"{path}: is a directory, not a trace file", path=str(path)) from None
    except PermissionError:
        raise InvalidInput(f"{path}: permission denied", path=str(path)) from None
    # latin-1 maps every byte to a character, so a stray binary byte becomes a parse error on
    # its own line instead of aborting the whole read with a UnicodeDecodeError.
    if magic == GZIP_MAGIC:
        raw = gzip.open(path, "rb")  # noqa: SIM115 - handed to the wrapper, closed by the caller
        return io.TextIOWrapper(raw, encoding="latin-1", newline=None)
    return path.open("r", encoding="latin-1", newline=None)


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` from ``path``, 1-based, without the newline.

    A truncated or corrupt gzip stream raises :class:`InvalidInput` naming the file and the
    number of lines read before the damage, so the user knows the file, not the code, is broken.
    """
    n = 0
    with open_text(path) as fh:
        try:
            for n, line in enumerate(fh, start=1):
                yield n, line.rstrip("\r\n")
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            raise InvalidInput(
                f"{path}: compressed data is truncated or corrupt after {n} complete lines "
                f"({exc}); re-download the trace or check it with 'gzip -t'",
                path=str(path),
                lines_read=n,
            ) from None
