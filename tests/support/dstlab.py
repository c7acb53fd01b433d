"""Namespace hosts on one bridge, so they reach each other: the image-distribution lab.

:class:`tests.support.netns.NetnsLab` gives each host a point-to-point link to the root namespace
only (hosts cannot talk to each other). Distribution needs host-to-host copies, so here every
host's veth hangs on a bridge ``vdst<pid>br`` holding the front-end's address
``10.249.X.1/24``; hosts are ``vdst<pid>h<n>`` at ``10.249.X.(n+1)``, each with its own sshd
(the same config, keys and ``authorized_keys`` as the base lab). Still no default route: nothing
leaves the bridge.

:meth:`DstLab.limit` puts token-bucket filters (``tc qdisc … tbf``; this kernel has no
``sch_netem``) on every link: each host's uplink (its ``eth0``), its downlink (the bridge port)
and the front-end's uplink (the bridge device itself, which carries what the front-end sends).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from tests.support.netns import LabUnavailable, NetnsHost, NetnsLab, _kill_all, sh

PREFIX = "vdst"
_STALE = re.compile(rf"^{PREFIX}(\d+)(h\d+|br)$")


class DstLab(NetnsLab):
    """A :class:`NetnsLab` whose hosts share one bridge (see the module docstring)."""

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root)
        self.bridge = f"{PREFIX}{os.getpid()}br"
        self.front_end = ""

    def start(self) -> None:
        self.check()
        remove_stale_dst()
        super().start()
        used = sh("ip", "-o", "addr").stdout + sh("ip", "route").stdout
        block = next((x for x in range(1, 255) if f"10.249.{x}." not in used), None)
        if block is None:
            raise LabUnavailable("no free 10.249.X.0/24 block")
        self.block = block
        self.front_end = f"10.249.{block}.1"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.front_end}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def add_host(self) -> NetnsHost:
        index = len(self.hosts) + 1
        if index > 60:
            raise RuntimeError("at most 60 hosts per lab")
        name = f"{PREFIX}{os.getpid()}h{index}"
        addr = str(ipaddress.ip_address(self.front_end) + index)
        directory = self.root / name
        directory.mkdir()
        host = NetnsHost(index, name, addr, self.front_end, 22, directory)
        self.hosts.append(host)
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name)
        sh("ip", "link", "set", name, "master", self.bridge)
        sh("ip", "link", "set", name, "up")
        sh("ip", "-n", name, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        self._host_key(host)
        self.start_sshd(host)
        return host

    def limit(self, mbit: float) -> None:
        """Every link at ``mbit`` Mbit/s each way (tbf); ``0``: no limit."""
        links = [(None, self.bridge)] + [(h.netns, "eth0") for h in self.hosts] + \
                [(None, h.netns) for h in self.hosts]
        for ns, dev in links:
            base = ["ip", "netns", "exec", ns, "tc"] if ns else ["tc"]
            sh(*base, "qdisc", "del", "dev", dev, "root", check=False)
            if mbit > 0:
                burst = max(int(mbit * 1e6 / 8 / 250), 16000)  # ~4 ms of traffic
                sh(*base, "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{mbit:g}mbit",
                   "burst", str(burst), "latency", "50ms")

    def close(self) -> None:
        super().close()
        sh("ip", "link", "del", self.bridge, check=False)


def remove_stale_dst() -> None:
    """Namespaces and bridges of distribution labs whose process is gone."""
    names = [ln.split()[0] for ln in sh("ip", "netns", "list", check=False).stdout.splitlines()
             if ln.split()]
    links = [m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)", sh("ip", "-o", "link").stdout, re.M)]
    for name in names + links:
        m = _STALE.match(name)
        if not m or Path(f"/proc/{m.group(1)}").exists():
            continue
        if name in names:
            pids = [int(p) for p in sh("ip", "netns", "pids", name, check=False).stdout.split()
                    if p.isdigit()]
            _kill_all(pids)
            sh("ip", "netns", "del", name, check=False)
        sh("ip", "link", "del", name, check=False)
