"""The daemon's files are private to its user: fixed at start where too open, or a refusal.

Why: the data directory holds the store (templates, token hashes), the admin token, the site
secrets and the VMs' run directories (context seeds carry secrets). Created 0755/0644 by an
older version, a hand-made ``mkdir``, an ``rsync`` or a restore, they let every local user read
all of it. At start the daemon therefore checks each path it owns against the loosest mode it
may have (directories 0700, files 0600), removes the extra permission bits and logs each change
(path, old mode -> new mode). A path it cannot fix — owned by another user, or ``chmod`` fails —
stops the start with exit status 2 and a message naming the path and what to do, since serving
on a store anyone can read is worse than not serving.

:func:`decide` is the pure decision (paths and their stat results in, fixes and refusals out);
:func:`observe` and :func:`secure` are the I/O around it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vocloud.config import Settings
from vocloud.errors import VocloudError

log = logging.getLogger("vocloud.daemon")

DIR_MODE = 0o700
FILE_MODE = 0o600
#: Files found inside private directories (run dirs, secrets): only group/other bits go.
PRIVATE = 0o700


class FileModeError(VocloudError):
    """A file the daemon owns is open to other users and the daemon cannot close it."""


@dataclass(frozen=True)
class Rule:
    """``path`` (what it is: ``why``) may have at most the permission bits ``mode``.

    ``follow``: a configured path (data dir, database, token, secrets dir) may be a symlink and
    is judged by its target; entries found by listing a directory never are links (skipped).
    """

    path: Path
    why: str
    directory: bool
    mode: int
    follow: bool = True


@dataclass(frozen=True)
class Seen:
    """What ``lstat``/``stat`` said about a path."""

    mode: int  # permission bits (S_IMODE)
    uid: int
    directory: bool


@dataclass(frozen=True)
class Fix:
    rule: Rule
    old: int
    new: int

    def __str__(self) -> str:
        return f"{self.rule.why} {self.rule.path}: mode {self.old:04o} -> {self.new:04o}"


@dataclass(frozen=True)
class Refusal:
    path: Path
    message: str


def decide(observed: Iterable[tuple[Rule, Seen | None]], uid: int) -> tuple[list[Fix], list[Refusal]]:
    """Which paths to ``chmod`` and which stop the start. Absent paths are fine: the daemon
    creates them private. A path of the wrong kind is refused (the daemon would misuse it)."""
    fixes: list[Fix] = []
    refusals: list[Refusal] = []
    for rule, seen in observed:
        if seen is None:
            continue
        if seen.directory != rule.directory:
            want = "a directory" if rule.directory else "a regular file"
            refusals.append(Refusal(rule.path, f"{rule.why} {rule.path} is not {want}; move it away"))
            continue
        extra = seen.mode & ~rule.mode
        if not extra:
            continue
        new = seen.mode & rule.mode
        if seen.uid != uid:
            refusals.append(Refusal(rule.path, (
                f"{rule.why} {rule.path} has mode {seen.mode:04o}, open to other users, and belongs to "
                f"uid {seen.uid}, not to the daemon's user (uid {uid}), so the daemon will not change "
                f"it: run 'chown {uid} {rule.path}' or, as its owner, 'chmod {new:04o} {rule.path}'")))
            continue
        fixes.append(Fix(rule, seen.mode, new))
    return fixes, refusals


# ------------------------------------------------------------------------------------ I/O

def _stat(path: Path, follow: bool) -> Seen | None:
    try:
        st = path.stat() if follow else path.lstat()
    except FileNotFoundError:
        return None
    return Seen(stat.S_IMODE(st.st_mode), st.st_uid, stat.S_ISDIR(st.st_mode))


def _children(d: Path) -> list[Path]:
    """Entries of a directory that are not symlinks (a link's target is not ours to chmod)."""
    try:
        return sorted(p for p in d.iterdir() if not p.is_symlink())
    except (FileNotFoundError, NotADirectoryError):
        return []


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for PostgreSQL or an in-memory store)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1]
    return Path(path) if path and path != ":memory:" and "///" in url else None


def rules(settings: Settings, sqlite_path: Path | None) -> list[Rule]:
    """Every path the daemon owns that must be private, as far as a listing shows them now."""
    data = settings.data_dir
    out = [Rule(data, "data directory", True, DIR_MODE)]
    if sqlite_path is not None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            out.append(Rule(Path(f"{sqlite_path}{suffix}"), "database file", False, FILE_MODE))
    out += [Rule(data / "admin.token", "admin token", False, FILE_MODE),
            Rule(data / "vocloud.toml", "settings file (may hold the database password)", False,
                 FILE_MODE)]
    secrets = settings.secrets_path
    out.append(Rule(secrets, "secrets directory", True, DIR_MODE))
    out += [Rule(p, "secret", p.is_dir(), DIR_MODE if p.is_dir() else FILE_MODE, follow=False)
            for p in _children(secrets)]
    for name, what in (("qemu", "VM run directories"), ("sim", "sim VM directory")):
        out.append(Rule(data / name, what, True, DIR_MODE))
    for run in _children(data / "qemu"):  # each holds a VM's spec and context seed (secrets)
        if run.is_dir():
            out.append(Rule(run, "VM run directory", True, DIR_MODE, follow=False))
            out += [Rule(f, "VM run file", f.is_dir(), PRIVATE, follow=False) for f in _children(run)]
    return out


def observe(rules_: Sequence[Rule]) -> list[tuple[Rule, Seen | None]]:
    return [(r, _stat(r.path, r.follow)) for r in rules_]


def apply(fixes: Sequence[Fix]) -> list[Refusal]:
    """``chmod`` each fix; one that fails becomes a refusal."""
    failed: list[Refusal] = []
    for fix in fixes:
        try:
            os.chmod(fix.rule.path, fix.new)
        except OSError as exc:
            failed.append(Refusal(fix.rule.path, (
                f"{fix.rule.why} {fix.rule.path} has mode {fix.old:04o}, open to other users, and "
                f"chmod {fix.new:04o} failed: {exc.strerror}; fix its mode and start again")))
            continue
        log.warning("file mode fixed, it was open to other users: %s", fix)
    return failed


def secure(settings: Settings, uid: int | None = None) -> list[Fix]:
    """Fix what can be fixed, log it, and raise :class:`FileModeError` naming every path that
    cannot be (nothing is changed then)."""
    uid = os.geteuid() if uid is None else uid
    fixes, refusals = decide(observe(rules(settings, sqlite_file(settings.database_url))), uid)
    if not refusals:
        refusals = apply(fixes)
    if refusals:
        raise FileModeError("refusing to start, files would be open to other users: "
                            + "; ".join(r.message for r in refusals))
    return fixes
