"""Fault injection on a namespace SSH host running real qemu guests (issue 19).

:class:`FaultSite` is one daemon (``tests.support.qemu.qemu_test_daemon``), one namespace host
reached over SSH (``tests.support.netns``) registered as a qemu host, the tiny guest image and
a network on a bridge inside the host's namespace. It boots guests through the REST API, injects
one fault at a time and says what a VM left behind. The CI test (``tests/integration/
test_faults_ssh.py``) and the benchmark (``bench/bench_faults.py``) share it.

The faults, each with its end:

* ``sshd_listener``: the listening sshd only (existing sessions live on: cached connections
  keep working, new ones are refused);
* ``sshd_all``: sshd and every session of it (the host "goes down"; its guests keep running);
* ``link``: the host's link down (a partition: packets vanish, nothing refuses);
* ``slow``: netem delay and loss on the host's link (it answers, slowly); where the kernel has
  no ``sch_netem``, a 128 kbit/s token bucket (``tbf``) instead;
* ``reboot``: every process in the namespace killed (guests too), its taps and bridge gone,
  then sshd back: the host returns without its guests;
* ``daemon``: the front-end's daemon killed (``kill -9``), started again when the fault ends.

Names are unique to this process (namespaces ``vct<pid>h<n>``), and everything is removed by
the lab's and the daemon's teardown.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.daemon import Daemon
from tests.support.netns import NetnsHost, NetnsLab, sh
from tests.support.qemu import qemu_test_daemon
from vocloud.client import Client
from vocloud.devtools.localprocs import kill_all, poll_until, qemu_pids_under
from vocloud.guest.build import GuestImage

FAULTS = ("sshd_listener", "sshd_all", "link", "slow", "reboot", "daemon")
BRIDGE = "vcbrf"  # inside the host's namespace only
#: the daemon's settings for fault runs: a short shutdown timeout (2 x it is when the old code
#: gave a terminate up), a short monitor backoff so a returning host is seen within seconds
FAULT_ENV = {"VOCLOUD_LOG_LEVEL": "info", "VOCLOUD_SHUTDOWN_TIMEOUT": "3",
             "VOCLOUD_MONITOR_INTERVAL": "1", "VOCLOUD_HOST_BACKOFF_MAX": "4",
             "VOCLOUD_LIFECYCLE_INTERVAL": "0.5"}


@dataclass
class FaultSite:
    daemon: Daemon
    lab: NetnsLab
    host: NetnsHost
    image: GuestImage
    name: str = "node1"
    api: Client = field(init=False)

    def __post_init__(self) -> None:
        self.api = self.daemon.rest()

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        c = self.api
        c.post("/hosts", {"name": self.name, "vmm": "qemu", "transport": self.host.transport})
        self.wait_host("MONITORED", 60)
        default = self.daemon.data_dir / "datastores" / "default"
        shutil.copyfile(self.image.base_disk, default / "tiny.qcow2")
        c.post("/images", {"name": "tiny", "path": str(default / "tiny.qcow2")})
        c.post("/vnets", {"template": f'NAME="lan"\nBRIDGE="{BRIDGE}"\n'
                                      'AR=[IP="10.252.0.10", SIZE="64"]\nNETWORK_MASK="255.255.255.0"\n'})

    def template(self) -> str:
        g = self.image
        return (f'CPU=0.2\nVCPU=1\nMEMORY=128\nKERNEL="{g.vmlinux}"\nINITRD="{g.initramfs}"\n'
                f'KERNEL_CMD="{g.cmdline}"\nDISK=[IMAGE="tiny", TARGET="vda"]\nNIC=[NETWORK="lan"]\n')

    def create(self, count: int = 1) -> list[int]:
        ids: list[int] = self.api.post("/vms", {"template": self.template(), "count": count})["ids"]
        return ids

    # ------------------------------------------------------------ reading

    def vm(self, vm_id: int) -> dict[str, Any]:
        shown: dict[str, Any] = self.api.get(f"/vms/{vm_id}")
        return shown

    def state(self, vm_id: int) -> str:
        return str(self.vm(vm_id)["state"])

    def host_state(self) -> str:
        return str(self.api.get(f"/hosts/{self.name}")["state"])

    def wait_host(self, state: str, timeout: float) -> float:
        t0 = time.monotonic()
        poll_until(lambda: self.host_state() == state, timeout, f"host {self.name} {state}",
                   self.log_tail, interval=0.2)
        return time.monotonic() - t0

    def wait(self, vm_ids: list[int], states: set[str] | str, timeout: float) -> float:
        """Seconds until every VM is in one of ``states``; fails naming where they are."""
        want = {states} if isinstance(states, str) else states
        t0 = time.monotonic()

        def there() -> bool:
            now = {v: self.state(v) for v in vm_ids}
            failed = {v: st for v, st in now.items() if st.endswith("_FAILURE") and st not in want}
            if failed:  # no point waiting: say why at once
                raise AssertionError(f"VMs {failed}: {[self.vm(v)['error'] for v in failed]}")
            return all(st in want for st in now.values())

        poll_until(there, timeout,
                   f"VMs {vm_ids} to be {sorted(want)}",
                   lambda: f"{[(v, self.state(v)) for v in vm_ids]}\n{self.log_tail()}",
                   interval=0.2)
        return time.monotonic() - t0

    def log_lines(self) -> int:
        with self.daemon.log.open("rb") as f:
            return sum(1 for _ in f)

    def log_since(self, start: int) -> list[str]:
        return self.daemon.log.read_text(errors="replace").splitlines()[start:]

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.daemon.log.read_text(errors="replace").splitlines()[-n:])

    def run_dir(self, deploy_id: str) -> Path:
        """The guest's run directory: an SSH host's state lives under ``qemu/hosts/<name>``
        (per-host state directories, docs/qemu.md)."""
        return self.daemon.data_dir / "qemu" / "hosts" / self.name / deploy_id

    def qemu_pids(self, deploy_id: str) -> list[int]:
        return qemu_pids_under(self.run_dir(deploy_id))

    def links(self) -> set[str]:
        out = sh("ip", "-n", self.host.netns, "-json", "link", "show", check=False).stdout or "[]"
        return {i["ifname"] for i in json.loads(out)}

    def leftovers(self, vm_id: int) -> list[str]:
        """What a DONE VM left behind: its guest, tap, anti-spoofing chain, run directory, disk
        overlay, lease."""
        shown = self.vm(vm_id)
        deploy = shown["deploy_id"]
        data = self.daemon.data_dir
        left = []
        if self.qemu_pids(deploy):
            left.append(f"qemu {self.qemu_pids(deploy)}")
        if f"{deploy}-0" in self.links():
            left.append(f"tap {deploy}-0")
        rules = sh("ip", "netns", "exec", self.host.netns, "nft", "list", "table", "bridge", "vocloud",
                   check=False).stdout or ""
        if f"chain {deploy} " in rules or f'"{deploy}-0"' in rules:
            left.append(f"nft chain or map element of {deploy}")
        if self.run_dir(deploy).exists():
            left.append(f"run dir {self.run_dir(deploy)}")
        if (data / "datastore" / "vms" / deploy).exists():
            left.append(f"overlay {data / 'datastore' / 'vms' / deploy}")
        if shown["leases"]:
            left.append(f"lease {shown['leases']}")
        return left

    def held(self) -> dict[str, Any]:
        """What the host and the network count as used (quota/capacity and leases)."""
        h = self.api.get(f"/hosts/{self.name}")
        return {"running_vms": h["running_vms"], "alloc_mem": h["alloc_mem"],
                "leases": self.api.get("/vnets/lan")["used_leases"]}

    # ------------------------------------------------------------ faults

    def inject(self, fault: str, **opts: float) -> None:
        ns = self.host.netns
        if fault == "daemon":
            self.daemon.kill9()
        elif fault == "sshd_listener":
            if self.host.sshd is not None:
                self.host.sshd.kill()
                self.host.sshd.wait(5)
                self.host.sshd = None
        elif fault == "sshd_all":
            self.lab.stop_sshd(self.host)
        elif fault == "link":
            sh("ip", "-n", ns, "link", "set", "eth0", "down")
        elif fault == "slow":
            tc = ["nsenter", f"--net=/run/netns/{ns}", "tc", "qdisc", "add", "dev", "eth0", "root"]
            netem = sh(*tc, "netem", "delay", f"{int(opts.get('delay_ms', 400))}ms",
                       "loss", f"{opts.get('loss_pct', 10):g}%", check=False)
            if netem.returncode != 0:  # no sch_netem in this kernel: a thin pipe instead
                sh(*tc, "tbf", "rate", "128kbit", "burst", "1600", "latency", "800ms")
        elif fault == "reboot":
            kill_all(lambda: [p for p in self.host.pids() if _alive(p)], 10)
            if self.host.sshd is not None:
                self.host.sshd.wait(5)
                self.host.sshd = None
            for link in self.links():
                if link.startswith("vc"):
                    sh("ip", "-n", ns, "link", "del", link, check=False)
        else:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")

    def heal(self, fault: str) -> None:
        ns = self.host.netns
        if fault == "daemon":
            self.daemon.start()
        elif fault in ("sshd_listener", "sshd_all", "reboot"):
            self.lab.start_sshd(self.host)
        elif fault == "link":
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        elif fault == "slow":
            sh("nsenter", f"--net=/run/netns/{ns}", "tc", "qdisc", "del", "dev", "eth0", "root",
               check=False)

    def close(self) -> None:
        self.api.close()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextmanager
def fault_site(data_dir: Path, lab: NetnsLab, host: NetnsHost, image: GuestImage,
               **env: str) -> Iterator[FaultSite]:
    """A started daemon with the host, image and network registered; everything reaped after
    (the daemon, its guests and taps; the lab removes the namespace)."""
    with qemu_test_daemon(data_dir, VOCLOUD_SSH_KNOWN_HOSTS=str(lab.known_hosts),
                          VOCLOUD_SSH_KEY=str(lab.client_key), **{**FAULT_ENV, **env}) as d:
        site = FaultSite(d, lab, host, image)
        try:
            site.setup()
            yield site
        finally:
            for fault in ("link", "slow"):
                site.heal(fault)
            if host.sshd is None:
                lab.start_sshd(host)
            site.close()


def per_minute(lines: int, seconds: float) -> float:
    return lines * 60.0 / seconds if seconds > 0 else 0.0

