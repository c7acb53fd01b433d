"""The worker export tree: which host files a worker guest may see (vocloud.guest.export).

``data/export/ldd-*.txt`` were printed by ``ldd`` on Debian 12 (Slurm 22.05.8, munge 0.5.15,
Grid Engine 8.1.9): several files at once (with ``file:`` headers, a library that is not found,
a shell script) and one file alone (no header).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vocloud.guest.export import (
    MANIFEST,
    ExportError,
    denied,
    file_set,
    filter_group,
    filter_passwd,
    parse_ldd,
    plan_export,
    selection,
    write_tree,
)
from vocloud.guest.worker import WorkerImage

DATA = Path(__file__).parent / "data" / "export"
SLURMD, MUNGED = "/usr/sbin/slurmd", "/usr/sbin/munged"
SPOOLDEFAULTS = "/usr/lib/gridengine/spooldefaults.bin"
WRAPPER = "/usr/share/gridengine/gridengine-wrapper"
INTERP = "/lib64/ld-linux-x86-64.so.2"


def recorded() -> dict[str, list[str]]:
    return parse_ldd((DATA / "ldd-worker-daemons.txt").read_text())


# ---------------------------------------------------------------- ldd


def test_parse_ldd_of_several_files_names_libraries_and_the_interpreter() -> None:
    libs = recorded()
    assert set(libs) == {SLURMD, MUNGED, SPOOLDEFAULTS, WRAPPER}
    assert "/usr/lib/x86_64-linux-gnu/slurm-wlm/libslurmfull.so" in libs[SLURMD]
    assert "/lib/x86_64-linux-gnu/libc.so.6" in libs[SLURMD]
    assert INTERP in libs[SLURMD] and INTERP in libs[MUNGED]
    assert "/lib/x86_64-linux-gnu/libmunge.so.2" in libs[MUNGED]
    assert not any("vdso" in lib for ls in libs.values() for lib in ls)  # no file behind it
    assert libs[WRAPPER] == []  # a shell script: "not a dynamic executable"
    assert "!libspoolc.so" in libs[SPOOLDEFAULTS]  # "not found" is kept, marked


def test_parse_ldd_of_one_file_has_no_header_and_needs_its_name() -> None:
    text = (DATA / "ldd-munged-single.txt").read_text()
    alone = parse_ldd(text, single=MUNGED)
    assert alone == {MUNGED: recorded()[MUNGED]}
    with pytest.raises(ExportError, match="before any file header"):
        parse_ldd(text)


def test_file_set_is_the_sorted_union_of_binaries_and_their_libraries() -> None:
    libs = recorded()
    files = file_set([SLURMD, MUNGED], {k: libs[k] for k in (SLURMD, MUNGED)}, [SLURMD, MUNGED])
    assert files == sorted(set(files))
    assert SLURMD in files and MUNGED in files and INTERP in files
    assert "/lib/x86_64-linux-gnu/libgcrypt.so.20" in files  # munged's
    assert "/lib/x86_64-linux-gnu/libnuma.so.1" in files  # slurmd's
    assert not any(f.startswith("!") for f in files)


def test_a_library_ldd_cannot_find_fails_a_daemon_but_not_a_helper() -> None:
    libs = recorded()
    with pytest.raises(ExportError, match=r"spooldefaults\.bin: library libspoolc\.so not found"):
        file_set([SPOOLDEFAULTS], libs, required=[SPOOLDEFAULTS])
    helpers = file_set([SPOOLDEFAULTS], libs, required=[SLURMD, MUNGED])
    assert SPOOLDEFAULTS in helpers and "/lib/x86_64-linux-gnu/libjemalloc.so.2" in helpers
    with pytest.raises(ExportError, match="not an absolute path"):
        file_set(["usr/sbin/slurmd"], {})


# ---------------------------------------------------------------- what is never exported


@pytest.mark.parametrize("path", [
    "/etc/shadow", "/etc/gshadow", "/root", "/root/.ssh/id_rsa", "/home/alice/x",
    "/etc/munge/munge.key", "/var/lib/vocloud/vocloud.db", "/etc/ssh/ssh_host_ed25519_key",
    "/usr/../etc/shadow", "/proc/self/environ"])
def test_denied_paths(path: str) -> None:
    assert denied(path) is not None


@pytest.mark.parametrize("path", ["/rootfs", "/etc/passwd", "/etc/shadowsocks", "/usr/sbin/slurmd",
                                  "/var/lib/gridengine/default/common", "/homework"])
def test_allowed_paths(path: str) -> None:
    assert denied(path) is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"includes": ["/etc/shadow"]}, "--include '/etc/shadow' is under /etc/shadow"),
    ({"includes": ["/root"]}, "--include '/root' is under /root"),
    ({"includes": ["/var/lib/vocloud/secrets"]}, "under /var/lib/vocloud"),
    ({"includes": ["relative/cell"]}, "not an absolute path"),
    ({"mkdirs": ["/home/x"]}, "--mkdir '/home/x' is under /home"),
    ({"users": ["root:x:0"]}, "--user 'root:x:0' is not a user name"),
])
def test_selection_refuses_bad_requests(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ExportError, match=message.replace("(", r"\(")):
        selection("slurm", [SLURMD], [], **kwargs)


def test_selection_knows_the_batch_systems_and_their_users() -> None:
    with pytest.raises(ExportError, match="unknown batch system 'pbs'"):
        selection("pbs", [], [])
    assert {"root", "slurm", "munge"} <= set(selection("slurm", [], []).users)
    assert "sgeadmin" in selection("gridengine", [], []).users
    assert "slurm" not in selection("gridengine", [], []).users


PASSWD = """root:$y$j9T$secrethash:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/bash
slurm:!:64030:64030::/nonexistent:/usr/sbin/nologin
munge:x:103:106::/nonexistent:/usr/sbin/nologin
broken line
"""
GROUP = """root:x:0:
daemon:x:1:
sudo:x:27:alice
alice:x:1000:
slurm:x:64030:
munge:secret:106:alice,munge
"""


def test_passwd_and_group_keep_only_the_daemons_users_and_no_password() -> None:
    passwd, gids = filter_passwd(PASSWD, ["root", "daemon", "slurm", "munge", "nobody"])
    assert passwd.splitlines() == [
        "root:x:0:0:root:/root:/bin/bash", "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
        "slurm:x:64030:64030::/nonexistent:/usr/sbin/nologin",
        "munge:x:103:106::/nonexistent:/usr/sbin/nologin"]
    assert "secrethash" not in passwd and "alice" not in passwd
    assert gids == {"root": "0", "daemon": "1", "slurm": "64030", "munge": "106"}
    group = filter_group(GROUP, ["root"], gids.values(), ["root", "daemon", "slurm", "munge"])
    assert group.splitlines() == ["root:x:0:", "daemon:x:1:", "slurm:x:64030:", "munge:x:106:munge"]


# ---------------------------------------------------------------- a tree on disk


@pytest.fixture
def site() -> Iterator[Path]:
    """A world-searchable temp dir (pytest's own are 0700, and a file below a directory others
    cannot enter is never exported)."""
    root = Path(tempfile.mkdtemp(prefix="vocloud-export-test-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


def _cell(site: Path) -> Path:
    cell = site / "site" / "sge" / "default" / "common"
    cell.mkdir(parents=True)
    (cell / "act_qmaster").write_text("qmaster\n")
    (cell / "act_qmaster").chmod(0o644)
    (cell / "secret").write_text("not for guests\n")
    (cell / "secret").chmod(0o600)
    return site / "site" / "sge"


def test_a_tree_holds_what_was_asked_and_never_an_unreadable_file(site: Path) -> None:
    sge_root = _cell(site)
    (sge_root / "bin").symlink_to("/usr/bin")  # followed: a link to a host directory
    sel = selection("gridengine", ["/usr/bin/true"], [], includes=[str(sge_root)],
                    mkdirs=[str(site / "spool" / "execd")])
    plan = plan_export(sel, ldd={"/usr/bin/true": [INTERP]})
    assert str(sge_root / "default" / "common" / "secret") in plan.skipped
    tree = write_tree(plan, site / "tree").root
    inside = tree / str(sge_root).lstrip("/")
    assert (inside / "default" / "common" / "act_qmaster").read_text() == "qmaster\n"
    assert not (inside / "default" / "common" / "secret").exists()
    assert (tree / str(site / "spool" / "execd").lstrip("/")).is_dir()
    assert os.readlink(inside / "bin") == "/usr/bin"
    assert (tree / "usr" / "bin" / "true").is_file()
    assert (tree / "lib64").is_symlink() or (tree / "lib64" / "ld-linux-x86-64.so.2").exists()
    for absent in ("etc/shadow", "etc/gshadow", "home", "etc/munge"):
        assert not (tree / absent).exists(), absent
    assert list((tree / "root").iterdir()) == []
    passwd = (tree / "etc" / "passwd").read_text()
    assert passwd.startswith("root:x:0:0:") and all(line.split(":")[1] == "x" for line in passwd.splitlines())
    assert "files" in (tree / "etc" / "nsswitch.conf").read_text()
    assert (tree / MANIFEST).is_file()


def test_building_again_is_a_no_op_and_a_change_rebuilds(site: Path) -> None:
    sge_root = _cell(site)
    sel = selection("gridengine", ["/usr/bin/true"], [], includes=[str(sge_root)])
    first = write_tree(plan_export(sel, ldd={}), site / "tree")
    marker = first.root / "etc" / "hosts"
    inode = marker.stat().st_ino
    again = write_tree(plan_export(sel, ldd={}), site / "tree")
    assert again.key == first.key and again.seconds == 0.0 and marker.stat().st_ino == inode
    (sge_root / "default" / "common" / "act_qmaster").write_text("other-qmaster\n")
    changed = write_tree(plan_export(sel, ldd={}), site / "tree")
    assert changed.key != first.key
    assert (site / "tree" / "etc" / "hosts").stat().st_ino != inode
    assert not [p for p in site.iterdir() if p.name.startswith(".tree-build-")]


def test_a_symlink_into_a_denied_path_is_refused(site: Path) -> None:
    sge_root = _cell(site)
    (sge_root / "default" / "common" / "leak").symlink_to("/etc/shadow")
    sel = selection("gridengine", [], [], includes=[str(sge_root)])
    with pytest.raises(ExportError, match="/etc/shadow is under /etc/shadow"):
        plan_export(sel, ldd={})


# ---------------------------------------------------------------- the worker guest uses it


def test_the_worker_guest_boots_only_from_an_export_tree(tmp_path: Path) -> None:
    image = WorkerImage(tmp_path, tmp_path / "vmlinux", tmp_path / "initramfs.cpio.gz", "console=ttyS0")
    with pytest.raises(ValueError, match="needs an export tree"):
        image.spec_attrs()
    with pytest.raises(ValueError, match="is not an export tree"):
        image.with_export(Path("/"))
    tree = write_tree(plan_export(selection("slurm", [], []), ldd={}), tmp_path / "tree").root
    attrs = image.with_export(tree).spec_attrs()
    assert attrs["VIRTFS"] == str(tree) and attrs["VIRTFS"] != "/"


def test_generated_etc_files_never_write_through_a_hard_link(site: Path) -> None:
    """A tree that (through an include) would hold the host's /etc/hosts gets its own file; the
    host's stays byte for byte what it was (a hard link shares the inode)."""
    before = Path("/etc/hosts").read_bytes()
    sel = selection("slurm", ["/etc/hosts"], [])
    plan = plan_export(sel, ldd={})
    assert "/etc/hosts" not in plan.paths
    tree = write_tree(plan, site / "tree").root
    assert (tree / "etc" / "hosts").stat().st_ino != Path("/etc/hosts").stat().st_ino
    assert Path("/etc/hosts").read_bytes() == before
