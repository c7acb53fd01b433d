"""The worker export tree on this host, and what a worker guest booted from it can read.

Issue 9, finding 4's last part: a worker mounted the hypervisor's ``/`` over 9p, so guest root (a
VO booting its own image has it) read every host file. The tree (vocloud.guest.export) holds the
batch daemons, their libraries, a minimal /etc and the site's batch configuration only.

* ``test_the_slurm_tree_*``/``test_the_gridengine_tree_*``: the tree is built (timed), the daemons
  *run* from it (``chroot``: every library they load is inside) and nothing secret is in it.
* ``test_a_worker_guest_reads_no_host_file``: the exfiltration regression, with real qemu. Canary
  files are put where host secrets live (a world-readable one in /tmp, a 0600 one in a daemon data
  dir); a worker guest booted on the tree probes, from its init as guest root, for them, for
  /etc/shadow, /root and the munge key, and greps the whole 9p export for the canary text: it
  finds nothing. The qemu driver refuses ``/`` (the old export) outright; and a tree that
  *includes* the canary directory shows the probe works: the world-readable canary is found (by
  path and by text), the 0600 token still is not.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.qemu import LOCAL, make_driver
from vocloud.devtools.localprocs import poll_until
from vocloud.drivers.accel import AccelProbe
from vocloud.drivers.base import DomainSpec
from vocloud.errors import DriverError
from vocloud.guest.build import GuestImage
from vocloud.guest.export import MANIFEST, build_export, ensure_export
from vocloud.guest.worker import WorkerImage, worker_context

SECRET_PATHS = ("/etc/shadow", "/etc/gshadow", "/root/.ssh", "/root/.bash_history", "/home",
                "/etc/munge/munge.key", "/var/lib/vocloud", "/etc/ssh")


def _need(require: str, *tools: str) -> None:
    """Skip without the tools, or fail when CI says the component is required (``require``)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        if os.environ.get(require):
            pytest.fail(f"not installed: {', '.join(missing)}")
        pytest.skip(f"not installed: {', '.join(missing)}")


def _in_tree(tree: Path, path: str) -> Path:
    return tree / path.lstrip("/")


def _run_inside(tree: Path, *argv: str) -> str:
    """Run a command chrooted in the tree (clean environment, as the guest's init does)."""
    proc = subprocess.run(["chroot", str(tree), *argv], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} in the tree: {proc.returncode} {proc.stderr}"
    return proc.stdout + proc.stderr


def _assert_nothing_secret(tree: Path) -> None:
    for path in SECRET_PATHS:
        assert not _in_tree(tree, path).exists(), f"{path} is in the tree"
    assert list(_in_tree(tree, "/root").iterdir()) == []
    for line in _in_tree(tree, "/etc/passwd").read_text().splitlines():
        assert line.split(":")[1] == "x", line  # no password hash, not even a locked one
    home = Path.home()
    assert not _in_tree(tree, str(home)).exists() or str(home) == "/root"
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            assert st.st_mode & 0o004, f"{os.path.join(dirpath, name)} is not world-readable"


@pytest.fixture(scope="module")
def export_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="vocloud-export-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_the_slurm_tree_runs_the_daemons_and_holds_nothing_else(export_root: Path) -> None:
    _need("VOCLOUD_REQUIRE_SLURM", "slurmd", "munged", "chroot")
    t0 = time.monotonic()
    tree = build_export(export_root / "slurm", "slurm")
    first = time.monotonic() - t0
    t1 = time.monotonic()
    again = build_export(export_root / "slurm", "slurm")
    cached = time.monotonic() - t1
    assert again.key == tree.key
    root = tree.root
    for daemon in ("/usr/sbin/slurmd", "/usr/sbin/slurmstepd", "/usr/sbin/munged", "/bin/sh"):
        assert _in_tree(root, daemon).exists(), daemon
    assert any(_in_tree(root, "/usr/lib").glob("*/slurm-wlm/auth_munge.so"))
    # every library the daemons load resolves inside the tree: they run there
    assert re.search(r"slurm(-wlm)? \d+\.", _run_inside(root, "slurmd", "-V"))
    assert "munge" in _run_inside(root, "munged", "--version").lower()
    assert _run_inside(root, "sh", "-c", "sleep 0; hostname; true") != ""
    assert "slurm:x:" in _in_tree(root, "/etc/passwd").read_text()
    assert "munge:x:" in _in_tree(root, "/etc/passwd").read_text()
    _assert_nothing_secret(root)
    files = sum(len(f) for _d, _s, f in os.walk(root))
    size = sum(os.lstat(os.path.join(d, n)).st_size for d, _s, fs in os.walk(root) for n in fs)
    print(f"\nslurm export: {files} files, {size / 2**20:.1f} MiB (hard links), built in "
          f"{first:.2f} s, unchanged rebuild {cached:.2f} s")


def test_the_gridengine_tree_holds_the_cell_but_not_its_unreadable_files(export_root: Path) -> None:
    _need("VOCLOUD_REQUIRE_SGE", "sge_execd", "chroot")
    cell = export_root / "site" / "sge"
    (cell / "default" / "common").mkdir(parents=True)
    for d in (export_root / "site", cell, cell / "default", cell / "default" / "common"):
        d.chmod(0o755)
    (cell / "default" / "common" / "act_qmaster").write_text("qmaster\n")
    (cell / "default" / "common" / "act_qmaster").chmod(0o644)
    (cell / "default" / "common" / "sgepasswd").write_text("secret\n")
    (cell / "default" / "common" / "sgepasswd").chmod(0o600)
    (cell / "bin").symlink_to("/var/lib/gridengine/bin")
    spool = export_root / "site" / "spool" / "execd"
    tree = build_export(export_root / "sge", "gridengine", includes=[cell], mkdirs=[spool]).root
    inside = _in_tree(tree, str(cell))
    assert (inside / "default" / "common" / "act_qmaster").read_text() == "qmaster\n"
    assert not (inside / "default" / "common" / "sgepasswd").exists()
    assert _in_tree(tree, str(spool)).is_dir() and not any(_in_tree(tree, str(spool)).iterdir())
    assert (inside / "bin" / "lx-amd64" / "sge_shepherd").is_file()  # through the host's links
    assert _in_tree(tree, "/usr/sbin/sge_execd").is_symlink()
    assert "sgeadmin:x:" in _in_tree(tree, "/etc/passwd").read_text()
    assert not _in_tree(tree, "/var/lib/gridengine/default").exists()  # the machine's own cell
    _assert_nothing_secret(tree)


# ---------------------------------------------------------------- the exfiltration regression


@pytest.fixture
def canaries() -> Iterator[tuple[str, list[str]]]:
    """A canary text in a world-readable /tmp file and in a 0600 file of a daemon-like data dir."""
    text = f"vocloud-canary-{secrets.token_hex(8)}"
    root = Path(tempfile.mkdtemp(prefix="vocloud-canary-"))
    root.chmod(0o755)
    (root / "public.txt").write_text(text + "\n")
    (root / "public.txt").chmod(0o644)
    data = root / "data"
    data.mkdir(mode=0o700)
    (data / "admin.token").write_text(text + "\n")
    (data / "admin.token").chmod(0o600)
    yield text, [str(root / "public.txt"), str(data / "admin.token"), str(data)]
    shutil.rmtree(root, ignore_errors=True)


def _probe(drv_root: Path, probe: AccelProbe, guest: GuestImage, worker: WorkerImage,
           name: str, paths: list[str], text: str | None) -> str:
    """Boot the worker with a probing context; return its console once the probe printed.

    Without ``text`` only the paths are probed (grepping a whole host ``/`` over 9p under TCG
    takes minutes)."""
    drv = make_driver(drv_root, probe, guest)
    ctx = worker_context(name, b"not-the-site-key", conf_server="127.0.0.1:9")
    ctx["VOCLOUD_PROBE_PATHS"] = " ".join(paths)
    if text is not None:
        ctx["VOCLOUD_PROBE_TEXT"] = text
    done = re.compile("PROBE text" if text is not None else rf"PROBE \w+ {re.escape(paths[-1])}\b")
    spec = worker.boot(DomainSpec(vm_id=1, deploy_id=name, name=name, cpu=1.0, vcpu=1, memory_mib=256,
                                  context=ctx))
    drv.run_dir(name).mkdir(mode=0o700, parents=True)
    def answered() -> str | None:
        console = drv.console(LOCAL, name)
        return console if done.search(console) or "VOCLOUD-WORKER-FAILED" in console else None

    try:
        drv.deploy(LOCAL, spec)
        return poll_until(answered, 240, f"{name}'s probe answer on its console",
                          lambda: drv.console(LOCAL, name)[-3000:], interval=0.5)
    finally:
        drv.cleanup(LOCAL, name)


@pytest.mark.slow
def test_a_worker_guest_reads_no_host_file(
        worker_image: WorkerImage, qemu_reaper: Path, accel_probe: AccelProbe,
        guest_image: GuestImage, canaries: tuple[str, list[str]], export_root: Path) -> None:
    text, planted = canaries
    assert worker_image.export is not None and (worker_image.export / MANIFEST).is_file()
    assert worker_image.spec_attrs()["VIRTFS"] == str(worker_image.export) != "/"
    paths = [*SECRET_PATHS, *planted, str(ensure_export("slurm").root.parent)]
    t0 = time.monotonic()
    console = _probe(qemu_reaper, accel_probe, guest_image, worker_image, "exfil-tree", paths, text)
    took = time.monotonic() - t0
    assert "VOCLOUD-WORKER-FAILED" not in console.split("PROBE text")[0], console[-3000:]
    for path in paths:
        assert f"VOCLOUD-WORKER PROBE absent {path}\n" in console.replace("\r", ""), (path, console[-3000:])
    assert "PROBE present" not in console
    m = re.search(r"PROBE text (\S+) files=(\d+)", console)
    assert m is not None and m.group(1) == "not-found", console[-3000:]
    assert text not in console.replace(f"PROBE_TEXT={text}", "")  # the guest never printed it

    # The driver never exports the host's / (the old export) ...
    old = WorkerImage(worker_image.root, worker_image.vmlinux, worker_image.initramfs,
                      worker_image.cmdline, export=Path("/"))
    with pytest.raises(DriverError, match="is not a worker export tree"):
        _probe(qemu_reaper, accel_probe, guest_image, old, "exfil-root", paths, None)
    # ... and the probe does see a file that is in the export: a tree that includes the canary
    # directory has its world-readable file (found by path and by text), not the 0600 token.
    leaky = build_export(export_root / "leaky", "slurm",
                         includes=[str(Path(planted[0]).parent)])
    control = _probe(qemu_reaper, accel_probe, guest_image, worker_image.with_export(leaky.root),
                     "exfil-ctl", paths, text)
    assert f"VOCLOUD-WORKER PROBE present {planted[0]}" in control, control[-3000:]
    assert f"VOCLOUD-WORKER PROBE absent {planted[1]}" in control  # 0600: never exported
    assert re.search(rf"PROBE text \S*{re.escape(planted[0])}", control), control[-3000:]
    print(f"\nexfiltration probe on the export tree: nothing found among {m.group(2)} files "
          f"({took:.1f} s); / refused by the driver; a tree including the canary shows it")
