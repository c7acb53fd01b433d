"""Issue 13's second-installation acceptance on real parts: a VO pool of the first site bursts
to a second vocloud installation through that site's own EC2 API; the burst worker is a real
qemu guest at the second site, and its slurmd joins the first site's real Slurm and runs a job.

Both installations run on this machine, each with its own network:

* **site 1** (root namespace): the harness's slurmctld + munged (configless, dynamic nodes,
  partition ``atlas`` = the nodes with feature ``vo_atlas``), listening on the root side of the
  netns lab's veth; a ``vocloud serve`` (SQLite, ``VOCLOUD_BATCH_SYSTEM=slurm``) with one sim
  host that is full (a 1-core host holding a 1-core VM), an ``ec2`` host ``partner`` whose
  endpoint is site 2's ``/ec2/`` with site 2's access key as a site secret, ``EC2_CONTEXT=yes``,
  ``EC2_IMAGES`` mapping site 1's worker image to site 2's AMI, and a pool for VO ``atlas``
  (burst limit 1). The pool's site template names the munge key only as ``$SECRET[munge]``;
* **site 2**: a second ``vocloud serve`` whose only host is a namespace host of the netns lab
  (``tests/support/netns.py``) reached over SSH: its guests live on a bridge ``b2br<pid>``
  inside that namespace (``10.248.13.0/24``, gateway ``.1`` in the namespace, forwarding on in
  the namespace only); the root namespace routes that /24 to the namespace's veth end, so site
  1's slurmctld and the guest's slurmd reach each other both ways (no NAT, nothing else routed).
  Site 2's administrator registered the worker guest as public images (kernel, initramfs, and
  the Slurm export tree as an ISO 9660 disk: a cloud user may not name a host directory, so no
  9p export) and gave the partner's group a network; the partner's user ``site1`` made the AMI:
  its own template booting those images (``OS=[KERNEL_DS=...]``), with ``CONTEXT=[NETWORK=YES]``.

Scenario: ``sbatch -A atlas -p atlas`` at site 1 -> the pool boots a worker; the site is full,
so it bursts to ``partner`` ("site full" in the pool's events) -> site 1's ec2 driver calls
RunInstances at site 2 with the worker's context (node name, controller, the munge key) as
UserData -> site 2 boots the guest in its namespace, the UserData in its seed -> the guest's
init takes the Slurm variables from the user data and the network from site 2's context ->
slurmd registers at site 1 from site 2's address -> the job COMPLETES on it -> after the idle
timeout the pool drains the worker, site 1 terminates the instance, site 2's VM is DONE, and
the node is gone from Slurm. The munge key is in no template and in neither daemon's log.
"""

# ruff: noqa: F811  (the harness's fixtures are imported here, and pytest passes them back as arguments)
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support import procs
from tests.support.daemon import Daemon
from tests.support.netns import NetnsHost, NetnsLab, netns_hosts, netns_lab  # noqa: F401
from tests.support.ports import free_port
from tests.support.qemu import qemu_test_daemon, reap_daemon
from tests.support.slurm_harness import SlurmCluster, missing_reason
from vocloud.devtools.localprocs import qemu_pids_under
from vocloud.devtools.netbridge import subnet_in_use
from vocloud.guest.worker import WorkerImage, worker_context

pytestmark = pytest.mark.slow

Hosts = Callable[[int], list[NetnsHost]]
SUBNET = "10.248.13."  # site 2's guest network, inside the namespace
GATEWAY = SUBNET + "1"
WORKER_MIB = 512
IDLE_TIMEOUT = 5
TIMEOUT = 300.0  # the whole scenario once both sites are up (TCG on a loaded machine)


class BurstSlurm(SlurmCluster):
    """The harness's cluster, reachable at ``address`` (the root side of the veth), configless,
    with a partition ``atlas`` made of whatever dynamic node registers with ``vo_atlas``."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def _write_files(self) -> None:
        super()._write_files()
        text = self.conf.read_text()
        text = re.sub(r"(?m)^SlurmctldHost=.*$", f"SlurmctldHost=localhost({self.address})", text)
        text = text.replace(" Default=YES", "")
        text += ("SlurmctldParameters=enable_configless\n"
                 "NodeSet=atlas_ns Feature=vo_atlas\n"
                 "PartitionName=atlas Nodes=atlas_ns MaxTime=INFINITE State=UP\n")
        self.conf.write_text(text)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture
def guest_net(netns_hosts: Hosts) -> Iterator[tuple[NetnsHost, str]]:
    """Site 2's host (a namespace) with its guest bridge, and the route to it from here; all
    removed afterwards whatever happens."""
    reason = missing_reason()
    if reason is not None:
        procs.skip_or_fail(reason)
    if subnet_in_use(SUBNET):
        procs.skip_or_fail(f"{SUBNET}0/24 is already in use on this machine")
    host = netns_hosts(1)[0]
    bridge = f"b2br{os.getpid() % 100000}"
    host.exec("ip", "link", "add", bridge, "type", "bridge")
    try:
        host.exec("ip", "addr", "add", f"{GATEWAY}/24", "dev", bridge)
        host.exec("ip", "link", "set", bridge, "up")
        host.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")  # this namespace's own setting
        sh("ip", "route", "add", f"{SUBNET}0/24", "via", host.address)
        yield host, bridge
    finally:
        sh("ip", "route", "del", f"{SUBNET}0/24", check=False)
        host.exec("sysctl", "-qw", "net.ipv4.ip_forward=0", check=False)
        host.exec("ip", "link", "del", bridge, check=False)


@pytest.fixture
def slurm(guest_net: tuple[NetnsHost, str]) -> Iterator[BurstSlurm]:
    cluster = BurstSlurm(guest_net[0].peer)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def site2(tmp_path: Path, netns_lab: NetnsLab, guest_net: tuple[NetnsHost, str]) -> Iterator[Daemon]:
    with qemu_test_daemon(tmp_path / "site2", VOCLOUD_SSH_KNOWN_HOSTS=str(netns_lab.known_hosts),
                          VOCLOUD_SSH_KEY=str(netns_lab.client_key), VOCLOUD_LOG_LEVEL="info",
                          VOCLOUD_INSTANCE_TYPES=f"w1=1:{WORKER_MIB}, w2=2:1024") as d:
        yield d


@pytest.fixture
def site1(tmp_path: Path, slurm: BurstSlurm) -> Iterator[Daemon]:
    data = tmp_path / "site1"
    data.mkdir(mode=0o700)  # the store and the secrets hold the munge key and site 2's keys
    env = {"VOCLOUD_BATCH_SYSTEM": "slurm", "SLURM_CONF": str(slurm.conf),
           "VOCLOUD_POOL_INTERVAL": "1", "VOCLOUD_MONITOR_INTERVAL": "2",
           "VOCLOUD_BOOT_TIMEOUT": "240", "VOCLOUD_SHUTDOWN_TIMEOUT": "60",
           "VOCLOUD_LOG_LEVEL": "info", "VOCLOUD_POOL_SITE_TEMPLATE": "worker-site"}
    d = Daemon(data, f"sqlite:///{data / 'vocloud.db'}", free_port(), env)
    try:
        d.start()
        yield d
    finally:
        reap_daemon(d.proc, data)


def _secret(d: Daemon, name: str, value: bytes) -> None:
    secrets = d.data_dir / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    (secrets / name).write_bytes(value)
    (secrets / name).chmod(0o600)


def _root_iso(tree: Path, dest: Path) -> Path:
    """The Slurm export tree as an ISO 9660 image (Rock Ridge keeps modes, owners, links)."""
    sh("xorriso", "-as", "mkisofs", "-quiet", "-R", "-V", "VOCLOUD_EXPORT", "-o", str(dest), str(tree))
    return dest


def _site2_setup(d: Daemon, worker: WorkerImage, host: NetnsHost, bridge: str,
                 tmp: Path) -> tuple[str, str, str]:
    """Site 2's administrator: the namespace host, the worker images (public), a network for the
    partner's group, and the partner's user with an access key; the user makes the AMI.
    Returns the access key id, its secret and the AMI."""
    store = d.data_dir / "datastores" / "default"
    store.mkdir(parents=True, exist_ok=True)
    files = {"b2-kernel": shutil.copyfile(worker.vmlinux, store / "b2-vmlinux"),
             "b2-initrd": shutil.copyfile(worker.initramfs, store / "b2-initrd"),
             "b2-worker-root": _root_iso(worker.export or Path("/nonexistent"), store / "b2-root.iso")}
    with d.rest() as c:
        c.post("/hosts", {"name": "far", "vmm": "qemu", "transport": host.transport,
                          "attrs": {"DATASTORE_DIR": str(d.data_dir / "far-datastore")}})
        for name, path in files.items():
            c.post("/images", {"name": name, "path": str(path), "format": "raw", "public": True})
        c.post("/groups", {"name": "partner"})
        user = c.post("/users", {"name": "site1", "group": "partner"})
        c.post("/vnets", {"group": "partner", "template":
                          f'NAME="b2net"\nBRIDGE="{bridge}"\nAR=[IP="{SUBNET}10", SIZE="4"]\n'
                          f'NETWORK_MASK="255.255.255.0"\nGATEWAY="{GATEWAY}"\n'})
    with d.rest(user["token"]) as u:
        key = u.post("/access-keys", {})
        u.post("/templates", {"name": "b2-worker", "template":
                              'CPU="1"\nVCPU="1"\nMEMORY="512"\n'
                              'OS=[KERNEL_DS="$FILE[IMAGE=\\"b2-kernel\\"]", '
                              'INITRD_DS="$FILE[IMAGE=\\"b2-initrd\\"]"]\n'
                              'DISK=[IMAGE="b2-worker-root"]\nNIC=[NETWORK="b2net"]\n'
                              'CONTEXT=[NETWORK="YES"]\n'})
    ec2 = _ec2(d, key["access_key_id"], key["secret_access_key"])
    [ami] = [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"] if i["Name"] == "b2-worker"]
    return key["access_key_id"], key["secret_access_key"], ami


def _ec2(d: Daemon, key_id: str, secret: str) -> Any:
    return boto3.client("ec2", endpoint_url=f"{d.base_url}/ec2/", region_name="b2-west-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret)


def _vo_template(conf_server: str) -> str:
    """VO atlas's worker template: the shape and the Slurm join, no secret, no address (the
    worker gets its network from whichever site runs it)."""
    ctx = worker_context("$NAME", b"-", conf_server=conf_server,
                         dynamic_conf="CPUs=1 RealMemory=200 Feature=vo_atlas")
    del ctx["MUNGE_KEY"], ctx["MUNGE_SOCKET"]  # the site template's
    return ('NAME="atlas-wn"\nCPU="1"\nVCPU="1"\nMEMORY="512"\n'
            "CONTEXT=[" + ", ".join(f'{k}="{v}"' for k, v in ctx.items()) + "]\n")


@pytest.mark.timeout(600)
def test_burst_worker_is_a_qemu_guest_at_the_second_site_in_the_first_sites_slurm(
        site1: Daemon, site2: Daemon, slurm: BurstSlurm, guest_net: tuple[NetnsHost, str],
        worker_image: WorkerImage, tmp_path: Path) -> None:
    host, bridge = guest_net
    t0 = time.monotonic()
    deadline = t0 + TIMEOUT
    key_id, secret, ami = _site2_setup(site2, worker_image, host, bridge, tmp_path)
    partner = _ec2(site2, key_id, secret)
    munge = (slurm.root / "munge" / "munge.key").read_bytes()
    munge_b64 = base64.b64encode(munge).decode()
    _secret(site1, "munge", munge)
    _secret(site1, "partner", f"{key_id} {secret}\n".encode())
    c = site1.rest()
    c.post("/groups", {"name": "atlas"})
    atlas = c.post("/users", {"name": "atlas-admin", "group": "atlas"})["token"]
    # site 1's own host is full: one core, held by a VM of the administrator's
    c.post("/hosts", {"name": "site1", "cpu": 1, "memory": 4096})
    [filler] = c.post("/vms", {"template": 'NAME="filler"\nCPU=1\nMEMORY=256\n'})["ids"]
    store = site1.data_dir / "datastores" / "default"
    store.mkdir(parents=True, exist_ok=True)
    root_iso = _root_iso(worker_image.export or Path("/nonexistent"), store / "worker-root.iso")
    image = c.post("/images", {"name": "worker-root", "path": str(root_iso), "format": "raw"})
    c.post("/hosts", {"name": "partner", "vmm": "ec2", "cpu": 2, "memory": 2048, "attrs": {
        "EC2_ENDPOINT": f"{site2.base_url}/ec2/", "EC2_REGION": "b2-west-1",
        "EC2_CREDENTIALS": "partner", "EC2_TYPES": f"w1=1:{WORKER_MIB}:1, w2=2:1024:2",
        "EC2_IMAGES": f"{image['id']}={ami}", "EC2_CONTEXT": "yes", "EC2_BOOT_TIMEOUT": "240"}})
    conf_server = f"{host.peer}:{slurm.ctld_port}"
    c.post("/templates", {"name": "worker-site", "template":
                          'NAME="worker-site"\nDISK=[IMAGE="worker-root"]\n'
                          f'CONTEXT=[MUNGE_KEY="$SECRET[munge]", MUNGE_SOCKET="{slurm.munge_socket}", '
                          f'SLURMD_SPOOL_PARENT="{slurm.root / "spool"}"]\n'})
    with site1.rest(atlas) as a:
        a.post("/templates", {"name": "atlas-wn", "template": _vo_template(conf_server)})
    c.post("/pools", {"vo": "atlas", "template": "atlas-wn", "cores": 1, "memory": WORKER_MIB,
                      "min": 0, "max": 1, "idle_timeout": IDLE_TIMEOUT, "scale_down_delay": 0,
                      "boot_timeout": 240, "burst_limit": 1})
    procs.wait_until(lambda: c.get(f"/vms/{filler}")["state"] == "RUNNING", deadline, "the filler VM")
    for t in c.get("/templates"):  # the key is in no template; site 2's secret nowhere in REST
        assert munge_b64 not in str(t) and secret not in str(t), t["name"]
    assert secret not in str(c.get("/hosts/partner"))

    def site2_vms() -> list[dict[str, Any]]:
        return list(site2.api("GET", "/vms", params={"all": "true"}))

    def why() -> str:
        out = [f"pool: {c.get('/pools/atlas')}",
               f"events: {[(e['action'], e['reason']) for e in c.get('/pools/atlas/events')]}",
               f"site 1 vms: {c.get('/vms', all=True)}",
               f"squeue: {slurm._try('squeue', '-o', '%i %a %P %T %r %N')}",
               f"sinfo: {slurm._try('sinfo', '-N', '-o', '%N %t %o %f')}"]
        for v in site2_vms():
            out += [f"--- site 2 vm {v['id']} {v['name']} {v['state']}",
                    site2.api("GET", f"/vms/{v['id']}/log")["log"][-2500:]]
        for name, d in (("site 1", site1), ("site 2", site2)):
            out += [f"--- {name} daemon", d.log.read_text(errors="replace")[-2500:]]
        return "\n".join(out) + "\n" + slurm.log_tail()

    def job_info(job: str) -> dict[str, str]:
        out = slurm._try("scontrol", "-o", "show", "job", job)
        return dict(re.findall(r"\b(JobState|ExitCode|BatchHost|Account|Restarts)=(\S+)", out))

    # -- a job for the VO: the pool boots a worker; the site is full, so it goes to the partner
    job = slurm.sbatch("-A", "atlas", "-p", "atlas", "-n1", "-c1", "--mem=100", "-t", "5",
                       command="hostname; sleep 2")
    t_submit = time.monotonic()

    def burst_vm() -> dict[str, Any] | None:
        vms = [v for v in c.get("/vms", all=True) if v["name"].startswith("atlas-wn")]
        return vms[0] if vms and vms[0].get("host") == "partner" else None

    vm = procs.wait_until(burst_vm, deadline, "a worker placed on the partner cloud", why)
    events = c.get("/pools/atlas/events")
    assert any(e["action"] == "burst" and "site full" in e["reason"] for e in events), events

    def instance() -> dict[str, Any] | None:
        res = partner.describe_instances(Filters=[{"Name": "tag:vocloud:vm", "Values": [str(vm["id"])]}])
        found = [i for r in res["Reservations"] for i in r["Instances"]]
        return found[0] if found else None

    inst = procs.wait_until(instance, deadline, "the instance at site 2", why)
    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
    assert tags["vocloud:deploy-id"] == c.get(f"/vms/{vm['id']}")["deploy_id"], tags
    assert inst["InstanceType"] == "w1", inst

    def joined() -> str | None:
        for line in slurm._try("sinfo", "-h", "-N", "-o", "%N %o %f").splitlines():
            name, addr, features = [*line.split(), "", ""][:3]
            if name == vm["name"] and "vo_atlas" in features and addr.startswith(SUBNET):
                return addr
        return None

    addr = procs.wait_until(joined, deadline, f"{vm['name']} to join Slurm from site 2's network", why)
    t_joined = time.monotonic()

    def done() -> bool:
        info = job_info(job)
        assert info.get("JobState") not in ("FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT",
                                             "BOOT_FAIL", "OUT_OF_MEMORY"), f"{info}\n{why()}"
        return info.get("JobState") == "COMPLETED"

    procs.wait_until(done, deadline, f"job {job} to complete", why)
    t_job = time.monotonic()
    info = job_info(job)
    assert (info["ExitCode"], info["BatchHost"], info["Account"]) == ("0:0", vm["name"], "atlas"), info
    [there] = site2_vms()  # the guest is site 2's VM, owned by the partner's user, on its lease
    shown = site2.api("GET", f"/vms/{there['id']}")
    assert (shown["state"], shown["host"], shown["user"]) == ("RUNNING", "far", "site1"), shown
    assert shown["leases"][0]["ip"] == addr, (shown["leases"], addr)
    console = site2.api("GET", f"/vms/{there['id']}/log")["log"]
    assert "VOCLOUD-WORKER context: " in console and "variables from user data" in console, console
    assert f"node={vm['name']}" in console and "export tree from /dev/vd" in console, console
    assert munge_b64 not in console

    # -- idle: the pool drains the cloud worker; site 1 terminates the instance; site 2's VM ends
    def gone() -> bool:
        if c.get(f"/vms/{vm['id']}")["state"] != "DONE":
            return False
        if site2.api("GET", f"/vms/{there['id']}")["state"] != "DONE":
            return False
        if vm["name"] in slurm._try("sinfo", "-h", "-N", "-o", "%N").split():
            return False
        return not c.get("/pools/atlas")["vms"]  # the pool's record of it is gone too

    procs.wait_until(gone, deadline, "the worker drained, its instance terminated, VM DONE at both", why)
    t_gone = time.monotonic()
    assert inst["InstanceId"] and (instance() or {}).get("State", {}).get("Name") == "terminated"
    actions = [e["action"] for e in c.get("/pools/atlas/events")]
    assert actions.count("boot") == 1 and actions.count("burst") == 1, actions
    assert "joined" in actions and "drain" in actions and "stopped" in actions, actions
    pool = c.get("/pools/atlas")
    assert (pool["booting"], pool["running"], pool["cloud_workers"]) == (0, 0, 0), pool
    c.close()
    for d in (site1, site2):  # the key travelled as user data, and no log line holds it
        assert munge_b64 not in d.log.read_text(errors="replace")
        assert secret not in d.log.read_text(errors="replace")
    assert qemu_pids_under(site2.data_dir) == []
    print(f"\nburst to a second vocloud: worker at site 2 joined Slurm {t_joined - t_submit:.1f} s "
          f"after sbatch (from {addr}), job COMPLETED {t_job - t_submit:.1f} s, instance "
          f"terminated and VMs DONE {t_gone - t_submit:.1f} s; whole test {time.monotonic() - t0:.1f} s")
