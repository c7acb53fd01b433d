"""The worker-node guest: the Debian kernel running the *host's* slurmd (or sge_execd) from a 9p root.

The 9p root is a dedicated read-only export tree (:mod:`vocloud.guest.export`) holding only the
batch daemons, their libraries, a minimal /etc and the site's batch configuration — never the
hypervisor's ``/`` (a VO that boots its own image has root in its guest and would read every host
file). :meth:`WorkerImage.with_export` names the tree; :meth:`WorkerImage.spec_attrs` refuses to
run without one.

A VO cluster's worker must run the site's batch daemon (slurmd and munged here) at exactly the
version the controller runs. Two ways were open (docs/worker.md): build a Debian root image with
``debootstrap`` plus ``slurm-wlm``, or share the hypervisor's own files read-only over virtio-9p,
as virtme does (here: only the export tree's). This module does the second, because

* the daemons are then the host's (hard links in the export tree), byte for byte — no version
  skew with slurmctld, nothing to rebuild when the site upgrades Slurm (rebuild the tree: it is
  cached by its inputs), and no multi-hundred-MiB image to stage per VM;
* the guest is the same tiny initramfs as the test guest (seconds to boot under TCG) plus three
  modules (``9pnet_virtio``, ``9p``, ``overlay``);
* a per-VO image is still possible: a VO that brings its own image boots that instead; this is
  the *standard* worker for VOs that bring none.

The initramfs (``worker-init.sh`` as ``/init``) mounts the 9p share tagged ``hostroot`` on
``/newroot``, gives it tmpfs-backed overlays on ``/etc /var /tmp /root`` and a tmpfs ``/run``,
and runs ``munged`` and ``slurmd`` from it with ``chroot``. It needs the qemu arguments from
:func:`virtfs_args`.

What the batch daemon needs travels in the VM's context (:func:`worker_context`): node name
(= VM name), controller address (configless ``--conf-server``) or a whole ``slurm.conf``, the munge
key (base64), and the address of eth0. The context ISO is per VM and lives in the VM's run
directory; see docs/worker.md for who can read it.

A Grid Engine worker is the same guest with another context (:func:`sge_worker_context`): the
init then starts the host's ``sge_execd`` instead of munged and slurmd.

Run ``python -m vocloud.guest.worker [--force]`` to build (cached like the test guest).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vocloud.drivers.base import DomainSpec
from vocloud.drivers.vmm.qemu import HOSTROOT_TAG, virtfs_args  # noqa: F401 - re-exported for callers
from vocloud.guest.build import (
    GUEST_MODULES,
    GuestImage,
    _download,
    cache_root,
    ensure_image,
    initramfs_entries,
    load_order,
    log,
    module_index,
    write_cpio,
)
from vocloud.guest.export import MANIFEST as EXPORT_MANIFEST

WORKER_FORMAT = 1
#: The 9p mount tag the guest's init looks for.
#: Modules on top of the test guest's: the 9p transport and filesystem, and overlayfs for the
#: writable /etc, /var, /tmp over the read-only host root.
WORKER_MODULES = (*GUEST_MODULES, "9pnet_virtio", "9p", "overlay")
INIT_SCRIPT = "worker-init.sh"
DEFAULT_MUNGE_SOCKET = "/run/munge/munge.socket.2"


@dataclass(frozen=True, slots=True)
class WorkerImage:
    """Kernel, initramfs and command line of the worker guest (the kernel is the test guest's)."""

    root: Path
    vmlinux: Path
    initramfs: Path
    cmdline: str
    #: The read-only tree the guest mounts as its root (vocloud.guest.export); never ``/``.
    export: Path | None = None

    def with_export(self, tree: Path) -> WorkerImage:
        """This guest booting from the export tree ``tree`` (see :mod:`vocloud.guest.export`)."""
        if not (tree / EXPORT_MANIFEST).is_file():
            raise ValueError(f"{tree} is not an export tree (no {EXPORT_MANIFEST}): build it with "
                             "python -m vocloud.guest.export")
        return dataclasses.replace(self, export=tree)

    def spec_attrs(self) -> dict[str, str]:
        """The template attributes that boot this guest on its export tree (administrators
        only: host paths; a pool gets them from the site template)."""
        return {"KERNEL": str(self.vmlinux), "INITRD": str(self.initramfs), "KERNEL_CMD": self.cmdline,
                "VIRTFS": str(self._tree())}

    def boot(self, spec: DomainSpec) -> DomainSpec:
        """``spec`` set to boot this guest: the same as :meth:`spec_attrs`, as typed fields."""
        return dataclasses.replace(spec, kernel=str(self.vmlinux), initrd=str(self.initramfs),
                                   kernel_cmd=self.cmdline, virtfs=str(self._tree()))

    def _tree(self) -> Path:
        if self.export is None:
            raise ValueError("the worker guest needs an export tree (WorkerImage.with_export); "
                             "the host's / is never exported")
        return self.export


def _init_script() -> bytes:
    return resources.files("vocloud.guest").joinpath(INIT_SCRIPT).read_bytes()


def worker_cache_key(base: GuestImage) -> str:
    """Named by the kernel build it reuses and a digest of this builder's own inputs."""
    blob = json.dumps({"base": base.root.name, "modules": WORKER_MODULES, "format": WORKER_FORMAT,
                       "init": hashlib.sha256(_init_script()).hexdigest()}, sort_keys=True).encode()
    return f"worker-{base.root.name}-{hashlib.sha256(blob).hexdigest()[:12]}"


def build_worker(base: GuestImage, dest: Path) -> WorkerImage:
    """Download the kernel package again for its modules and write the worker initramfs.

    The base guest keeps only the modules it loads, so the 9p and overlay modules must come from
    the package; the kernel itself (``vmlinux``) is shared with the base guest.
    """
    manifest = json.loads((base.root / "manifest.json").read_text())
    kpkg, kver = manifest["kernel_package"], manifest["kernel_version"]
    busybox_pkg = f"busybox-static={manifest['busybox_version']}"
    release = str(manifest["kernel_release"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".build-") as tmp:
        work = Path(tmp)
        log(f"worker: downloading {kpkg}={kver} for 9p/overlay modules")
        trees = _download([f"{kpkg}={kver}", busybox_pkg], work)
        index = module_index(trees[kpkg] / "lib" / "modules" / release)
        order = load_order(WORKER_MODULES, index)
        missing = [m for m in ("9p", "9pnet_virtio", "overlay") if m not in order]
        if missing:
            raise RuntimeError(f"kernel {release} has no module(s) {', '.join(missing)}")
        log(f"worker: initramfs with {len(order)} modules: {' '.join(order)}")
        busybox = (trees["busybox-static"] / "bin" / "busybox").read_bytes()
        cpio = write_cpio(initramfs_entries(busybox, _init_script(),
                                            [(n, index[n].read_bytes()) for n in order]))
        out = work / "out"
        out.mkdir()
        (out / "initramfs.cpio.gz").write_bytes(gzip.compress(cpio, compresslevel=6, mtime=0))
        (out / "manifest.json").write_text(json.dumps(
            {"base": str(base.root), "modules_loaded": order, "cmdline": base.cmdline,
             "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
        try:
            out.rename(dest)
        except OSError:
            if not (dest / "manifest.json").exists():
                raise
    return WorkerImage(dest, base.vmlinux, dest / "initramfs.cpio.gz", base.cmdline)


def ensure_worker_image(force: bool = False, root: Path | None = None) -> WorkerImage:
    """The cached worker guest for the current base guest, built if needed (idempotent)."""
    base = ensure_image(root=root)
    dest = (root or cache_root()) / worker_cache_key(base)
    if not force and (dest / "manifest.json").exists():
        return WorkerImage(dest, base.vmlinux, dest / "initramfs.cpio.gz", base.cmdline)
    if dest.exists():
        shutil.rmtree(dest)
    return build_worker(base, dest)


def _eth0_context(ip: str | None, mask: str, gateway: str | None, mac: str | None) -> dict[str, str]:
    """The ETH0_* variables both worker inits read to configure the NIC (``mac`` picks it)."""
    ctx: dict[str, str] = {}
    if ip:
        ctx["ETH0_IP"] = ip
        ctx["ETH0_MASK"] = mask
    if gateway:
        ctx["ETH0_GATEWAY"] = gateway
    if mac:
        ctx["ETH0_MAC"] = mac
    return ctx


def worker_context(
    node_name: str,
    munge_key: bytes,
    *,
    conf_server: str | None = None,
    slurm_conf: str | None = None,
    dynamic_conf: str | None = None,
    munge_socket: str = DEFAULT_MUNGE_SOCKET,
    ip: str | None = None,
    mask: str = "24",
    gateway: str | None = None,
    mac: str | None = None,
    booted: bool = False,
    spool_parent: str | None = None,
) -> dict[str, str]:
    """Context variables that make the worker guest join Slurm as ``node_name``.

    Exactly one of ``conf_server`` (``host[:port]`` of slurmctld, which must have
    ``SlurmctldParameters=enable_configless``) or ``slurm_conf`` (the text the worker runs with).
    ``dynamic_conf`` (e.g. ``"CPUs=1 RealMemory=400 Feature=vo_atlas"``) registers a dynamic node
    (``slurmd -Z``) so slurm.conf needs no line per VM; without it the node must be defined there
    (a ``State=CLOUD`` node for power saving). The key is base64 so that the context, which is
    text, carries the binary key unchanged; the guest never prints it. ``mac`` picks the NIC
    that gets ``ip`` when the VM has several; ``booted`` adds ``slurmd -b`` (a power-saving
    ``State=CLOUD`` node must report a fresh boot to leave POWERING_UP). ``spool_parent``: the
    directory above the site's ``SlurmdSpoolDir`` when it is not in the export tree (the guest
    makes it in its RAM overlay before slurmd starts: slurmd makes only the last component).
    """
    if (conf_server is None) == (slurm_conf is None):
        raise ValueError("give exactly one of conf_server (configless) or slurm_conf")
    if not munge_key:
        raise ValueError("the munge key is empty")
    ctx = {"SLURM_NODENAME": node_name, "MUNGE_KEY": base64.b64encode(munge_key).decode(),
           "MUNGE_SOCKET": munge_socket, "HOSTNAME": node_name}
    if conf_server is not None:
        ctx["SLURM_CONF_SERVER"] = conf_server
    if slurm_conf is not None:
        ctx["SLURM_CONF_B64"] = base64.b64encode(slurm_conf.encode()).decode()
    if dynamic_conf:
        ctx["SLURM_DYNAMIC_CONF"] = dynamic_conf
    ctx.update(_eth0_context(ip, mask, gateway, mac))
    if booted:
        ctx["SLURM_BOOTED"] = "1"
    if spool_parent:
        ctx["SLURMD_SPOOL_PARENT"] = spool_parent
    return ctx


def sge_worker_context(
    node_name: str,
    sge_root: str,
    *,
    cell: str = "default",
    qmaster_port: int | str | None = None,
    execd_port: int | str | None = None,
    qmaster_host: str | None = None,
    qmaster_ip: str | None = None,
    execd_spool: str | None = None,
    ip: str | None = None,
    mask: str = "24",
    gateway: str | None = None,
    mac: str | None = None,
) -> dict[str, str]:
    """Context variables that make the worker guest run the host's ``sge_execd`` as ``node_name``.

    The guest joins the Grid Engine cell ``sge_root``/``cell`` (its ``common/`` directory must be
    in the shared root tree, as ``$SGE_ROOT`` is on the qmaster host); ``qmaster_port`` and
    ``execd_port`` are ``SGE_QMASTER_PORT``/``SGE_EXECD_PORT`` when the cell does not use
    ``/etc/services``. ``qmaster_host`` + ``qmaster_ip`` put the qmaster (the name in
    ``act_qmaster``) into the guest's ``/etc/hosts``, for sites whose DNS the guest cannot ask.
    ``execd_spool`` (the cell's ``execd_spool_dir``) only copies the execd's messages to the
    console. No secret is involved: Grid Engine trusts hosts, not keys (``security_mode none``),
    which is why the qmaster must know the worker as an execution host *before* its execd
    starts, and why a worker's name must resolve to its address on the qmaster
    (docs/worker.md, *Grid Engine workers*).
    """
    if not node_name or not sge_root:
        raise ValueError("a Grid Engine worker needs a node name and SGE_ROOT")
    if (qmaster_host is None) != (qmaster_ip is None):
        raise ValueError("give both qmaster_host and qmaster_ip, or neither (DNS)")
    ctx = {"SGE_NODENAME": node_name, "HOSTNAME": node_name, "SGE_ROOT": sge_root,
           "SGE_CELL": cell}
    if qmaster_port is not None:
        ctx["SGE_QMASTER_PORT"] = str(qmaster_port)
    if execd_port is not None:
        ctx["SGE_EXECD_PORT"] = str(execd_port)
    if qmaster_host is not None and qmaster_ip is not None:
        ctx["SGE_QMASTER_HOST"] = qmaster_host
        ctx["SGE_QMASTER_IP"] = qmaster_ip
    if execd_spool:
        ctx["SGE_EXECD_SPOOL"] = execd_spool
    ctx.update(_eth0_context(ip, mask, gateway, mac))
    return ctx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vocloud.guest.worker",
                                     description="build the worker-node guest (cached)")
    parser.add_argument("--force", action="store_true", help="rebuild the worker initramfs")
    parser.add_argument("--cache", type=Path, default=None, help="cache directory")
    args = parser.parse_args(argv)
    try:
        image = ensure_worker_image(force=args.force, root=args.cache)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"root": str(image.root), "vmlinux": str(image.vmlinux),
                      "initramfs": str(image.initramfs), "cmdline": image.cmdline}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
