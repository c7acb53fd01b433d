"""Issue 4, first acceptance item, end to end on real parts: two VO pools follow a real Slurm queue.

Everything is real and runs on this machine, made (and removed) by the test:

* a Linux bridge ``vcvb<pid>`` with ``10.254.0.1/24`` (skipped if that range is in use here);
  no NAT, no forwarding, no route anywhere else;
* the harness's slurmctld + munged, configless, with ``SlurmctldHost=localhost(10.254.0.1)`` so
  guests reach it; partitions ``atlas`` and ``cms`` are *feature nodesets* (``Feature=vo_atlas``
  / ``vo_cms``): they start empty and take whatever dynamic node registers with that feature.
  There is no accounting database, so the Slurm accounts ``atlas`` and ``cms`` are simply the
  ``-A`` of each job; the daemon maps jobs to VOs by account (its default,
  ``VOCLOUD_BATCH_VO_ATTRIBUTE=account``);
* a ``vocloud serve`` subprocess (SQLite, ``VOCLOUD_BATCH_SYSTEM=slurm``, ``SLURM_CONF`` pointing at
  the harness's slurm.conf, TCG) with this machine as its qemu host and a vnet ``vo`` on the test
  bridge (leases ``10.254.0.10``-``.17``);
* two VOs (groups ``atlas`` and ``cms``), one pool each, min 0 / max 2, 1 core and 512 MiB per
  worker, a short idle timeout. The templates ask for ``CPU=0.5``, but a pool's ``cores`` set the
  worker's CPU/VCPU (docs/pools.md), so each worker holds 1 of this machine's 2 cores: at most two
  workers run at once, and the planner holds further boots ("site has 0 free cores"); a VO's
  second job then runs on its first worker, or on a second one booted when capacity frees.
  **atlas brings its own image**: its own template ``atlas-wn``
  (owned by the VO) with its own disk image ``atlas-img``, so the pool's IMAGE is ``atlas-img``.
  **cms uses the site's standard worker**: the public template ``std-worker`` (no disk). Both
  boot the same worker kernel/initramfs (``vocloud.guest.worker``: busybox init, the host's root
  read-only over 9p, the host's munged + slurmd) — the disk is what makes atlas's image its
  own here; a VO image with its own root tree would export that tree instead of ``/``
  (docs/worker.md). Each template's CONTEXT is ``worker_context("$NAME", key, ..., ip="$IP")``:
  the daemon substitutes the VM's name and lease, so every worker registers as a dynamic node
  named like its VM, at its own address, with its VO's feature.

Then: 2 atlas jobs and 1 cms job (``sbatch -A <vo> -p <vo>``, 1 core, ``sleep 5``) -> the pools
boot guests whose slurmd register -> every job COMPLETES on a worker of its own VO -> after the
idle timeout the workers are drained and their VMs reach DONE, their nodes leave Slurm -> both
pools are back to 0 workers; no qemu, no tap is left.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration import procs
from tests.integration.conftest import kill_qemu_under, qemu_pids_under
from tests.integration.slurm_harness import SlurmCluster, missing_reason
from tests.integration.test_daemon import Daemon, _free_port
from vocloud.guest.build import GuestImage
from vocloud.guest.worker import WorkerImage, ensure_worker_image, worker_context

pytestmark = pytest.mark.slow

SUBNET = "10.254.0."
BRIDGE_IP = SUBNET + "1"
VOS = ("atlas", "cms")
JOBS = {"atlas": 2, "cms": 1}
JOB_SECONDS = 5
WORKER_CPUS = 1
WORKER_MIB = 512
IDLE_TIMEOUT = 5
TIMEOUT = 150.0  # for the whole scenario after the daemon is up


_skip = procs.skip_or_fail


_ip = procs.ip


def _links() -> set[str]:
    out = _ip("-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


class VOSlurmCluster(SlurmCluster):
    """The harness's cluster, reachable from the test bridge, configless, one partition per VO.

    The static nodes' partitions lose ``Default=YES``: a job names its VO's partition, whose
    nodes are exactly the dynamic workers with that VO's feature.
    """

    def _write_files(self) -> None:
        super()._write_files()
        text = self.conf.read_text()
        text = re.sub(r"(?m)^SlurmctldHost=.*$", f"SlurmctldHost=localhost({BRIDGE_IP})", text)
        text = text.replace(" Default=YES", "")
        text += "SlurmctldParameters=enable_configless\n"
        for vo in VOS:
            text += (f"NodeSet={vo}_ns Feature=vo_{vo}\n"
                     f"PartitionName={vo} Nodes={vo}_ns MaxTime=INFINITE State=UP\n")
        self.conf.write_text(text)


@pytest.fixture(scope="module")
def worker_image(guest_image: GuestImage) -> WorkerImage:
    try:
        return ensure_worker_image()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        _skip(f"cannot build the worker guest: {exc}")
        raise


@pytest.fixture(scope="module")
def vo_bridge(worker_image: WorkerImage) -> Iterator[str]:
    """A bridge with 10.254.0.1/24, made here and deleted afterwards whatever happens."""
    reason = missing_reason()
    if reason is not None:
        _skip(reason)
    with procs.test_bridge("vcvb", SUBNET) as bridge:
        yield bridge


@pytest.fixture(scope="module")
def vo_cluster(vo_bridge: str) -> Iterator[VOSlurmCluster]:
    c = VOSlurmCluster()
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def pool_daemon(tmp_path: Path, vo_cluster: VOSlurmCluster) -> Iterator[Daemon]:
    tmp_path.chmod(0o700)  # the store and the run dirs hold the munge key
    env = {"VOCLOUD_ACCEL": "tcg", "VOCLOUD_BATCH_SYSTEM": "slurm", "VOCLOUD_POOL_INTERVAL": "1",
           "SLURM_CONF": str(vo_cluster.conf), "VOCLOUD_BOOT_TIMEOUT": "120",
           "VOCLOUD_SHUTDOWN_TIMEOUT": "30", "VOCLOUD_MONITOR_INTERVAL": "2",
           "VOCLOUD_LOG_LEVEL": "info"}
    d = Daemon(tmp_path, f"sqlite:///{tmp_path / 'vocloud.db'}", _free_port(), env)
    try:
        d.start()
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
        kill_qemu_under(tmp_path)
        for tap in [t for t in _links() if re.fullmatch(r"vc-\d+-\d+", t)]:
            if (tmp_path / "qemu" / tap.rsplit("-", 1)[0]).exists():
                _ip("link", "del", "dev", tap, check=False)


def _ok(r: httpx.Response) -> Any:
    assert r.status_code < 400, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json() if r.content else None


def _wait(fn: Callable[[], Any], deadline: float, what: str, why: Callable[[], str] = str) -> Any:
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{why()}")
        time.sleep(0.5)


def _template(name: str, worker: WorkerImage, vo: str, key: bytes, conf_server: str,
              munge_socket: str, disk: str | None) -> str:
    ctx = worker_context("$NAME", key, conf_server=conf_server, ip="$IP", mask="24",
                         munge_socket=munge_socket,
                         dynamic_conf=f"CPUs={WORKER_CPUS} RealMemory=200 Feature=vo_{vo}")
    attrs = {**worker.spec_attrs(), "CPU": "0.5", "VCPU": "1", "MEMORY": str(WORKER_MIB)}
    lines = [f'NAME="{name}"'] + [f'{k}="{v}"' for k, v in attrs.items()]
    if disk:
        lines.append(f'DISK=[IMAGE="{disk}", TARGET="vda"]')
    lines.append('NIC=[NETWORK="vo"]')
    lines.append("CONTEXT=[" + ", ".join(f'{k}="{v}"' for k, v in ctx.items()) + "]")
    return "\n".join(lines) + "\n"


def test_two_vo_pools_follow_a_real_slurm_queue(
        pool_daemon: Daemon, vo_cluster: VOSlurmCluster, vo_bridge: str,
        worker_image: WorkerImage, guest_image: GuestImage) -> None:
    d, cl = pool_daemon, vo_cluster
    t0 = time.monotonic()
    deadline = t0 + TIMEOUT
    key = (cl.root / "munge" / "munge.key").read_bytes()
    conf_server = f"{BRIDGE_IP}:{cl.ctld_port}"
    sock = str(cl.munge_socket)  # AuthInfo=socket=...: the guest's munged serves that path
    with d.client() as c:
        _ok(c.post("/hosts", json={"name": "local", "vmm": "qemu"}))
        _ok(c.post("/vnets", json={"template": f'NAME="vo"\nBRIDGE="{vo_bridge}"\n'
                                               f'AR=[IP="{SUBNET}10", SIZE="8"]\n'}))
        users = {}
        for vo in VOS:
            _ok(c.post("/groups", json={"name": vo}))
            users[vo] = _ok(c.post("/users", json={"name": f"{vo}-admin", "group": vo}))["token"]
        # cms: the site's standard worker, a public template without a disk
        _ok(c.post("/templates", json={"name": "std-worker", "public": True, "template": _template(
            "std-worker", worker_image, "cms", key, conf_server, sock, None)}))
        # atlas: its own image and template, owned by the VO
        with d.client(users["atlas"]) as a:
            _ok(a.post("/images", json={"name": "atlas-img", "path": str(guest_image.base_disk)}))
            _ok(a.post("/templates", json={"name": "atlas-wn", "template": _template(
                "atlas-wn", worker_image, "atlas", key, conf_server, sock, "atlas-img")}))
        policy = {"cores": WORKER_CPUS, "memory": WORKER_MIB, "min": 0, "max": 2,
                  "idle_timeout": IDLE_TIMEOUT, "scale_down_delay": 0, "boot_timeout": 120}
        _ok(c.post("/pools", json={"vo": "atlas", "template": "atlas-wn", **policy}))
        _ok(c.post("/pools", json={"vo": "cms", "template": "std-worker", **policy}))
        _wait(lambda: all(h["state"] == "MONITORED" for h in _ok(c.get("/hosts"))), deadline,
              "the qemu host to be MONITORED")

        def why() -> str:
            pools = {p["vo"]: p for p in _ok(c.get("/pools"))}
            events = {vo: [f"{e['action']} {e['reason']}" for e in _ok(c.get(f"/pools/{vo}/events"))]
                      for vo in VOS}
            vms = _ok(c.get("/vms", params={"all": True}))
            logs = "\n".join(f"--- vm {v['id']} {v['name']} {v['state']}\n"
                             + _ok(c.get(f"/vms/{v['id']}/log"))["log"][-1500:]
                             for v in vms if v["state"] != "DONE")
            daemon_log = (d.data_dir / "daemon.log").read_text(errors="replace")[-3000:]
            return (f"pools: {pools}\nevents: {events}\nvms: {vms}\n"
                    f"squeue: {cl._try('squeue', '-o', '%i %a %P %T %r %N')}\n"
                    f"sinfo: {cl._try('sinfo', '-N', '-o', '%N %t %f')}\n{logs}\n"
                    f"--- daemon\n{daemon_log}\n{cl.log_tail()}")

        # -- jobs -> workers boot and join -> every job completes on its own VO's worker
        jobs = {cl.sbatch("-A", vo, "-p", vo, "-n1", "-c1", "--mem=100", "-t", "5",
                          command=f"sleep {JOB_SECONDS}"): vo
                for vo in VOS for _ in range(JOBS[vo])}
        t_submit = time.monotonic()

        def job_info(job: str) -> dict[str, str]:
            out = cl._try("scontrol", "show", "job", job)
            return dict(re.findall(r"\b(JobState|ExitCode|BatchHost|Account)=(\S+)", out))

        seen_nodes: dict[str, set[str]] = {vo: set() for vo in VOS}
        node_addr: dict[str, str] = {}

        def all_done() -> bool:
            for node_line in cl._try("sinfo", "-h", "-N", "-o", "%N %o %f").splitlines():
                name, addr, features = [*node_line.split(), "", ""][:3]
                for vo in VOS:
                    if f"vo_{vo}" in features:
                        seen_nodes[vo].add(name)
                        node_addr[name] = addr
            infos = {j: job_info(j) for j in jobs}
            bad = {j: i for j, i in infos.items() if i.get("JobState") in
                   ("FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT", "BOOT_FAIL", "OUT_OF_MEMORY")}
            assert not bad, f"jobs failed: {bad}\n{why()}"
            return all(i.get("JobState") == "COMPLETED" for i in infos.values())

        _wait(all_done, deadline, "every job to complete", why)
        t_jobs = time.monotonic()
        for job, vo in jobs.items():
            info = job_info(job)
            assert info["ExitCode"] == "0:0" and info["Account"] == vo, info
            assert info["BatchHost"].startswith(f"{vo}-wn"), info  # ran on its VO's worker
        assert all(seen_nodes[vo] for vo in VOS), seen_nodes
        vms = {v["name"]: v for v in _ok(c.get("/vms", params={"all": True}))}
        booted = {vo: sorted(n for n in vms if n.startswith(f"{vo}-wn")) for vo in VOS}
        assert all(1 <= len(booted[vo]) <= 2 for vo in VOS), booted
        # each worker is a VM of its VO's group; its node registered from its lease's address
        for vo in VOS:
            for name in booted[vo]:
                assert _ok(c.get(f"/vms/{vms[name]['id']}"))["group"] == vo, vms[name]
            assert seen_nodes[vo] <= set(booted[vo]), (seen_nodes, booted)
        assert all(addr.startswith(SUBNET) for addr in node_addr.values()), node_addr
        shown = {p["vo"]: p for p in _ok(c.get("/pools"))}
        assert shown["atlas"]["image"] == "atlas-img" and shown["cms"]["image"] == "std-worker", shown

        # -- idle timeout -> drained -> VMs DONE -> nodes gone -> pools back to min 0
        def scaled_in() -> bool:
            states = {v["name"]: v["state"] for v in _ok(c.get("/vms", params={"all": True}))}
            workers = [n for n in states if n.startswith(("atlas-wn", "cms-wn"))]
            if not workers or any(states[n] != "DONE" for n in workers):
                return False
            nodes = cl._try("sinfo", "-h", "-N", "-o", "%N").split()
            if any(n in nodes for n in workers):
                return False
            return all(not _ok(c.get(f"/pools/{vo}"))["vms"] for vo in VOS)

        _wait(scaled_in, deadline, "workers drained, VMs DONE and pools back to 0", why)
        t_done = time.monotonic()
        events = {vo: [e["action"] for e in _ok(c.get(f"/pools/{vo}/events"))] for vo in VOS}
        for vo in VOS:
            assert "boot" in events[vo] and "joined" in events[vo], events
            assert "drain" in events[vo] and "stopped" in events[vo], events
            assert "refused" not in events[vo], events
        for p in _ok(c.get("/pools")):
            assert (p["min"], p["booting"], p["running"], p["draining"], p["idle"]) == (0,) * 5, p
        final = _ok(c.get("/vms", params={"all": True}))
        names = [v["name"] for v in final]
        assert len(names) == len(set(names)), names  # no worker booted twice under one name
        booted = {vo: sorted(n for n in names if n.startswith(f"{vo}-wn")) for vo in VOS}
        assert all(1 <= len(booted[vo]) <= 2 for vo in VOS), booted
        taps = {f"vc-{v['id']}-0" for v in final}
        assert _ok(c.get("/vnets/vo"))["used_leases"] == 0

    assert qemu_pids_under(d.data_dir) == []
    assert not taps & _links(), taps & _links()
    assert d.stop() == 0
    print(f"\nVO cluster: jobs {dict((vo, JOBS[vo]) for vo in VOS)}, workers booted "
          f"{ {vo: len(v) for vo, v in booted.items()} }; all jobs done {t_jobs - t_submit:.1f} s "
          f"after sbatch, pools back to 0 after {t_done - t_submit:.1f} s; "
          f"whole scenario {time.monotonic() - t0:.1f} s")
