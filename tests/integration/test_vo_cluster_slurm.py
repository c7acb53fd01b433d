"""Issue 4's acceptance on real parts: three VO pools follow a real Slurm queue.

Everything is real and runs on this machine, made (and removed) by the test:

* a Linux bridge ``vcvb<pid>`` with ``10.254.0.1/24`` (skipped if that range is in use here);
  no NAT, no forwarding, no route anywhere else;
* the harness's slurmctld + munged, configless, with ``SlurmctldHost=localhost(10.254.0.1)`` so
  guests reach it; partitions ``atlas``, ``cms``, ``alice`` are *feature nodesets*
  (``Feature=vo_<vo>``): they start empty and take whatever dynamic node registers with that feature.
  There is no accounting database, so the Slurm accounts ``atlas`` and ``cms`` are simply the
  ``-A`` of each job; the daemon maps jobs to VOs by account (its default,
  ``VOCLOUD_BATCH_VO_ATTRIBUTE=account``);
* a ``vocloud serve`` subprocess (SQLite, ``VOCLOUD_BATCH_SYSTEM=slurm``, ``SLURM_CONF`` pointing at
  the harness's slurm.conf, TCG) with this machine as its qemu host and a vnet ``vo`` on the test
  bridge (leases ``10.254.0.10``-``.17``);
* three VOs (groups ``atlas``, ``cms``, ``alice``), one pool each, 1 core and 512 MiB per worker,
  a short idle timeout, weights 3 : 1 : 1. This machine's 2 cores are overcommitted to 4
  schedulable ones (host attribute ``RESERVED_CPU=-2``, docs/hosts.md), so 4 one-core workers fit
  and the VOs' wish (4 + 3 + 1) is scarce: the weights decide. The templates ask for
  ``CPU=0.5``, but a pool's ``cores`` set the worker's CPU/VCPU (docs/pools.md).
  **atlas brings its own image**: its own template ``atlas-wn`` (owned by the VO) with its own
  disk image ``atlas-img``, so the pool's IMAGE is ``atlas-img``. **cms uses the site's standard
  worker**: the public template ``std-worker`` (no disk). **alice's workers never boot**: the
  administrator gave its pool a site template whose initrd the kernel cannot unpack (it
  panics). The templates are split as issue 9 wants: a VO's template holds only VO-level things
  (CPU, memory, its own disk, a CONTEXT ``worker_context("$NAME", ..., ip="$IP")`` without
  secrets); how a worker boots (kernel, initramfs, command line, 9p export: the worker kernel /
  initramfs of ``vocloud.guest.worker``, busybox init, the host's munged + slurmd), the worker
  network ``vo`` and ``MUNGE_KEY="$SECRET[munge]"`` are the administrator's site template
  ``worker-site`` (the daemon's ``pool_site_template``), merged into every worker, and the
  workers are created as each VO (user ``pool.<vo>``), with the VO's rights only. The daemon
  substitutes the VM's name, lease and the site's munge key (engine/secrets.py) into each
  worker's own seed, so every worker registers as a dynamic node named like its VM, at its own
  address, with its VO's feature, and no template holds the key.

The scenario, as the issue's acceptance asks, all on these real parts:

1. 6 atlas, 3 cms and 2 alice jobs are queued (``sbatch -A <vo> -p <vo>``, ``sleep 8``) before the
   host is registered, so the first plan sees the whole burst: it boots atlas 2, cms 1, alice 1
   (weighted max-min split of 4 cores, ties by name); its boot events say "boot 2 of 4 wanted".
2. The daemon is killed (-9) while those workers boot, maybe before every VM is created, and
   restarted: every boot it decided has its VM within seconds (not after a grace: CI once saw
   them created 55 s late), throughout the run no more VMs exist than the host holds (a
   duplicate boot would show as one more VM, PENDING), and no Slurm node of a VO ever lacks its
   VM (no orphan).
3. Once two atlas jobs run at once, atlas's max drops to 1: no job dies for it (every job ends
   COMPLETED, exit 0, never requeued), atlas boots nothing after the cut and drains instead.
4. alice's worker panics: the pool records the failure and backs off its image; its jobs never
   run and never disturb atlas or cms, whose jobs all complete on workers of their own VO.
5. alice's jobs are cancelled; after the idle timeout every worker is drained, its VM DONE and
   its node gone from Slurm; all pools are back to 0; no qemu, no tap, no lease is left.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import procs
from tests.support.daemon import Daemon
from tests.support.ports import free_port
from tests.support.qemu import reap_daemon
from tests.support.slurm_harness import SlurmCluster, missing_reason
from vocloud.client import Client
from vocloud.devtools.localprocs import qemu_pids_under
from vocloud.guest.build import GuestImage
from vocloud.guest.worker import WorkerImage, worker_context

pytestmark = pytest.mark.slow

SUBNET = "10.254.0."
BRIDGE_IP = SUBNET + "1"
VOS = ("atlas", "cms", "alice")
JOBS = {"atlas": 6, "cms": 3, "alice": 2}  # the 6 and 3, plus a VO whose image is broken
JOB_SECONDS = 8
WORKER_CPUS = 1
WORKER_MIB = 512
SITE_CORES = 4  # this machine's 2 cores with RESERVED_CPU=-2
IDLE_TIMEOUT = 5
TIMEOUT = 420.0  # for the whole scenario after the daemon is up


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


def _job_log(cl: VOSlurmCluster, job: str) -> str:
    """The Slurm daemons' log lines that name this job (requeues, launch failures, node
    failures), the last 40."""
    marks = (f"JobId={job} ", f"JobId={job}\n", f"job {job} ", f"job_id={job} ", f"={job}.")
    lines = [line for f in sorted((cl.root / "log").glob("*"))
             for line in f.read_text(errors="replace").splitlines(keepends=True)
             if any(m in line for m in marks)]
    return "".join(lines[-40:])


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
           "VOCLOUD_LOG_LEVEL": "info", "VOCLOUD_POOL_SITE_TEMPLATE": "worker-site"}
    d = Daemon(tmp_path, f"sqlite:///{tmp_path / 'vocloud.db'}", free_port(), env)
    try:
        d.start()
        yield d
    finally:
        reap_daemon(d.proc, tmp_path)


def _template(name: str, vo: str, conf_server: str, disk: str | None) -> str:
    """A VO's worker template: VO-level things only (no boot attribute, NIC or secret)."""
    ctx = worker_context("$NAME", b"-", conf_server=conf_server, ip="$IP", mask="24",
                         dynamic_conf=f"CPUs={WORKER_CPUS} RealMemory=200 Feature=vo_{vo}")
    del ctx["MUNGE_KEY"], ctx["MUNGE_SOCKET"]  # the site template's
    lines = [f'NAME="{name}"', 'CPU="0.5"', 'VCPU="1"', f'MEMORY="{WORKER_MIB}"']
    if disk:
        lines.append(f'DISK=[IMAGE="{disk}", TARGET="vda"]')
    lines.append("CONTEXT=[" + ", ".join(f'{k}="{v}"' for k, v in ctx.items()) + "]")
    return "\n".join(lines) + "\n"


def _site_template(name: str, worker: WorkerImage, munge_socket: str, spool_parent: str,
                   initrd: str | None = None) -> str:
    """The administrator's site template: how a worker boots, the worker network, and the
    site's munge key by name only (the daemon puts it into each worker's own seed)."""
    attrs = worker.spec_attrs()
    if initrd:
        attrs["INITRD"] = initrd
    lines = [f'NAME="{name}"'] + [f'{k}="{v}"' for k, v in attrs.items()]
    lines.append('NIC=[NETWORK="vo"]')
    lines.append(f'CONTEXT=[MUNGE_KEY="$SECRET[munge]", MUNGE_SOCKET="{munge_socket}", '
                 f'SLURMD_SPOOL_PARENT="{spool_parent}"]')
    return "\n".join(lines) + "\n"


class _Watch:
    """Samples the site every half second and checks the invariants that must hold throughout.

    * never more pool VMs alive than the host can hold (a duplicate boot request would show up
      as one more VM, PENDING for want of room);
    * never a Slurm node of a VO without a live VM of the same name (an orphaned node);
    * the peak of live workers per VO, and every planner note seen.
    """

    def __init__(self, c: Client, cl: VOSlurmCluster) -> None:
        self.c, self.cl = c, cl
        self.peak: dict[str, int] = dict.fromkeys(VOS, 0)
        self.notes: set[str] = set()
        self.max_alive = 0
        self.nodes_seen: dict[str, set[str]] = {vo: set() for vo in VOS}
        self.node_addr: dict[str, str] = {}

    def sample(self) -> dict[str, str]:
        """``{vm name: state}`` of every VM, after checking the invariants."""
        states = {v["name"]: v["state"] for v in self.c.get("/vms", all=True)}
        alive = {n for n, st in states.items() if st != "DONE"}
        self.max_alive = max(self.max_alive, len(alive))
        assert len(alive) <= SITE_CORES, f"more VMs than the site holds: {sorted(alive)} {states}"
        for vo in VOS:
            self.peak[vo] = max(self.peak[vo], sum(n.startswith(f"{vo}-wn") for n in alive))
        for p in self.c.get("/pools"):
            self.notes.update(p["notes"])
        out = self.cl._try("sinfo", "-h", "-N", "-o", "%N %o %f")
        for line in out.splitlines():
            name, addr, features = [*line.split(), "", ""][:3]
            for vo in VOS:
                if f"vo_{vo}" in features:
                    self.nodes_seen[vo].add(name)
                    self.node_addr[name] = addr
                    # sinfo and the VM list are two reads: a node may outlive its VM by a poll
                    assert name in states, f"node {name} has no VM at all: {states}"
        return states


@pytest.mark.timeout(600)
def test_vo_pools_follow_a_real_slurm_queue(
        pool_daemon: Daemon, vo_cluster: VOSlurmCluster, vo_bridge: str,
        worker_image: WorkerImage, guest_image: GuestImage, tmp_path: Path) -> None:
    d, cl = pool_daemon, vo_cluster
    t0 = time.monotonic()
    deadline = t0 + TIMEOUT
    key = (cl.root / "munge" / "munge.key").read_bytes()
    conf_server = f"{BRIDGE_IP}:{cl.ctld_port}"
    sock = str(cl.munge_socket)  # AuthInfo=socket=...: the guest's munged serves that path
    broken = tmp_path / "broken-initrd"
    broken.write_bytes(b"this VO image is not a cpio archive\n" * 1000)  # kernel panics
    secrets = d.data_dir / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "munge").write_bytes(key)
    (secrets / "munge").chmod(0o600)
    c = d.rest()
    watch = _Watch(c, cl)
    c.post("/vnets", {"template": f'NAME="vo"\nBRIDGE="{vo_bridge}"\n'
                                           f'AR=[IP="{SUBNET}10", SIZE="8"]\n'})
    users = {}
    for vo in VOS:
        c.post("/groups", {"name": vo})
        users[vo] = c.post("/users", {"name": f"{vo}-admin", "group": vo})["token"]
    # the administrator's site templates (private): every pool's, and alice's broken one
    c.post("/templates", {"name": "worker-site",
                                   "template": _site_template("worker-site", worker_image, sock,
                                                              str(cl.root / "spool"))})
    c.post("/templates", {"name": "broken-site", "template": _site_template(
        "broken-site", worker_image, sock, str(cl.root / "spool"), initrd=str(broken))})
    # cms: the site's standard worker, a public template without a disk
    c.post("/templates", {"name": "std-worker", "public": True, "template": _template(
        "std-worker", "cms", conf_server, None)})
    # atlas brings its own image and template; alice a template of its own
    with d.rest(users["atlas"]) as a, guest_image.base_disk.open("rb") as disk:
        a.upload("/images/upload", disk, guest_image.base_disk.stat().st_size,
                 {"name": "atlas-img", "format": "qcow2"})  # a VO uploads (issue 9)
        a.post("/templates", {"name": "atlas-wn", "template": _template(
            "atlas-wn", "atlas", conf_server, "atlas-img")})
    with d.rest(users["alice"]) as a:
        a.post("/templates", {"name": "alice-wn", "template": _template(
            "alice-wn", "alice", conf_server, None)})
    key_b64 = base64.b64encode(key).decode()
    for t in c.get("/templates"):  # the key is in no template, its name in the site's only
        assert key_b64 not in str(t), t["name"]
        assert ("$SECRET[munge]" in str(t)) == t["name"].endswith("-site"), t["name"]
    # a VO member cannot boot a worker to read the key
    err = d.refused("POST", "/templates/worker-site/instantiate", users["atlas"], json={})
    assert err.status in (403, 404), err  # not even visible to the VO
    err = d.refused("POST", "/vms", users["atlas"],
                    json={"template": 'CPU=1\nMEMORY=64\nCONTEXT=[K="$SECRET[munge]"]\n'})
    assert err.status == 400 and "site secret" in err.message, err
    # a pool template may hold nothing only an administrator may set, whoever writes it
    c.post("/templates", {"name": "virtfs-wn", "public": True,
                                   "template": 'CPU=1\nMEMORY=64\nVIRTFS="/"\n'})
    err = d.refused("POST", "/pools", json={"vo": "atlas", "template": "virtfs-wn", "cores": 1,
                                            "memory": 64})
    assert err.status == 400 and "VIRTFS" in err.message, err
    policy = {"cores": WORKER_CPUS, "memory": WORKER_MIB, "min": 0, "max": 4,
              "idle_timeout": IDLE_TIMEOUT, "scale_down_delay": 0, "boot_timeout": 120}
    c.post("/pools", {"vo": "atlas", "template": "atlas-wn", **policy, "weight": 3})
    c.post("/pools", {"vo": "cms", "template": "std-worker", **policy, "weight": 1})
    c.post("/pools", {"vo": "alice", "template": "alice-wn", **{**policy, "max": 1},
                               "site_template": "broken-site"})

    def why() -> str:
        pools = {p["vo"]: p for p in c.get("/pools")}
        events = {vo: [f"{e['action']} {e['reason']}" for e in c.get(f"/pools/{vo}/events")]
                  for vo in VOS}
        vms = c.get("/vms", all=True)
        logs = "\n".join(f"--- vm {v['id']} {v['name']} {v['state']}\n"
                         + c.get(f"/vms/{v['id']}/log")["log"][-1500:]
                         for v in vms if v["state"] != "DONE")
        daemon_log = (d.data_dir / "daemon.log").read_text(errors="replace")[-3000:]
        return (f"pools: {pools}\nevents: {events}\nvms: {vms}\n"
                f"squeue: {cl._try('squeue', '-o', '%i %a %P %T %r %N')}\n"
                f"sinfo: {cl._try('sinfo', '-N', '-o', '%N %t %f')}\n{logs}\n"
                f"--- daemon\n{daemon_log}\n{cl.log_tail()}")

    def job_info(job: str) -> dict[str, str]:
        out = cl._try("scontrol", "show", "job", job)
        return dict(re.findall(r"\b(JobState|ExitCode|BatchHost|Account|Restarts)=(\S+)", out))

    # -- the burst is queued before the host exists, so the first plan sees all of it at once
    jobs = {cl.sbatch("-A", vo, "-p", vo, "-n1", "-c1", "--mem=100", "-t", "5",
                      command=f"sleep {JOB_SECONDS}"): vo
            for vo in VOS for _ in range(JOBS[vo])}
    t_submit = time.monotonic()
    # 2 real cores, overcommitted to 4 schedulable ones: 4 one-core workers at once, for 3 VOs
    # that want 4 + 3 + 1: capacity is scarce and the weights (3:1:1) decide.
    c.post("/hosts", {"name": "local", "vmm": "qemu",
                               "attrs": {"RESERVED_CPU": str(2 - SITE_CORES)}})
    procs.wait_until(lambda: all(h["state"] == "MONITORED" and h["total_cpu"] == SITE_CORES
                      for h in c.get("/hosts")), deadline, "the qemu host to be MONITORED", why)

    # -- first plan: boots split by weight
    def first_boots() -> dict[str, int] | None:
        watch.sample()
        boots = {vo: [e["count"] for e in c.get(f"/pools/{vo}/events") if e["action"] == "boot"]
                 for vo in VOS}
        return {vo: b[0] for vo, b in boots.items()} if all(boots.values()) else None

    first = procs.wait_until(first_boots, deadline, "the first boots of every pool", why)
    assert first == {"atlas": 2, "cms": 1, "alice": 1}, (first, watch.notes)
    # the persisted decisions say that capacity was short (the plan's notes, "capacity scarce,
    # boots split by weight", last only until the next pass, so a sample may miss them)
    reasons = {vo: next(e["reason"] for e in c.get(f"/pools/{vo}/events") if e["action"] == "boot")
               for vo in VOS}
    assert reasons["atlas"].startswith("boot 2 of 4 wanted:"), reasons
    assert reasons["cms"].startswith("boot 1 of 3 wanted:"), reasons

    # -- restart the daemon (kill -9) while the workers boot, maybe before every VM is created:
    # nothing is booted twice (the watch would see a fifth VM, left PENDING for want of room)
    d.kill9()
    d.start()
    c.close()
    c = watch.c = d.rest()
    t_restart = time.monotonic()

    def all_created() -> bool:  # a boot decided by the killed daemon is carried out at once
        watch.sample()
        return all(v["vm_id"] is not None for vo in VOS for v in c.get(f"/pools/{vo}")["vms"]
                   if v["state"] == "REQUESTED")

    procs.wait_until(all_created, min(deadline, t_restart + 20), "every decided boot to have its VM", why)
    for _ in range(6):  # a few controller cycles after the restart
        watch.sample()
        time.sleep(0.5)

    # -- while atlas's jobs run on two or more workers, its max drops to 1: no job may die for it
    def atlas_busy() -> bool:
        watch.sample()
        running = [j for j, vo in jobs.items() if vo == "atlas" and job_info(j).get("JobState") == "RUNNING"]
        return len(running) >= 2

    procs.wait_until(atlas_busy, deadline, "two atlas jobs running at once", why)
    c.patch("/pools/atlas", {"max": 1})
    lowered_at = time.time()

    # -- every atlas and cms job completes on its VO's worker; alice backs off and never runs
    def all_done() -> bool:
        watch.sample()
        infos = {j: job_info(j) for j, vo in jobs.items() if vo != "alice"}
        bad = {j: i for j, i in infos.items() if i.get("JobState") in
               ("FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT", "BOOT_FAIL", "OUT_OF_MEMORY")}
        assert not bad, f"jobs failed: {bad}\n{why()}"
        return all(i.get("JobState") == "COMPLETED" for i in infos.values())

    procs.wait_until(all_done, deadline, "every atlas and cms job to complete", why)
    t_jobs = time.monotonic()
    for job, vo in jobs.items():
        info = job_info(job)
        if vo == "alice":
            assert info["JobState"] == "PENDING", info
            continue
        assert info["ExitCode"] == "0:0" and info["Account"] == vo, info
        # never requeued: no worker went from under it (a rare flake in loaded CI runs, sessions
        # 5 and 14: the Slurm log's lines about the job say why, for the next one who sees it)
        assert info["Restarts"] == "0", f"{info}\n{_job_log(cl, job)}\n{why()}"
        assert info["BatchHost"].startswith(f"{vo}-wn"), info  # ran on its VO's worker
    atlas_events = c.get("/pools/atlas/events")
    late_boots = [e for e in atlas_events if e["action"] == "boot" and e["time"] > lowered_at + 1]
    assert not late_boots, late_boots  # max 1: no atlas boot after the cut
    alice = c.get("/pools/alice")
    assert alice["running"] == 0 and [b for b in alice["backoff"] if b["failures"] >= 1], alice
    alice_events = [e["action"] for e in c.get("/pools/alice/events")]
    assert "boot-failed" in alice_events and "joined" not in alice_events, alice_events
    assert not watch.nodes_seen["alice"], watch.nodes_seen

    # -- the alice jobs are withdrawn; after the idle timeout every pool is back to 0
    cl._try("scancel", *[j for j, vo in jobs.items() if vo == "alice"])

    def scaled_in() -> bool:
        states = watch.sample()
        workers = [n for n in states if re.match(r"(atlas|cms|alice)-wn", n)]
        if not workers or any(states[n] != "DONE" for n in workers):
            return False
        nodes = cl._try("sinfo", "-h", "-N", "-o", "%N").split()
        if any(n in nodes for n in workers):
            return False
        return all(not c.get(f"/pools/{vo}")["vms"] for vo in VOS)

    procs.wait_until(scaled_in, deadline, "workers drained, VMs DONE and pools back to 0", why)
    t_done = time.monotonic()
    events = {vo: [e["action"] for e in c.get(f"/pools/{vo}/events")] for vo in VOS}
    for vo in ("atlas", "cms"):
        assert "boot" in events[vo] and "joined" in events[vo], events
        assert "drain" in events[vo] and "stopped" in events[vo], events
        assert "refused" not in events[vo] and "boot-failed" not in events[vo], why()
    for p in c.get("/pools"):
        assert (p["min"], p["booting"], p["running"], p["draining"], p["idle"]) == (0,) * 5, p
    final = c.get("/vms", all=True)
    names = [v["name"] for v in final]
    assert len(names) == len(set(names)), names  # no worker booted twice under one name
    booted = {vo: sorted(n for n in names if n.startswith(f"{vo}-wn")) for vo in VOS}
    assert watch.peak["atlas"] >= 2 and watch.peak["cms"] >= 1, watch.peak
    assert 1 <= len(booted["cms"]) <= JOBS["cms"] and 2 <= len(booted["atlas"]) <= 4, booted
    for vo in ("atlas", "cms"):
        for name in booted[vo]:  # created as the VO (issue 9), not as the site
            vm = c.get(f"/vms/{_vm_id(final, name)}")
            assert (vm["group"], vm["user"]) == (vo, f"pool.{vo}"), (name, vm["user"])
        assert watch.nodes_seen[vo] <= set(booted[vo]), (watch.nodes_seen, booted)
    assert all(addr.startswith(SUBNET) for addr in watch.node_addr.values()), watch.node_addr
    shown = {p["vo"]: p for p in c.get("/pools")}
    assert shown["atlas"]["image"] == "atlas-img" and shown["cms"]["image"] == "std-worker", shown
    taps = {c.get(f"/vms/{v['id']}")["deploy_id"] + "-0" for v in final}
    assert c.get("/vnets/vo")["used_leases"] == 0
    c.close()

    assert qemu_pids_under(d.data_dir) == []
    assert not taps & _links(), taps & _links()
    assert d.stop() == 0
    print(f"\nVO cluster: jobs {JOBS}, workers booted { {vo: len(v) for vo, v in booted.items()} }, "
          f"peak {watch.peak}; atlas+cms jobs done {t_jobs - t_submit:.1f} s after sbatch, "
          f"pools back to 0 after {t_done - t_submit:.1f} s; whole scenario "
          f"{time.monotonic() - t0:.1f} s")


def _vm_id(vms: list[dict[str, Any]], name: str) -> int:
    return int(next(v["id"] for v in vms if v["name"] == name))
