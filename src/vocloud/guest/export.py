"""Build the read-only tree a worker guest mounts as its root over virtio-9p.

The standard worker runs the *site's* batch daemon (``slurmd`` + ``munged``, or ``sge_execd``)
from the hypervisor, byte for byte (docs/worker.md). Exporting the hypervisor's whole ``/`` did
that, but also gave guest root — which a VO that boots its own image has — a read of every host
file: the munge key, ``/etc/shadow``, the daemon's data directory. This module builds instead a
dedicated tree holding only what a worker needs:

* the batch daemons and what they execute (``slurmstepd``; ``sge_shepherd`` and the package's
  architecture directory), a shell and a small job userland (``sleep``, ``hostname``, ...);
* their shared libraries and the ELF interpreter, resolved with ``ldd``; Slurm's plugin directory
  (plugins are ``dlopen``'d, so ``ldd`` of the daemons does not name them) and its libraries;
* a minimal ``/etc``: ``passwd``/``group`` cut down to the daemons' users (password fields
  ``x``), ``nsswitch.conf`` with ``files`` only, ``hosts``, ``ld.so.cache``, ``services``;
* the site's batch configuration, given with ``--include`` (Slurm runs configless: nothing; for
  Grid Engine the cell's ``$SGE_ROOT``) and empty directories it names (``--mkdir``: spools).

Nothing else: no ``/root``, ``/home``, data directories, ``shadow`` or munge key (the key travels
in each VM's own context, docs/secrets.md). Two guards hold whatever the inputs say: a host file
that is not world-readable is never exported (``shadow``, keys, tokens, ``vocloud.db`` are all
0600/0640/0400), and paths under :data:`DENIED` are refused.

Files are hard-linked (copied across filesystems), so a tree costs inodes, not bytes. The build
goes into a temp directory next to the destination and is renamed into place, and the tree
records the key of its inputs (every exported path with its size, mtime and mode, the generated
``/etc`` files, the format): building again with the same inputs is a no-op. Run it as
``python -m vocloud.guest.export --dest DIR [--batch slurm|gridengine] [--include PATH ...]``.

The planning (which files, from which binaries and which ``ldd`` output) is pure and separate
from the copying, so it is unit-tested on recorded ``ldd`` output.
"""

from __future__ import annotations

import argparse
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from vocloud.drivers.vmm.qemu import EXPORT_MANIFEST
from vocloud.guest.build import cache_root

#: Bumped when the tree's layout changes in a way the inputs below do not capture.
EXPORT_FORMAT = 1
MANIFEST = EXPORT_MANIFEST  # the qemu driver exports only directories holding it
BATCH_SYSTEMS = ("slurm", "gridengine")

#: Never exported, whatever ``--include`` or a symlink says (the guard behind the world-readable
#: rule: these hold secrets or other tenants' data even where a mode is loose).
DENIED = ("/root", "/home", "/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-",
          "/etc/munge", "/etc/ssh", "/etc/sudoers", "/etc/sudoers.d", "/var/lib/vocloud",
          "/var/lib/munge", "/proc", "/sys", "/dev", "/run")

#: A shell and what jobs and the daemons' wrapper scripts commonly run (Grid Engine's
#: ``gridengine-wrapper`` and ``util/arch`` are shell scripts). Missing ones are skipped.
USERLAND = ("sh", "dash", "bash", "env", "sleep", "true", "false", "hostname", "cat", "echo",
            "printf", "test", "[", "id", "ls", "uname", "date", "mkdir", "rm", "cp", "mv", "ln",
            "chmod", "touch", "head", "tail", "wc", "sort", "cut", "tr", "grep", "sed", "awk",
            "mawk", "expr", "basename", "dirname", "mktemp", "getconf", "which", "kill", "ps",
            "stat", "readlink", "nproc", "whoami")

#: Top-level links of a merged-/usr system, kept as links (never walked).
MERGED_USR = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

#: Users (and their primary groups) the tree's passwd/group keep, per batch system.
BASE_USERS = ("root", "daemon", "nobody")
BATCH_USERS = {"slurm": ("slurm", "munge"), "gridengine": ("sgeadmin",)}
BASE_GROUPS = ("root", "daemon", "nogroup", "tty")

#: Mount points and writable places the guest's init needs (the tree itself is read-only).
MOUNT_POINTS = {"/proc": 0o555, "/sys": 0o555, "/dev": 0o755, "/run": 0o755, "/tmp": 0o1777,
                "/var/tmp": 0o1777, "/root": 0o700, "/etc": 0o755, "/var": 0o755}
BATCH_DIRS = {"slurm": ("/var/spool/slurmd", "/var/log/slurm", "/var/lib/slurm", "/etc/slurm",
                        "/var/log/munge", "/var/lib/munge"),
              "gridengine": ("/var/spool/gridengine",)}

NSSWITCH = ("# vocloud worker export: local files only, names also from DNS\n"
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
            "networks: files\nprotocols: files\nservices: files\n")
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
#: Host /etc files copied as they are: public, and what libc and the daemons read.
ETC_COPIES = ("/etc/ld.so.cache", "/etc/services", "/etc/protocols")


class ExportError(RuntimeError):
    """The tree cannot be built as asked (a denied path, a library ``ldd`` cannot find, ...)."""


# ---------------------------------------------------------------- pure: what goes in


def parse_ldd(text: str, single: str | None = None) -> dict[str, list[str]]:
    """``ldd`` output -> {file: [absolute paths of its libraries and interpreter]}.

    ``ldd a b`` prints a ``a:`` header before each file's lines; ``ldd a`` prints none, so the
    caller names it (``single``). ``linux-vdso.so.1`` has no file; a library ``not found`` is
    kept as ``"!name"`` so that :func:`file_set` can refuse it for a daemon (which would only
    fail inside the guest, much later and less clearly) and ignore it for a helper found in a
    directory tree (Grid Engine's ``*.bin`` tools get their library path from a wrapper).
    Files that are not dynamic ("not a dynamic executable", "statically linked") map to ``[]``.
    """
    result: dict[str, list[str]] = {}
    current = single
    if single is not None:
        result[single] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not raw[:1].isspace() and line.endswith(":"):
            current = line[:-1]
            result.setdefault(current, [])
            continue
        if current is None:
            raise ExportError(f"ldd output line before any file header: {raw!r}")
        if "not found" in line and "=>" in line:
            result[current].append("!" + line.split("=>", 1)[0].strip())
            continue
        m = re.match(r"^(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)$", line)
        if m:
            result[current].append(m.group(1))
    return result


def file_set(roots: Iterable[str], ldd: Mapping[str, Sequence[str]],
             required: Iterable[str] = ()) -> list[str]:
    """The sorted union of ``roots`` and every library ``ldd`` names for any of them.

    A library ``ldd`` could not find is an error for a ``required`` file (the daemons) and is
    left out for the others.
    """
    wanted = set(roots)
    needed = set(required)
    for name, libs in ldd.items():
        for lib in libs:
            if not lib.startswith("!"):
                wanted.add(lib)
            elif name in needed:
                raise ExportError(f"{name}: library {lib[1:]} not found")
    for path in wanted:
        if not path.startswith("/"):
            raise ExportError(f"not an absolute path: {path!r}")
    return sorted(wanted)


def denied(path: str) -> str | None:
    """The :data:`DENIED` entry that covers ``path`` (after normalising ``..``), else None."""
    norm = os.path.normpath(path)
    for d in DENIED:
        if norm == d or norm.startswith(d + "/"):
            return d
    return None


def filter_passwd(text: str, users: Iterable[str]) -> tuple[str, dict[str, str]]:
    """Keep the ``passwd`` lines of ``users`` with the password field set to ``x``.

    Returns the text and {user: primary gid} (for :func:`filter_group`).
    """
    keep = set(users)
    lines, gids = [], {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] in keep:
            fields[1] = "x"
            gids[fields[0]] = fields[3]
            lines.append(":".join(fields))
    return "".join(f"{line}\n" for line in lines), gids


def filter_group(text: str, groups: Iterable[str], gids: Iterable[str], users: Iterable[str]) -> str:
    """Keep the groups named or holding a kept user's primary gid; members cut to kept users."""
    names, numbers, members = set(groups), set(gids), set(users)
    out = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 4 and (fields[0] in names or fields[2] in numbers):
            fields[1] = "x"
            fields[3] = ",".join(m for m in fields[3].split(",") if m in members)
            out.append(":".join(fields))
    return "".join(f"{line}\n" for line in out)


@dataclass(frozen=True, slots=True)
class Selection:
    """What a batch system's worker needs from the host, before libraries are resolved."""

    batch: str
    binaries: tuple[str, ...]
    trees: tuple[str, ...]
    users: tuple[str, ...]
    dirs: tuple[str, ...]
    includes: tuple[str, ...] = ()
    mkdirs: tuple[str, ...] = ()
    extra_users: tuple[str, ...] = field(default=())


def selection(batch: str, binaries: Sequence[str], trees: Sequence[str],
              includes: Sequence[str] = (), mkdirs: Sequence[str] = (),
              users: Sequence[str] = ()) -> Selection:
    """Check a request for a tree: a known batch system, absolute paths, nothing denied."""
    if batch not in BATCH_SYSTEMS:
        raise ExportError(f"unknown batch system {batch!r}: one of {', '.join(BATCH_SYSTEMS)}")
    for what, paths in (("--include", includes), ("--mkdir", mkdirs)):
        for p in paths:
            if not p.startswith("/"):
                raise ExportError(f"{what} {p!r} is not an absolute path")
            if (d := denied(p)) is not None:
                raise ExportError(f"{what} {p!r} is under {d}, which is never exported")
    for u in users:
        if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", u):
            raise ExportError(f"--user {u!r} is not a user name")
    return Selection(batch, tuple(binaries), tuple(trees),
                     (*BASE_USERS, *BATCH_USERS[batch], *users),
                     tuple(MOUNT_POINTS) + BATCH_DIRS[batch], tuple(includes), tuple(mkdirs),
                     tuple(users))


# ---------------------------------------------------------------- host: what exists here


def host_binaries(batch: str) -> tuple[list[str], list[str]]:
    """(binaries, directory trees) of ``batch`` on this host, as absolute paths."""
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    tools = [t for name in USERLAND if (t := shutil.which(name, path=path))]
    if not any(Path(t).name == "sh" for t in tools):
        raise ExportError("no /bin/sh on this host")
    if batch == "slurm":
        daemons = ["slurmd", "slurmstepd", "munged"]
        trees = sorted(glob.glob("/usr/lib/*/slurm-wlm")) or sorted(glob.glob("/usr/lib*/slurm"))
        if not trees:
            raise ExportError("no Slurm plugin directory (/usr/lib/<arch>/slurm-wlm): "
                              "apt-get install slurmd")
    else:
        # the execd starts each job's sge_shepherd from binary_path (/usr/sbin on Debian)
        daemons = ["sge_execd", "sge_shepherd", "sge_coshepherd"]
        trees = [p for p in ("/usr/lib/gridengine", "/var/lib/gridengine/bin",
                             "/var/lib/gridengine/lib", "/var/lib/gridengine/utilbin",
                             "/var/lib/gridengine/util", "/usr/share/gridengine/gridengine-wrapper",
                             "/etc/default/gridengine")
                 if os.path.lexists(p)]
    found = []
    for name in daemons:
        exe = shutil.which(name, path=path)
        if exe is None:
            raise ExportError(f"{name} is not installed on this host")
        found.append(exe)
    return found + tools, trees


def _walk(paths: Iterable[str]) -> list[str]:
    """Every file, directory and symlink under ``paths`` (symlinks not followed here)."""
    out: list[str] = []
    for top in paths:
        out.append(top)
        if os.path.isdir(top) and not os.path.islink(top):
            for dirpath, dirnames, filenames in os.walk(top):
                out.extend(os.path.join(dirpath, n) for n in sorted(dirnames + filenames))
    return out


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def run_ldd(files: Sequence[str]) -> dict[str, list[str]]:
    """``ldd`` over the ELF files among ``files``, batched (one process per 64 files)."""
    elves = sorted({os.path.realpath(f) for f in files if os.path.isfile(f) and _is_elf(f)})
    result: dict[str, list[str]] = {}
    for i in range(0, len(elves), 64):
        chunk = elves[i:i + 64]
        proc = subprocess.run(["ldd", *chunk], capture_output=True, text=True, check=False)
        result.update(parse_ldd(proc.stdout, single=chunk[0] if len(chunk) == 1 else None))
    return result


def etc_files(sel: Selection) -> dict[str, bytes]:
    """The generated /etc files (the host's passwd/group cut down; fixed nsswitch and hosts)."""
    passwd, gids = filter_passwd(Path("/etc/passwd").read_text(), sel.users)
    group = filter_group(Path("/etc/group").read_text(),
                         (*BASE_GROUPS, *BATCH_USERS[sel.batch]), gids.values(), sel.users)
    return {"/etc/passwd": passwd.encode(), "/etc/group": group.encode(),
            "/etc/nsswitch.conf": NSSWITCH.encode(), "/etc/hosts": HOSTS.encode()}


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the tree will hold; ``key`` names it (same inputs -> same key -> no rebuild)."""

    selection: Selection
    paths: tuple[str, ...]          # host paths placed as they are (files, dirs, symlinks)
    generated: Mapping[str, bytes]  # tree path -> content
    dirs: tuple[str, ...]           # empty directories
    skipped: tuple[str, ...]        # host paths left out (not world-readable)
    key: str


def _readable(st: os.stat_result) -> bool:
    if stat.S_ISLNK(st.st_mode):
        return True
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
    return st.st_mode & need == need


def _expand_links(paths: Iterable[str]) -> list[str]:
    """``paths`` plus every symlink on the way to each and the targets they lead to.

    The tree must reproduce the host's links (``/lib -> usr/lib``, ``libc.so.6`` chains,
    ``bin/lx-amd64 -> /usr/lib/gridengine``) for paths to resolve the same inside the guest.
    """
    out: set[str] = set()
    todo = list(paths)
    while todo:
        path = os.path.normpath(todo.pop())
        if path in out:
            continue
        parts = PurePosixPath(path).parts
        cur = "/"
        for i, part in enumerate(parts[1:], start=1):
            cur = os.path.join(cur, part)
            if os.path.islink(cur):
                out.add(cur)
                target = os.path.normpath(os.path.join(os.path.dirname(cur), os.readlink(cur)))
                rest = parts[i + 1:]
                todo.append(os.path.join(target, *rest) if rest else target)
                if rest:
                    break
                if os.path.isdir(target):  # a link to a directory tree: walk the tree too
                    todo.extend(_walk([target])[1:])
                break
        else:
            out.add(path)
    return sorted(out)


def plan_export(sel: Selection, ldd: Mapping[str, Sequence[str]] | None = None) -> Plan:
    """Resolve ``sel`` on this host: walk the trees, ``ldd`` every ELF file, follow symlinks,
    drop what is not world-readable, and compute the key of the whole."""
    walked = _walk([*sel.trees, *sel.includes])
    roots = [*sel.binaries, *walked, *(p for p in ETC_COPIES if os.path.exists(p))]
    libs = ldd if ldd is not None else run_ldd(_expand_links(roots))
    required = {os.path.realpath(b) for b in sel.binaries}
    wanted = _expand_links(file_set(roots, libs, required))
    # merged /usr: /bin/sh (every script's #!) and friends resolve through these links
    wanted += [p for p in MERGED_USR if os.path.islink(p) and p not in wanted]
    paths, skipped = [], []
    for p in wanted:
        if (d := denied(p)) is not None:
            raise ExportError(f"{p} is under {d}, which is never exported (from a symlink?)")
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue  # a dangling link's target: the link itself is still placed
        if not _readable(st) or any(not _readable(os.stat(a)) for a in _ancestors(p)):
            skipped.append(p)
            continue
        paths.append(p)
    generated = etc_files(sel)
    paths = [p for p in paths if p not in generated]  # ours replace the host's (an included /etc)
    dirs = tuple(sorted({*sel.dirs, *sel.mkdirs}))
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": EXPORT_FORMAT, "batch": sel.batch, "dirs": dirs},
                             sort_keys=True).encode())
    for p in paths:
        st = os.lstat(p)
        link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
        digest.update(f"{p}\0{st.st_mode:o}\0{st.st_size}\0{st.st_mtime_ns}\0{link}\n".encode())
    for name in sorted(generated):
        digest.update(name.encode() + b"\0" + hashlib.sha256(generated[name]).digest())
    return Plan(sel, tuple(paths), generated, dirs, tuple(skipped),
                f"{sel.batch}-{digest.hexdigest()[:16]}")


def _ancestors(path: str) -> list[str]:
    parent = os.path.dirname(path)
    out = []
    while parent not in ("/", ""):
        out.append(parent)
        parent = os.path.dirname(parent)
    return out


# ---------------------------------------------------------------- I/O: the tree


def _mkdirs(tree: Path, path: str, mode: int | None = None) -> Path:
    """Create ``path`` in the tree with its parents, each with its host mode when it has one."""
    target = tree / path.lstrip("/")
    missing = []
    cur = target
    while not cur.exists() and cur != tree:
        missing.append(cur)
        cur = cur.parent
    for d in reversed(missing):
        host = "/" + str(d.relative_to(tree))
        d.mkdir()
        try:
            st = os.stat(host)
            m = stat.S_IMODE(st.st_mode) if stat.S_ISDIR(st.st_mode) else 0o755
        except OSError:
            m = 0o755
        os.chmod(d, mode if (mode is not None and d == target) else m)
    if mode is not None and not missing:
        os.chmod(target, mode)
    return target


def _place(tree: Path, path: str) -> int:
    """Put one host path into the tree; returns the bytes copied (0 for a hard link)."""
    st = os.lstat(path)
    target = tree / path.lstrip("/")
    if stat.S_ISDIR(st.st_mode):
        _mkdirs(tree, path, stat.S_IMODE(st.st_mode))
        return 0
    _mkdirs(tree, os.path.dirname(path))
    if os.path.lexists(target):
        return 0
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(path), target)
        return 0
    if not stat.S_ISREG(st.st_mode):
        return 0  # sockets, fifos, devices: never part of a tree
    try:
        os.link(path, target, follow_symlinks=False)
        return 0
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
    shutil.copy2(path, target, follow_symlinks=False)
    return st.st_size


@dataclass(frozen=True, slots=True)
class ExportTree:
    """A built tree: ``root`` is what ``VIRTFS`` names; the manifest says what is in it."""

    root: Path
    key: str
    files: int
    seconds: float


def read_manifest(root: Path) -> dict[str, object] | None:
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_tree(plan: Plan, dest: Path) -> ExportTree:
    """Build ``plan`` into a temp dir next to ``dest``, then rename it into place.

    A tree already at ``dest`` with the same key is kept as it is (idempotent, also when a
    parallel build of the same inputs wins the race); another one is swapped out first and
    removed after, so a guest never sees half a tree. (A guest still running on a swapped-out
    tree loses it: rebuild a site's tree when its workers are drained, as for a Slurm upgrade.)
    """
    t0 = time.monotonic()
    old = read_manifest(dest)
    if old is not None and old.get("key") == plan.key:
        return ExportTree(dest, plan.key, int(str(old.get("files", 0))), 0.0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-build-"))
    try:
        tree = work / "tree"
        tree.mkdir()
        tree.chmod(0o755)
        copied = 0
        for d in plan.selection.dirs:
            _mkdirs(tree, d, MOUNT_POINTS.get(d))
        for p in plan.paths:
            copied += _place(tree, p)
        for d in plan.dirs:
            _mkdirs(tree, d)
        for name, content in plan.generated.items():
            target = _mkdirs(tree, os.path.dirname(name)) / os.path.basename(name)
            if target.exists() or target.is_symlink():
                target.unlink()  # a hard link to the host's file: never write through it
            target.write_bytes(content)
            target.chmod(0o644)
        (tree / MANIFEST).write_text(json.dumps(
            {"key": plan.key, "batch": plan.selection.batch, "files": len(plan.paths),
             "copied_bytes": copied, "includes": list(plan.selection.includes),
             "mkdirs": list(plan.selection.mkdirs), "skipped": list(plan.skipped),
             "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "paths": list(plan.paths)}, indent=1) + "\n")
        (tree / MANIFEST).chmod(0o644)
        now = read_manifest(dest)
        if now is not None and now.get("key") == plan.key:
            # another build of the same inputs (a parallel test session) finished first: keep
            # it, since guests may already have it mounted
            return ExportTree(dest, plan.key, len(plan.paths), time.monotonic() - t0)
        if dest.exists() or dest.is_symlink():
            dest.rename(work / "replaced")
        tree.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportTree(dest, plan.key, len(plan.paths), time.monotonic() - t0)


def build_export(dest: Path, batch: str = "slurm", includes: Sequence[str | Path] = (),
                 mkdirs: Sequence[str | Path] = (), users: Sequence[str] = ()) -> ExportTree:
    """Plan and write the tree for ``batch`` at ``dest`` (a no-op if it is already current)."""
    t0 = time.monotonic()
    binaries, trees = host_binaries(batch)
    sel = selection(batch, binaries, trees, [str(p) for p in includes], [str(p) for p in mkdirs],
                    users)
    built = write_tree(plan_export(sel), dest)
    return ExportTree(built.root, built.key, built.files, time.monotonic() - t0)


def ensure_export(batch: str = "slurm", root: Path | None = None) -> ExportTree:
    """The cached tree for ``batch`` with no site includes (Slurm configless needs none), at
    ``<cache>/export-<batch>``: rebuilt in place when the host's daemons or libraries change."""
    return build_export((root or cache_root()) / f"export-{batch}", batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vocloud.guest.export",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, required=True, help="where the tree goes")
    parser.add_argument("--batch", choices=BATCH_SYSTEMS, default="slurm")
    parser.add_argument("--include", action="append", default=[], metavar="PATH",
                        help="a host file or directory to add at the same path "
                             "(the site's batch configuration, e.g. $SGE_ROOT)")
    parser.add_argument("--mkdir", action="append", default=[], metavar="PATH",
                        help="an empty directory to create (a spool the configuration names)")
    parser.add_argument("--user", action="append", default=[], metavar="NAME",
                        help="another user to keep in passwd/group (job users)")
    args = parser.parse_args(argv)
    try:
        tree = build_export(args.dest.absolute(), args.batch, args.include, args.mkdir, args.user)
    except (ExportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"root": str(tree.root), "key": tree.key, "files": tree.files,
                      "seconds": round(tree.seconds, 2)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
