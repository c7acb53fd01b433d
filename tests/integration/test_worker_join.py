"""A worker-node VM joins a real Slurm: context -> munged + slurmd in the guest -> node IDLE -> job.

Topology, all on this machine and all made (and removed) by the test:

* a Linux bridge ``vcwb<pid>`` with ``10.253.0.1/24`` (skipped if anything here already uses
  10.253.0.0/24); no NAT, no forwarding, no route to anywhere else;
* the harness's slurmctld + munged, with ``SlurmctldHost=localhost(10.253.0.1)`` so the guest
  can reach the controller (slurmctld listens on every local address anyway) and
  ``enable_configless`` so the guest needs only the address, not a copy of slurm.conf;
* one qemu guest (the worker image: Debian kernel, busybox initramfs, the host's root read-only
  over virtio-9p) whose NIC is a tap on that bridge, address ``10.253.0.10``; its context carries
  node name, controller address, munge key and address; it registers as a *dynamic* node
  (``slurmd -Z``) named like the VM, in partition ``vo`` through a feature nodeset.
"""

from __future__ import annotations

import base64
import contextlib
import re
import stat
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from tests.support import procs
from tests.support.qemu import LOCAL, make_driver, wait_domain
from tests.support.slurm_harness import SlurmCluster, missing_reason
from vocloud.drivers.accel import AccelProbe
from vocloud.drivers.base import DomainSpec, DomainState, NicSpec
from vocloud.drivers.context import seed_files
from vocloud.drivers.net.bridge import BridgeDriver
from vocloud.drivers.vmm.qemu import QemuDriver, virtfs_args
from vocloud.guest.build import GuestImage
from vocloud.guest.worker import WorkerImage, worker_context

SUBNET = "10.253.0."
BRIDGE_IP = SUBNET + "1"
GUEST_IP = SUBNET + "10"
GUEST_MAC = "02:00:0a:fd:00:0a"
VM_NAME = "vow-1"
DEPLOY_ID = "vcw-1"
VO_FEATURE = "vo_test"
BOOT_TIMEOUT = 120.0
JOIN_TIMEOUT = 180.0


_skip = procs.skip_or_fail


_ip = procs.ip


class WorkerSlurmCluster(SlurmCluster):
    """The harness's cluster, reachable from the test bridge and serving configless slurmd."""

    def _write_files(self) -> None:
        super()._write_files()
        text = self.conf.read_text()
        text = re.sub(r"(?m)^SlurmctldHost=.*$", f"SlurmctldHost=localhost({BRIDGE_IP})", text)
        text += (
            "SlurmctldParameters=enable_configless\n"
            f"NodeSet=vows Feature={VO_FEATURE}\n"
            "PartitionName=vo Nodes=vows MaxTime=INFINITE State=UP\n"
        )
        self.conf.write_text(text)


@pytest.fixture(scope="module")
def slurm_installed() -> None:
    """Skip (with the harness's reason) before any bridge is made when Slurm cannot run."""
    reason = missing_reason()
    if reason is not None:
        _skip(reason)


@pytest.fixture(scope="module")
def test_bridge(slurm_installed: None) -> Iterator[str]:
    """A bridge with 10.253.0.1/24 made here and deleted afterwards, whatever happens."""
    with procs.test_bridge("vcwb", SUBNET) as bridge:
        yield bridge


@pytest.fixture(scope="module")
def cluster(test_bridge: str) -> Iterator[WorkerSlurmCluster]:
    c = WorkerSlurmCluster()
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def worker_driver(qemu_reaper: Path, accel_probe: AccelProbe, guest_image: GuestImage) -> QemuDriver:
    base = make_driver(qemu_reaper, accel_probe, guest_image)
    qemu_reaper.chmod(0o700)  # run dirs hold the context ISO with the munge key
    return QemuDriver(qemu_reaper, accel_probe=base.accel_probe, probe_guest=base.probe_guest)


# ---------------------------------------------------------------- pure parts (no VM, no Slurm)


def test_worker_context_carries_what_slurmd_needs_and_is_a_valid_context() -> None:
    key = bytes(range(256)) * 4
    ctx = worker_context("vo-atlas-3", key, conf_server="10.0.0.1:6817", ip="10.0.0.9",
                         dynamic_conf="CPUs=2 RealMemory=900 Feature=vo_atlas")
    assert ctx["SLURM_NODENAME"] == ctx["HOSTNAME"] == "vo-atlas-3"
    assert base64.b64decode(ctx["MUNGE_KEY"]) == key
    assert ctx["SLURM_CONF_SERVER"] == "10.0.0.1:6817" and "SLURM_CONF_B64" not in ctx
    assert (ctx["ETH0_IP"], ctx["ETH0_MASK"]) == ("10.0.0.9", "24")
    spec = DomainSpec(vm_id=3, deploy_id="vc-3", name="vo-atlas-3", cpu=1, vcpu=1, memory_mib=256,
                      context=ctx)
    assert "SLURM_NODENAME='vo-atlas-3'" in seed_files(spec)["context.sh"]  # validated, quoted

    conf = worker_context("w", b"k", slurm_conf="ClusterName=x\n")
    assert base64.b64decode(conf["SLURM_CONF_B64"]) == b"ClusterName=x\n"
    with pytest.raises(ValueError, match="exactly one"):
        worker_context("w", b"k")
    with pytest.raises(ValueError, match="exactly one"):
        worker_context("w", b"k", conf_server="a", slurm_conf="b")
    with pytest.raises(ValueError, match="empty"):
        worker_context("w", b"", conf_server="a")


def test_virtfs_args_match_the_machine_and_are_read_only() -> None:
    micro = virtfs_args("microvm", "/srv/worker-root")
    assert micro[micro.index("-device") + 1].startswith("virtio-9p-device,")
    assert "readonly=on" in micro[micro.index("-fsdev") + 1]
    tree = virtfs_args("pc", path="/srv/worker-root")
    assert tree[1].startswith("local,id=hostroot,path=/srv/worker-root,")
    assert virtfs_args("pc", "/srv/worker-root")[3].startswith("virtio-9p-pci,")


def test_the_guest_init_never_prints_the_munge_key() -> None:
    script = resources.files("vocloud.guest").joinpath("worker-init.sh").read_text()
    uses = [line for line in script.splitlines() if "$MUNGE_KEY" in line and "[ -n" not in line]
    assert uses and all("| base64 -d >" in line for line in uses), uses


# ---------------------------------------------------------------- a real worker VM


def wait_running(drv: QemuDriver, deploy_id: str, timeout: float) -> None:
    wait_domain(drv, LOCAL, deploy_id, DomainState.RUNNING, timeout,
                (DomainState.FAILED, DomainState.MISSING, DomainState.OFF), interval=0.2)


def node_field(cluster: SlurmCluster, node: str, field: str) -> str:
    out = cluster._try("scontrol", "show", "node", node)
    m = re.search(rf"\b{field}=(\S+)", out)
    return m.group(1) if m else ""


@pytest.mark.slow
def test_worker_vm_registers_as_node_and_runs_a_job(
        worker_image: WorkerImage, worker_driver: QemuDriver, cluster: WorkerSlurmCluster,
        test_bridge: str) -> None:
    """Deploy -> READY -> node IDLE at the guest's address -> job COMPLETED there -> power off.

    Fixtures are ordered so that a missing qemu skips before any bridge or daemon starts.
    """
    key = (cluster.root / "munge" / "munge.key").read_bytes()
    ctx = worker_context(VM_NAME, key, conf_server=f"{BRIDGE_IP}:{cluster.ctld_port}",
                         dynamic_conf=f"CPUs=1 RealMemory=200 Feature={VO_FEATURE}",
                         munge_socket=str(cluster.munge_socket), ip=GUEST_IP, mask="24",
                         mac=GUEST_MAC)
    spec = DomainSpec(vm_id=1, deploy_id=DEPLOY_ID, name=VM_NAME, cpu=1.0, vcpu=1, memory_mib=512,
                      nics=(NicSpec(network="vo", ip=GUEST_IP, mac=GUEST_MAC, bridge=test_bridge),),
                      context=ctx)
    spec = worker_image.boot(spec)
    net = BridgeDriver(default_bridge=test_bridge)
    run = worker_driver.run_dir(DEPLOY_ID)
    run.mkdir(mode=0o700)
    t0 = time.monotonic()
    try:
        net.attach(LOCAL, spec)
        info = worker_driver.deploy(LOCAL, spec)
        assert info.state in (DomainState.BOOTING, DomainState.RUNNING), info.detail
        wait_running(worker_driver, DEPLOY_ID, BOOT_TIMEOUT)
        t_ready = time.monotonic() - t0

        # The key reaches this VM only: its ISO sits in a run dir no other user can enter,
        # and the guest never prints it.
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        assert stat.S_IMODE(worker_driver.state_dir.stat().st_mode) == 0o700
        assert ctx["MUNGE_KEY"] not in worker_driver.console(LOCAL, DEPLOY_ID)

        def why() -> str:
            return (f"scontrol: {cluster._try('scontrol', 'show', 'node', VM_NAME)}\n"
                    f"console:\n{worker_driver.console(LOCAL, DEPLOY_ID)[-3000:]}\n"
                    f"{cluster.log_tail()}")

        def joined() -> bool:
            if "slurmd initialization failed" in worker_driver.console(LOCAL, DEPLOY_ID):
                pytest.fail(f"{VM_NAME} did not register: slurmd gave up\n{why()}")
            return cluster._try("sinfo", "-h", "-N", "-n", VM_NAME, "-o", "%t").strip() == "idle"

        procs.poll_until(joined, JOIN_TIMEOUT, f"{VM_NAME} to register as an idle node", why,
                         interval=0.5)
        t_joined = time.monotonic() - t0
        assert node_field(cluster, VM_NAME, "NodeAddr") == GUEST_IP
        assert VO_FEATURE in node_field(cluster, VM_NAME, "AvailableFeatures")

        job = cluster.sbatch("-p", "vo", "-w", VM_NAME, "-t", "5", command="hostname")

        def finished() -> str:
            out = cluster._try("scontrol", "show", "job", job)
            state = re.search(r"JobState=(\S+)", out)
            return out if state and state.group(1) not in ("PENDING", "RUNNING", "CONFIGURING",
                                                           "COMPLETING") else ""

        out = cluster.wait_for(finished, 120, f"job {job} to finish on {VM_NAME}")
        t_job = time.monotonic() - t0
        assert "JobState=COMPLETED" in out and "ExitCode=0:0" in out, out
        assert f"BatchHost={VM_NAME}" in out, out
        print(f"\nworker {VM_NAME}: READY {t_ready:.1f} s, node idle {t_joined:.1f} s, "
              f"job {job} completed {t_job:.1f} s after deploy")

        worker_driver.shutdown(LOCAL, DEPLOY_ID, hard=False)
        procs.poll_until(lambda: worker_driver.poll(LOCAL, DEPLOY_ID).state in (
            DomainState.OFF, DomainState.MISSING), 60, "the worker to power off on the ACPI button",
            interval=0.2)
    finally:
        with contextlib.suppress(Exception):
            worker_driver.cleanup(LOCAL, DEPLOY_ID)
        net.detach(LOCAL, DEPLOY_ID)
        cluster._try("scontrol", "delete", f"NodeName={VM_NAME}")
