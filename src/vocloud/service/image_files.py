"""Image files coming into the repository: streamed to disk, hashed on the way, judged by qemu-img.

Why here and not in a driver: what a user may put into the repository is an authorization
decision (issue 9), made once in the service layer for every front-end. ``qemu-img info`` is
the judge of the content, never the file's name or the user's word: only qcow2 and raw are
accepted, a qcow2 that names a backing file or an external data file is refused (it would make
the hypervisor open a host path of the user's choosing), and a declared format must be the one
qemu reads (a "raw" image that is really a qcow2 header would be probed as qcow2 elsewhere).

Nothing here touches the database; the callers keep every checksum and ``qemu-img`` run outside
any write transaction (a 3 GiB checksum once stalled every other write for 5.9 s).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocloud.errors import Conflict, DriverError, InvalidInput, QuotaExceeded

FORMATS = ("qcow2", "raw")
MIB = 1 << 20
INFO_TIMEOUT_S = 60.0
# qemu-img parses hostile headers: bound its address space and CPU time (as OpenStack does)
INFO_LIMITS = ["prlimit", f"--as={1 << 30}", "--cpu=30"]


def mib_of(size: int) -> int:
    """Bytes to whole MiB, rounded up (what the quota and ``size_mib`` count)."""
    return (size + MIB - 1) // MIB


def check_format(fmt: str | None) -> str | None:
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}", attribute="format")
    return fmt


@dataclass(frozen=True, slots=True)
class Verdict:
    format: str
    virtual_size: int


def judge(doc: dict[str, Any], claimed: str | None, what: str) -> Verdict:
    """Decide on ``qemu-img info --output=json`` of an incoming file (pure)."""
    fmt = doc.get("format")
    if fmt not in FORMATS:
        raise InvalidInput(f"format: {what} is a {fmt!r} image; only qcow2 and raw are accepted "
                           "(convert it with qemu-img convert -O qcow2)", attribute="format")
    backing = doc.get("full-backing-filename") or doc.get("backing-filename")
    if backing:
        raise InvalidInput(f"{what} is a qcow2 with a backing file ({backing!r}); only standalone "
                           "images are accepted (flatten it with qemu-img convert -O qcow2)",
                           attribute="backing_file")
    data = (doc.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        raise InvalidInput(f"{what} is a qcow2 with an external data file ({data['data-file']!r}); "
                           "only standalone images are accepted", attribute="data_file")
    if data.get("corrupt"):
        raise InvalidInput(f"{what} is a corrupt qcow2 (qemu-img check -r all may repair it)")
    if claimed is not None and claimed != fmt:
        raise InvalidInput(f"format: {what} was declared {claimed} but qemu-img reads it as {fmt}",
                           attribute="format")
    try:
        vsize = int(doc.get("virtual-size", 0))
    except (TypeError, ValueError):
        vsize = 0
    return Verdict(str(fmt), vsize)


def qemu_info(path: Path, what: str) -> dict[str, Any]:
    """``qemu-img info`` of a file we hold (no ``-U``: nothing else may have it open)."""
    prefix = INFO_LIMITS if shutil.which("prlimit") else []
    argv = [*prefix, "qemu-img", "info", "--output=json", "--", str(path)]
    try:
        result = subprocess.run(argv, capture_output=True, timeout=INFO_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise DriverError("qemu-img is not installed on the front-end (Debian: qemu-utils); "
                          "images cannot be checked") from None
    except subprocess.TimeoutExpired:
        raise InvalidInput(f"{what}: qemu-img info took longer than {INFO_TIMEOUT_S:g} s") from None
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().replace(str(path), "<file>")
        raise InvalidInput(f"{what} is not a readable image: {reason[:500]}")
    try:
        doc = json.loads(result.stdout)
    except ValueError:
        raise InvalidInput(f"{what}: qemu-img info printed no JSON") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{what}: qemu-img info printed no JSON object")
    return doc


def sha256_file(path: Path) -> tuple[int, str]:
    """Size and sha256 of a regular file, read once through a descriptor that follows no link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"path: {path} is not a regular file", attribute="path")
        h = hashlib.sha256()
        size = 0
        while chunk := f.read(MIB):
            h.update(chunk)
            size += len(chunk)
        return size, h.hexdigest()


class Sink:
    """An upload in flight: a ``.upload-<random>.part`` file (0600) in the datastore, the sha256
    and size kept while the bytes arrive, and a byte limit (the quota room) enforced per chunk.

    ``abort`` (idempotent) removes the temp file; ``commit_to`` renames it to a random name.
    """

    def __init__(self, directory: Path, limit: int | None, what: str) -> None:
        self.directory = directory
        self.limit = limit
        self.what = what
        self.size = 0
        self._hash = hashlib.sha256()
        self.path = directory / f".upload-{secrets.token_hex(12)}.part"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileNotFoundError:
            raise Conflict(f"datastore directory {directory} does not exist") from None
        self._file: Any = os.fdopen(fd, "wb", buffering=0)

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise InvalidInput("upload already finished")
        if self.limit is not None and self.size + len(chunk) > self.limit:
            self.abort()
            raise QuotaExceeded(f"{self.what}: the upload passed the remaining image quota of "
                                f"{self.limit // MIB} MiB; nothing was kept", attribute="image_mib")
        try:
            self._file.write(chunk)
        except OSError as exc:
            self.abort()
            raise Conflict(f"{self.what}: cannot write into the datastore: {exc.strerror}") from None
        self._hash.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        """Flush to disk (the repository must survive a crash once the row exists)."""
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def commit_to(self, fmt: str) -> Path:
        """Rename into place under a random name (never the user's text)."""
        self.close()
        final = self.directory / f"{secrets.token_hex(16)}.{fmt}"
        os.rename(self.path, final)
        self.path = final
        return final

    def abort(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
