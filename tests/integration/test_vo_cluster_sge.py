"""Issue 4, "the same scenario on Grid Engine": VO pools whose qemu workers run ``sge_execd``.

Everything is real and runs on this machine, made (and removed) by the test:

* a Linux bridge ``vcgb<pid>`` with ``10.252.0.1/24`` (skipped if that range is in use here);
  no NAT, no forwarding, no route anywhere else;
* the harness's Grid Engine cell (``sge_harness.SgeCell``) *without* an execd of its own: host
  group ``@allhosts`` starts empty, queue ``all.q`` (1 slot per host) runs on it, projects
  ``atlas`` and ``cms`` exist. Jobs map to VOs by project (``qsub -P atlas``,
  ``VOCLOUD_BATCH_VO_ATTRIBUTE=project``), and each worker is registered as an execution host
  with ``projects <its VO>``, so a VO's jobs run only on that VO's workers;
* **names**: Grid Engine reverse-resolves every execd's address and compares it with the name
  the execd announces, and ``qconf -Ae`` resolves on the client. The machine's /etc/hosts is
  never edited: the qmaster, every client command and the vocloud daemon run in their own mount
  namespaces with a private copy of it (``hosts``, in the test's temp dir) bind-mounted over
  /etc/hosts; the adapter writes ``<lease> <vm name>`` lines into that file
  (``VOCLOUD_SGE_HOSTS_FILE``) when it registers a worker and drops them when it removes it.
  A real site's DNS naming its leases (or that file being the qmaster's /etc/hosts) plays that
  part there. In the guest, the context puts the qmaster's name and bridge address in
  /etc/hosts;
* the workers are the standard worker guest (``vocloud.guest.worker``) with a Grid Engine
  context (``sge_worker_context``): the host's own ``sge_execd`` from the 9p root joins the cell,
  whose ``$SGE_ROOT`` (in /tmp) the guest sees through the shared root. The split of issue 9:
  the VOs' public template ``sge-worker`` holds only VO-level things (CPU, memory, the context);
  how a worker boots (kernel, initramfs, command line, 9p export) and the worker network are
  the administrator's site template ``sge-site``, the daemon's ``pool_site_template``, and the
  workers are created as each VO (user ``pool.<vo>``).

``test_sge_worker_joins_runs_a_job_and_leaves`` is the single-guest version (driver + adapter,
no daemon): register -> boot -> execd reports -> a job runs there -> drain -> remove.
``test_vo_pools_follow_a_real_grid_engine_queue`` is the scenario: ``vocloud serve`` with
``VOCLOUD_BATCH_SYSTEM=gridengine`` and this machine as its TCG qemu host, two VOs (atlas, cms),
one pool each (min 0, max 2, 1 core, 512 MiB; the 2-core host overcommitted to 4 with
``RESERVED_CPU=-2``), the issue's 6 atlas and 3 cms jobs -> workers boot, are
registered, their execd joins, every job completes on a worker of its VO -> after the idle
timeout the workers are drained (``qmod -d``) and removed (host group, exec host, hosts line),
the VMs reach DONE, pools are back to 0; no qemu, no tap is left.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support import procs
from tests.support.daemon import Daemon
from tests.support.ports import free_port
from tests.support.qemu import LOCAL, make_driver, reap_daemon
from tests.support.sge_harness import (
    _PE,
    _QUEUE,
    MARKER,
    SgeCell,
    missing_reason,
    private_hosts_wrapper,
)
from vocloud.batch.base import NodeState, RegistersNodes, VOMapper
from vocloud.batch.gridengine import GridEngineBatch
from vocloud.batch.runner import CommandRunner
from vocloud.devtools.localprocs import qemu_pids_under
from vocloud.drivers.accel import AccelProbe
from vocloud.drivers.base import DomainSpec, DomainState, NicSpec
from vocloud.drivers.net.bridge import BridgeDriver
from vocloud.drivers.vmm.qemu import QemuDriver
from vocloud.guest.build import GuestImage
from vocloud.guest.export import build_export
from vocloud.guest.worker import WorkerImage, sge_worker_context

pytestmark = pytest.mark.slow

SUBNET = "10.252.0."
BRIDGE_IP = SUBNET + "1"
VOS = ("atlas", "cms")
JOBS = {"atlas": 6, "cms": 3}  # the sizes
JOB_SECONDS = 8
WORKER_CPUS = 1
WORKER_MIB = 512
SITE_CORES = 4  # this machine's 2 cores with RESERVED_CPU=-2 (docs/hosts.md)
IDLE_TIMEOUT = 5
TIMEOUT = 420.0  # for the whole scenario after the daemon is up


def _skip(reason: str) -> None:
    import os

    if os.environ.get("VOCLOUD_REQUIRE_SGE"):
        pytest.fail(reason)
    procs.skip_or_fail(reason)


def _links() -> set[str]:
    out = procs.ip("-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


class VOSgeCell(SgeCell):
    """The harness's cell for elastic workers: no execd of its own, ``@allhosts`` empty,
    ``all.q`` with one slot per host, accounting on (``qacct`` tells where a job ran)."""

    def start(self) -> None:
        try:
            self._make_cell()
            self._daemon("sge_qmaster")
            self.wait_for(lambda: self._ok("qconf", "-sh"), 30, "sge_qmaster to answer")
            self._configure()
        except BaseException:
            self.stop()
            raise

    def _configure(self) -> None:
        self.run("qconf", "-as", self.host)
        sched = self.run("qconf", "-ssconf")
        fast = {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1"}
        self._apply("-Msconf", "\n".join(
            f"{k} {fast[k]}" if (k := line.split(None, 1)[0] if line.strip() else "") in fast else line
            for line in sched.splitlines()) + "\n")
        conf = self.run("qconf", "-sconf", "global")
        conf = re.sub(r"(?m)^loglevel .*$", "loglevel log_info", conf)
        conf = re.sub(r"(?m)^reporting_params .*$", "reporting_params accounting=true reporting=false "
                      "flush_time=00:00:01 joblog=false sharelog=00:00:00", conf)
        (self.root / "conf").mkdir(exist_ok=True)
        (self.root / "conf" / "global").write_text(conf)
        self.run("qconf", "-Mconf", str(self.root / "conf" / "global"))
        self._apply("-Ahgrp", "group_name @allhosts\nhostlist NONE\n")
        self._apply("-Ap", _PE)
        for project in VOS:
            self._apply("-Aprj", f"name {project}\noticket 0\nfshare 0\nacl NONE\nxacl NONE\n")
        # the jobs run in the worker VMs: their own /tmp
        self._apply("-Aq", _QUEUE.format(name="all.q", slots=WORKER_CPUS, projects="NONE",
                                         tmpdir="/tmp"))

    def submit_pending(self, project: str, command: str) -> str:
        """``qsub -P project`` while no host may run it yet: qsub then warns "job is not allowed
        to run in any queue" and exits 1 *after* submitting; that is what a pool waits for."""
        proc = self._proc("qsub", "-b", "y", "-o", "/dev/null", "-e", "/dev/null",
                          "-v", f"{MARKER}={self.root}", "-P", project, *command.split())
        m = re.search(r"Your job (\d+) ", proc.stdout + proc.stderr)
        assert m is not None, f"qsub -P {project}: {proc.returncode} {proc.stdout} {proc.stderr}"
        return m.group(1)

    @property
    def execd_spool(self) -> str:
        return str(self.spool / "execd")

    def accounting(self, job: str) -> dict[str, str]:
        """``qacct -j`` of a finished job as a dict ({} until the qmaster wrote it)."""
        out = self._try("qacct", "-j", job)
        return {m.group(1): m.group(2).strip() for m in re.finditer(r"(?m)^(\w+)\s+(.*)$", out)}

    def worker_context(self, name: str, ip: str, mac: str | None = None) -> dict[str, str]:
        return sge_worker_context(name, str(self.sge_root), qmaster_port=self.qmaster_port,
                                  execd_port=self.execd_port, qmaster_host=self.host,
                                  qmaster_ip=BRIDGE_IP, execd_spool=self.execd_spool, ip=ip,
                                  mask="24", mac=mac)


class WrappedRunner(CommandRunner):
    """A CommandRunner whose commands resolve names through the private hosts file."""

    def __init__(self, env: dict[str, str], wrap: list[str]) -> None:
        super().__init__(env=env)
        self.wrap = wrap

    def run(self, argv: Sequence[str]) -> str:
        return super().run([*self.wrap, *argv])


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sge_bridge(worker_image: WorkerImage) -> Iterator[str]:
    reason = missing_reason()
    if reason is not None:
        _skip(reason)
    if shutil.which("unshare") is None:
        _skip("the test needs unshare(1) for a private /etc/hosts")
    with procs.test_bridge("vcgb", SUBNET) as bridge:
        yield bridge


@pytest.fixture(scope="module")
def hosts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sge-names") / "hosts"
    shutil.copyfile("/etc/hosts", path)
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def vo_cell(sge_bridge: str, hosts_file: Path) -> Iterator[VOSgeCell]:
    c = VOSgeCell(hosts_file=hosts_file)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def sge_worker(worker_image: WorkerImage, vo_cell: VOSgeCell,
               tmp_path_factory: pytest.TempPathFactory) -> WorkerImage:
    """The worker on a Grid Engine export tree holding this cell's ``SGE_ROOT`` (what the execd
    reads) and an empty execd spool; the guest sees nothing else of the host."""
    tree = build_export(tmp_path_factory.mktemp("sge-export") / "tree", "gridengine",
                        includes=[vo_cell.sge_root], mkdirs=[vo_cell.execd_spool])
    return worker_image.with_export(tree.root)


def _batch(cell: VOSgeCell, hosts_file: Path) -> GridEngineBatch:
    return GridEngineBatch(VOMapper("project"), runner=WrappedRunner(cell.env, cell.wrap),
                           hosts_file=hosts_file)


# ---------------------------------------------------------------- one worker, no daemon


def test_sge_worker_joins_runs_a_job_and_leaves(
        sge_worker: WorkerImage, vo_cell: VOSgeCell, sge_bridge: str, hosts_file: Path,
        qemu_reaper: Path, accel_probe: AccelProbe, guest_image: GuestImage) -> None:
    name, ip, mac, deploy_id = "sgew-1", SUBNET + "20", "02:00:0a:fc:00:14", "vcg-1"
    base = make_driver(qemu_reaper, accel_probe, guest_image)
    drv = QemuDriver(qemu_reaper, accel_probe=base.accel_probe, probe_guest=base.probe_guest)
    batch = _batch(vo_cell, hosts_file)
    assert isinstance(batch, RegistersNodes)
    ctx = vo_cell.worker_context(name, ip, mac)
    spec = DomainSpec(vm_id=1, deploy_id=deploy_id, name=name, cpu=1.0, vcpu=1, memory_mib=WORKER_MIB,
                      nics=(NicSpec(network="vo", ip=ip, mac=mac, bridge=sge_bridge),),
                      context=ctx)
    spec = sge_worker.boot(spec)
    net = BridgeDriver(default_bridge=sge_bridge)
    drv.run_dir(deploy_id).mkdir(mode=0o700, parents=True)
    t0 = time.monotonic()
    deadline = t0 + 240

    def why() -> str:
        return (f"console:\n{drv.console(LOCAL, deploy_id)[-3000:]}\n"
                f"qstat: {vo_cell._try('qstat', '-f', '-u', '*')}\n{vo_cell.log_tail()}")

    try:
        batch.register(name, ip, "atlas")
        batch.register(name, ip, "atlas")  # idempotent
        assert f"{ip} {name}\n" in hosts_file.read_text()
        assert name in vo_cell.exec_hosts()
        assert re.search(r"(?m)^projects\s+atlas$", vo_cell.run("qconf", "-se", name))
        assert {n.name: n.state for n in batch.nodes()}.get(name) == NodeState.DOWN  # no execd yet
        net.attach(LOCAL, spec)
        drv.deploy(LOCAL, spec)

        def up() -> bool:
            return any(n.name == name and n.state == NodeState.IDLE for n in batch.nodes())

        procs.wait_until(up, deadline, f"{name}'s execd to report", why)
        t_joined = time.monotonic() - t0
        first = vo_cell.qsub("-P", "atlas", command="sleep 2")
        job = vo_cell.qsub("-P", "atlas", command="sleep 2")  # one slot: runs after the first
        other = vo_cell.qsub("-P", "cms", command="sleep 1")  # not this host's project
        for j in (first, job):
            acct = procs.wait_until(functools.partial(vo_cell.accounting, j), deadline,
                                    f"job {j} to finish", why)
            assert acct["hostname"] == name and acct["exit_status"] == "0" and acct["failed"] == "0", acct
        assert any(j.id == other and j.vo == "cms" for j in batch.pending()), batch.pending()
        vo_cell.run("qdel", other)
        t_job = time.monotonic() - t0

        batch.drain(name, "test")
        assert {n.name: n.state for n in batch.nodes()}[name] == NodeState.DRAINED
        drv.shutdown(LOCAL, deploy_id, hard=False)
        procs.wait_until(lambda: drv.poll(LOCAL, deploy_id).state in (DomainState.OFF, DomainState.MISSING),
              deadline, "the worker to power off on the ACPI button", why)
        batch.remove(name)
        batch.remove(name)  # idempotent
        assert name not in vo_cell.exec_hosts()
        assert name not in hosts_file.read_text()
        assert name not in {n.name for n in batch.nodes()}
        print(f"\nsge worker {name}: execd up {t_joined:.1f} s, job done {t_job:.1f} s after register")
    finally:
        with contextlib.suppress(Exception):
            drv.cleanup(LOCAL, deploy_id)
        net.detach(LOCAL, deploy_id)
        with contextlib.suppress(Exception):
            batch.remove(name)


# ---------------------------------------------------------------- the scenario


@pytest.fixture
def pool_daemon(tmp_path: Path, vo_cell: VOSgeCell, hosts_file: Path) -> Iterator[Daemon]:
    tmp_path.chmod(0o700)
    env = {"VOCLOUD_ACCEL": "tcg", "VOCLOUD_BATCH_SYSTEM": "gridengine",
           "VOCLOUD_BATCH_VO_ATTRIBUTE": "project", "VOCLOUD_POOL_INTERVAL": "1",
           **vo_cell.client_env, "VOCLOUD_SGE_HOSTS_FILE": str(hosts_file),
           "VOCLOUD_BOOT_TIMEOUT": "120", "VOCLOUD_SHUTDOWN_TIMEOUT": "30",
           "VOCLOUD_MONITOR_INTERVAL": "2", "VOCLOUD_LOG_LEVEL": "info",
           "VOCLOUD_POOL_SITE_TEMPLATE": "sge-site"}
    d = Daemon(tmp_path, f"sqlite:///{tmp_path / 'vocloud.db'}", free_port(), env,
               wrap=private_hosts_wrapper(hosts_file))  # serve with the private /etc/hosts
    try:
        d.start()
        yield d
    finally:
        reap_daemon(d.proc, tmp_path)


def _template(name: str, cell: VOSgeCell) -> str:
    """The VOs' (public) worker template: VO-level things only, no boot attribute, no NIC."""
    ctx = cell.worker_context("$NAME", "$IP")
    lines = [f'NAME="{name}"', 'CPU="1"', 'VCPU="1"', f'MEMORY="{WORKER_MIB}"']
    lines.append("CONTEXT=[" + ", ".join(f'{k}="{v}"' for k, v in ctx.items()) + "]")
    return "\n".join(lines) + "\n"


def _site_template(name: str, worker: WorkerImage) -> str:
    """The administrator's site template (the daemon's ``pool_site_template``): how a worker
    boots (kernel, initramfs, command line, 9p export) and the site's worker network."""
    lines = [f'NAME="{name}"'] + [f'{k}="{v}"' for k, v in worker.spec_attrs().items()]
    lines.append('NIC=[NETWORK="vo"]')
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(TIMEOUT + 180)
def test_vo_pools_follow_a_real_grid_engine_queue(
        pool_daemon: Daemon, vo_cell: VOSgeCell, sge_bridge: str, hosts_file: Path,
        sge_worker: WorkerImage) -> None:
    d, cell = pool_daemon, vo_cell
    t0 = time.monotonic()
    deadline = t0 + TIMEOUT
    c = d.rest()
    c.post("/vnets", {"template": f'NAME="vo"\nBRIDGE="{sge_bridge}"\n'
                                           f'AR=[IP="{SUBNET}10", SIZE="8"]\n'})
    for vo in VOS:
        c.post("/groups", {"name": vo})
    c.post("/templates", {"name": "sge-worker", "public": True,
                                   "template": _template("sge-worker", cell)})
    c.post("/templates", {"name": "sge-site",  # private to the administrators
                                   "template": _site_template("sge-site", sge_worker)})
    policy = {"cores": WORKER_CPUS, "memory": WORKER_MIB, "min": 0, "max": 2,
              "idle_timeout": IDLE_TIMEOUT, "scale_down_delay": 0, "boot_timeout": 180}
    for vo in VOS:
        c.post("/pools", {"vo": vo, "template": "sge-worker", **policy})
    seen_hosts: dict[str, str] = {}  # exec host -> its projects
    peak = 0

    def why() -> str:
        pools = {p["vo"]: p for p in c.get("/pools")}
        events = {vo: [f"{e['action']} {e['reason']}" for e in c.get(f"/pools/{vo}/events")]
                  for vo in VOS}
        vms = c.get("/vms", all=True)
        logs = "\n".join(f"--- vm {v['id']} {v['name']} {v['state']}\n"
                         + c.get(f"/vms/{v['id']}/log")["log"][-4000:]
                         for v in vms if v["state"] != "DONE")
        daemon_log = (d.data_dir / "daemon.log").read_text(errors="replace")[-3000:]
        running = " ".join(sorted(cell.running()))
        return (f"pools: {pools}\nevents: {events}\nvms: {vms}\n"
                f"qstat: {cell._try('qstat', '-f', '-u', '*')}\nhosts: {hosts_file.read_text()}\n"
                f"qstat -j {running}: {cell._try('qstat', '-j', running) if running else ''}\n"
                f"{logs}\n--- daemon\n{daemon_log}\n{cell.log_tail()}")

    def sample() -> dict[str, str]:
        nonlocal peak
        states = {v["name"]: v["state"] for v in c.get("/vms", all=True)}
        alive = [n for n, st in states.items() if st != "DONE"]
        peak = max(peak, len(alive))
        assert len(alive) <= SITE_CORES, states
        for host in cell.exec_hosts():
            if host not in seen_hosts:
                m = re.search(r"(?m)^projects\s+(\S+)", cell._try("qconf", "-se", host))
                seen_hosts[host] = m.group(1) if m else "?"
                assert host in states, f"exec host {host} has no VM: {states}"
        return states

    jobs = {cell.submit_pending(vo, f"sleep {JOB_SECONDS}"): vo for vo in VOS for _ in range(JOBS[vo])}
    t_submit = time.monotonic()
    c.post("/hosts", {"name": "local", "vmm": "qemu",
                               "attrs": {"RESERVED_CPU": str(2 - SITE_CORES)}})
    procs.wait_until(lambda: all(h["state"] == "MONITORED" for h in c.get("/hosts")), deadline,
          "the qemu host to be MONITORED", why)

    def all_done() -> bool:
        sample()
        return all(cell.accounting(j) for j in jobs)

    procs.wait_until(all_done, min(deadline, time.monotonic() + 300), "every job to finish", why)
    t_jobs = time.monotonic()
    for job, vo in jobs.items():
        acct = cell.accounting(job)
        print(f"job {job} {vo} on {acct.get('hostname')}: start {acct.get('start_time')}, "
              f"end {acct.get('end_time')}, wallclock {acct.get('ru_wallclock')}")
        assert acct["exit_status"] == "0" and acct["failed"] == "0", acct
        assert acct["project"] == vo and acct["hostname"].startswith(f"{vo}-wn"), acct

    def scaled_in() -> bool:
        states = sample()
        workers = [n for n in states if re.match(r"(atlas|cms)-wn", n)]
        if not workers or any(states[n] != "DONE" for n in workers):
            return False
        if any(w in cell.exec_hosts() for w in workers):
            return False
        return all(not c.get(f"/pools/{vo}")["vms"] for vo in VOS)

    procs.wait_until(scaled_in, deadline, "workers drained, removed, VMs DONE and pools back to 0", why)
    t_done = time.monotonic()
    logged = {vo: c.get(f"/pools/{vo}/events") for vo in VOS}
    events = {vo: [e["action"] for e in logged[vo]] for vo in VOS}
    for vo in VOS:
        told = "\n".join(f"{e['action']} vm={e.get('vm_id')} {e['reason']}" for e in logged[vo])
        assert "boot" in events[vo] and "joined" in events[vo], told
        assert "drain" in events[vo] and "stopped" in events[vo], told
        assert "refused" not in events[vo] and "boot-failed" not in events[vo], told
    for p in c.get("/pools"):
        assert (p["min"], p["booting"], p["running"], p["draining"], p["idle"]) == (0,) * 5, p
    final = c.get("/vms", all=True)
    names = [v["name"] for v in final]
    assert len(names) == len(set(names)), names
    # created as the VO (issue 9): each worker belongs to its VO's pool identity and group
    assert all((v["user"], v["group"]) == (f"pool.{v['group']}", v["name"].split("-wn")[0])
               for v in final), final
    assert seen_hosts and all(host.startswith(f"{projects}-wn") for host, projects in seen_hosts.items()), \
        seen_hosts  # every worker took only its own VO's jobs
    assert cell.exec_hosts() == []
    assert "NONE" in cell.run("qconf", "-shgrp", "@allhosts")
    assert not any(n in hosts_file.read_text() for n in names), hosts_file.read_text()
    assert c.get("/vnets/vo")["used_leases"] == 0
    taps = {c.get(f"/vms/{v['id']}")["deploy_id"] + "-0" for v in final}
    c.close()
    assert qemu_pids_under(d.data_dir) == []
    assert not taps & _links(), taps & _links()
    assert d.stop() == 0
    print(f"\nVO cluster on Grid Engine: jobs {JOBS}, workers {sorted(names)}, peak {peak}; jobs done "
          f"{t_jobs - t_submit:.1f} s after qsub, pools back to 0 after {t_done - t_submit:.1f} s; "
          f"whole scenario {time.monotonic() - t0:.1f} s")
