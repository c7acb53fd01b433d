"""Test hosts as network namespaces, each with its own address and its own sshd.

A :class:`NetnsLab` makes hosts ``vct<pid>h<i>``: a namespace with ``lo`` up and a point-to-point
veth to the root namespace (root side ``10.250.X.4i+1/30``, namespace side ``.4i+2/30``, X chosen
free at start), and an sshd started with ``nsenter --net=/run/netns/NAME`` (not ``ip netns exec``,
which remounts /sys) on the namespace address only, with a host key, client key, authorized_keys
and known_hosts generated in the lab's directory. There is no default route inside a namespace,
so nothing a test does there can reach any other address.

Teardown kills every process in each namespace (sshd, its sessions, qemu guests started over
SSH), deletes the namespaces (which deletes their veths, bridges and taps) and the root-side veths.
A lab also removes leftovers of labs whose pytest process died (names carry the pid).

Use the session fixture ``netns_hosts``: ``hosts = netns_hosts(2)`` returns two :class:`NetnsHost`
(created once per session, shared by every test that asks). Import it into a test module or a
conftest with ``from tests.support.netns import netns_hosts  # noqa: F401``.
Set ``VOCLOUD_REQUIRE_NETNS=1`` (CI) to turn "cannot make namespaces" skips into failures.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vocloud.devtools.localprocs import kill_all, poll_until
from vocloud.drivers.base import CommandResult, HostRef
from vocloud.drivers.transport.local import LocalTransport
from vocloud.drivers.transport.ssh import SshTransport

SSHD = "/usr/sbin/sshd"
PREFIX = "vct"
_STALE = re.compile(r"^(?:vct|vscl)(\d+)h\d+$")  # this module's prefixes (see NetnsLab)
_host_counter = 0


class LabUnavailable(RuntimeError):
    """This machine cannot host namespace test hosts; the message says why."""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class NetnsHost:
    """One test host: a namespace, its address and its sshd."""

    index: int
    netns: str
    address: str
    peer: str  # the root namespace's address on the veth
    port: int
    directory: Path
    sshd: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def transport(self) -> str:
        return f"ssh://root@{self.address}" + ("" if self.port == 22 else f":{self.port}")

    def ref(self, host_id: int | None = None, vmm: str = "qemu", **attrs: str) -> HostRef:
        return HostRef(id=host_id if host_id is not None else 100 + self.index, name=self.netns,
                       vmm=vmm, transport=self.transport, attrs=dict(attrs))

    def pids(self) -> list[int]:
        """Every process in this namespace (sshd, sessions, guests), by ``ip netns pids``."""
        out = sh("ip", "netns", "pids", self.netns, check=False).stdout.split()
        return [int(p) for p in out if p.isdigit()]

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace directly (no SSH), for assertions."""
        return sh("nsenter", f"--net=/run/netns/{self.netns}", *argv, check=check)


class NetnsLab:
    """Creates and destroys namespace hosts; a context manager, usable outside pytest too."""

    def __init__(self, root: Path | None = None, prefix: str = PREFIX) -> None:
        """``prefix`` names the namespaces (``<prefix><pid>h<n>``): ``vct`` or ``vscl`` (the
        scale bench's), both cleaned up by :func:`remove_stale_labs`."""
        if not _STALE.match(f"{prefix}1h1"):
            raise ValueError(f"namespace prefix {prefix!r} would not be cleaned up after a crash")
        self.root = Path(root or tempfile.mkdtemp(prefix="vocloud-netns-"))
        self.prefix = prefix
        self.hosts: list[NetnsHost] = []
        self.block = -1
        self.blocks: list[int] = []  # one 10.250.X.0/24 per 63 hosts
        self._key = self.root / "id_ed25519"
        self.known_hosts = self.root / "known_hosts"
        self.closed = False

    # ------------------------------------------------------------ checks

    def check(self) -> None:
        if os.geteuid() != 0:
            raise LabUnavailable("namespace hosts need root (ip netns add)")
        for tool in ("ip", "nsenter", "ssh-keygen"):
            if shutil.which(tool) is None:
                raise LabUnavailable(f"{tool} not found: apt-get install iproute2 util-linux "
                                     "openssh-client")
        if not os.access(SSHD, os.X_OK):
            raise LabUnavailable(f"{SSHD} not found: apt-get install openssh-server")
        probe = f"{self.prefix}{os.getpid()}probe"
        res = sh("ip", "netns", "add", probe, check=False)
        if res.returncode != 0:
            raise LabUnavailable(f"ip netns add fails here: {res.stderr.strip()}")
        sh("ip", "netns", "del", probe, check=False)

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> NetnsLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.check()
        remove_stale_labs()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        self.block = self._free_block()
        self.blocks = [self.block]
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vocloud-test-client",
           "-f", str(self._key))
        (self.root / "authorized_keys").write_text(Path(f"{self._key}.pub").read_text())
        self.known_hosts.write_text("")

    def _free_block(self) -> int:
        """A 10.250.X.0/24 with no address or route in the root namespace yet."""
        used = sh("ip", "-o", "addr").stdout + sh("ip", "route").stdout
        for x in range(1, 255):
            if f"10.250.{x}." not in used and x not in self.blocks:
                return x
        raise LabUnavailable("no free 10.250.X.0/24 block for test hosts")

    def add_host(self) -> NetnsHost:
        """One more host, reachable over SSH when this returns."""
        global _host_counter
        index = len(self.hosts) + 1
        if (index - 1) // 63 >= len(self.blocks):  # 63 /30s per /24 (the last one is left free)
            self.blocks.append(self._free_block())
        _host_counter += 1  # names are unique per process even with several labs
        name = f"{self.prefix}{os.getpid()}h{_host_counter}"
        block, slot = self.blocks[(index - 1) // 63], (index - 1) % 63
        net = ipaddress.ip_network(f"10.250.{block}.{4 * slot}/30")
        peer, addr = str(net[1]), str(net[2])
        directory = self.root / name
        directory.mkdir()
        host = NetnsHost(index, name, addr, peer, 22, directory)
        self.hosts.append(host)  # registered first: a failure below is still torn down
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name)
        sh("ip", "addr", "add", f"{peer}/30", "dev", name)
        sh("ip", "link", "set", name, "up")
        sh("ip", "-n", name, "addr", "add", f"{addr}/30", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        self._host_key(host)
        self.start_sshd(host)
        return host

    def _host_key(self, host: NetnsHost) -> None:
        key = host.directory / "ssh_host_ed25519_key"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.netns, "-f", str(key))
        kind, blob = Path(f"{key}.pub").read_text().split()[:2]
        with self.known_hosts.open("a") as fh:
            fh.write(f"{host.address} {kind} {blob}\n")
        config = f"""\
Port {host.port}
ListenAddress {host.address}
HostKey {key}
PidFile {host.directory / 'sshd.pid'}
AuthorizedKeysFile {self.root / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
MaxSessions 32
MaxStartups 64:30:128
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""
        (host.directory / "sshd_config").write_text(config)

    def start_sshd(self, host: NetnsHost, timeout: float = 10.0) -> None:
        """Start (or restart) the host's sshd and wait until it accepts connections."""
        log = (host.directory / "sshd.log").open("ab")
        # root's ~/.bashrc on a developer machine (pyenv init: ~0.6 s) would run before every
        # command, since bash sources it for sshd sessions; a real host's rc files are quick. So
        # sshd gets a private mount namespace with an empty file over it; /sys and the rest of
        # the filesystem stay the root namespace's, as the qemu driver expects.
        rc = Path.home() / ".bashrc"
        empty = self.root / "empty_rc"
        empty.touch()
        mask = f"mount --bind {empty} {rc} && " if rc.is_file() else ""
        host.sshd = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{host.netns}", "unshare", "--mount",
             "--propagation", "private", "sh", "-c",
             f'{mask}exec {SSHD} -D -e -f "$0"', str(host.directory / "sshd_config")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        sshd = host.sshd

        def listening() -> bool:
            if sshd.poll() is not None:
                raise RuntimeError(f"sshd for {host.netns} exited {sshd.returncode}: "
                                   f"{(host.directory / 'sshd.log').read_text()[-500:]}")
            with contextlib.suppress(OSError), socket.create_connection((host.address, host.port), 0.5):
                return True
            return False

        poll_until(listening, timeout, f"sshd for {host.netns} to listen on {host.address}:{host.port}",
                   interval=0.05)

    def stop_sshd(self, host: NetnsHost) -> None:
        """The host "goes down": its sshd and every session of it die (guests are kept)."""
        victims = [p for p in host.pids() if _comm(p) == "sshd"]
        if host.sshd is not None and host.sshd.poll() is None:
            victims.append(host.sshd.pid)
        _kill_all(victims)
        if host.sshd is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                host.sshd.wait(5)
        host.sshd = None

    def close(self) -> None:
        """Kill everything in every namespace, delete namespaces and veths, remove the directory."""
        self.closed = True
        # every host's processes at once: 5 s in all, not 5 s per host
        _kill_all([pid for host in self.hosts for pid in host.pids()]
                  + [h.sshd.pid for h in self.hosts if h.sshd and h.sshd.poll() is None])
        for host in reversed(self.hosts):
            if host.sshd is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.sshd.wait(1)
            sh("ip", "netns", "del", host.netns, check=False)
            sh("ip", "link", "del", host.netns, check=False)
        self.hosts.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------ clients

    def ssh_transport(self, connect_timeout: float = 5.0, command_timeout: float = 60.0
                      ) -> SshTransport:
        """An SSH transport that trusts exactly this lab's host keys and uses its client key."""
        return SshTransport(known_hosts=self.known_hosts, client_keys=[self._key],
                            connect_timeout=connect_timeout, command_timeout=command_timeout)

    @property
    def client_key(self) -> Path:
        return self._key


class NsenterTransport:
    """A local transport whose commands run inside a namespace host (``nsenter --net``).

    It lets tests drive a namespace host the way a ``local`` host is driven (subprocess, no
    SSH), e.g. to test the bridge driver without touching the root namespace's devices.
    """

    def __init__(self, host: NetnsHost) -> None:
        self.host = host
        self._local = LocalTransport()

    def run(self, host: HostRef, argv: list[str], input: bytes | None = None,
            timeout: float | None = None) -> CommandResult:
        return self._local.run(host, ["nsenter", f"--net=/run/netns/{self.host.netns}", *argv],
                               input=input, timeout=timeout)

    def put(self, host: HostRef, local_path: str, remote_path: str) -> None:
        self._local.put(host, local_path, remote_path)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running and not a zombie (a killed child of ours stays a zombie until we wait for it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_all(pids: list[int]) -> None:
    kill_all(lambda: [p for p in set(pids) if _alive(p)], 5, interval=0.02)


def remove_stale_labs() -> None:
    """Namespaces of labs whose process is gone (a killed pytest): kill their processes, delete."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _STALE.match(name)
        if not m or Path(f"/proc/{m.group(1)}").exists():
            continue
        pids = [int(p) for p in sh("ip", "netns", "pids", name, check=False).stdout.split()
                if p.isdigit()]
        _kill_all(pids)
        sh("ip", "netns", "del", name, check=False)
        sh("ip", "link", "del", name, check=False)


# ---------------------------------------------------------------- pytest glue


_session_lab: NetnsLab | None = None
_session_users = 0  # netns_lab instances set up and not yet torn down
_session_ssh: SshTransport | None = None


@pytest.fixture(scope="session")
def netns_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsLab]:
    """The session's lab, shared by every module that imports the fixture.

    A fixture imported into several test modules gets one definition (and one instance) per
    module, so the lab itself is kept at module level here: all of them share it, and the last
    teardown at session end closes it. (Closing at the first one left the other modules'
    ``lab_ssh`` closing connections to namespaces already gone: 10-20 s each, 278 s in CI.)
    """
    global _session_lab, _session_users, _session_ssh
    if _session_lab is None or _session_lab.closed:
        lab = NetnsLab(tmp_path_factory.mktemp("netns"))
        try:
            lab.start()
        except LabUnavailable as exc:
            lab.close()
            if os.environ.get("VOCLOUD_REQUIRE_NETNS"):
                pytest.fail(str(exc))
            pytest.skip(str(exc))
        _session_lab = lab
    _session_users += 1
    try:
        yield _session_lab
    finally:
        _session_users -= 1
        if _session_users == 0:
            if _session_ssh is not None:
                _session_ssh.close()
                _session_ssh = None
            _session_lab.close()


@pytest.fixture(scope="session")
def netns_hosts(netns_lab: NetnsLab) -> Callable[[int], list[NetnsHost]]:
    """``netns_hosts(n)``: the session's first ``n`` hosts, created on first request."""

    def get(n: int) -> list[NetnsHost]:
        while len(netns_lab.hosts) < n:
            netns_lab.add_host()
        return netns_lab.hosts[:n]

    return get


@pytest.fixture(scope="session")
def lab_ssh(netns_lab: NetnsLab) -> SshTransport:
    """One SSH transport for the session, trusting the lab's host keys; closed with the lab."""
    global _session_ssh
    if _session_ssh is None:
        _session_ssh = netns_lab.ssh_transport()
    return _session_ssh
