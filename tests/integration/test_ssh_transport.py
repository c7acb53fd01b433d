"""The SSH transport against real sshd's in network namespaces (and the local transport).

Every address used is a namespace host's own (10.250.X.Y, only routed over the lab's veths), so
no packet leaves this machine. Tests that break a host (stop its sshd, freeze it) restore it in a
``finally``, because the hosts are shared by the whole session.
"""

# ruff: noqa: F811  (the harness's fixtures are imported here, and pytest passes them back as arguments)
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.netns import NetnsHost, NetnsLab, lab_ssh, netns_hosts, netns_lab  # noqa: F401
from vocloud.drivers.base import HostRef
from vocloud.drivers.transport import LocalTransport, SshTransport, parse_ssh, transport_for
from vocloud.drivers.transport.address import SshAddress
from vocloud.errors import DriverError

Hosts = Callable[[int], list[NetnsHost]]


def connections(host: NetnsHost) -> int:
    """How many SSH connections this host's sshd accepted so far (from its log)."""
    return (host.directory / "sshd.log").read_text().count("Connection from")


# ---------------------------------------------------------------- run and put


def test_run_reaches_each_host_by_its_own_address(netns_hosts: Hosts, lab_ssh: SshTransport) -> None:
    for host in netns_hosts(2):
        res = lab_ssh.run(host.ref(), ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        assert res.returncode == 0, res.stderr
        assert f"inet {host.address}/30" in res.stdout.decode()


def test_run_keeps_argv_stdin_stdout_stderr_and_status(netns_hosts: Hosts,
                                                        lab_ssh: SshTransport) -> None:
    ref = netns_hosts(1)[0].ref()
    odd = "it's a \"quoted\" $HOME `x` ; rm -rf / *"
    res = lab_ssh.run(ref, ["printf", "%s", odd])
    assert res.stdout.decode() == odd  # one argument, never re-parsed by the remote shell
    res = lab_ssh.run(ref, ["sh", "-c", "cat; echo oops >&2; exit 3"], input=b"\x00binary\xff")
    assert (res.returncode, res.stdout, res.stderr) == (3, b"\x00binary\xff", b"oops\n")
    res = lab_ssh.run(ref, ["no-such-command-vocloud"])
    assert res.returncode == 127


def test_put_copies_a_file_atomically(netns_hosts: Hosts, lab_ssh: SshTransport,
                                      tmp_path: Path) -> None:
    src = tmp_path / "blob"
    data = os.urandom(300_000)
    src.write_bytes(data)
    for host in netns_hosts(2):
        dest = host.directory / "received.bin"
        lab_ssh.put(host.ref(), str(src), str(dest))
        res = lab_ssh.run(host.ref(), ["sha256sum", str(dest)])
        assert res.stdout.split()[0].decode() == __import__("hashlib").sha256(data).hexdigest()
        assert not Path(str(dest) + ".part").exists()


def test_put_to_a_missing_directory_is_a_clear_error(netns_hosts: Hosts, lab_ssh: SshTransport,
                                                     tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    ref = netns_hosts(1)[0].ref()  # the shared lab's first host need not be its h1
    with pytest.raises(DriverError, match=rf"host {ref.name} .*cannot write /nonexistent/dir/f"):
        lab_ssh.put(ref, str(src), "/nonexistent/dir/f")


def test_one_connection_serves_many_commands_and_threads(netns_hosts: Hosts,
                                                         lab_ssh: SshTransport) -> None:
    host = netns_hosts(1)[0]
    lab_ssh.run(host.ref(), ["true"])  # make sure a connection is cached
    before = connections(host)
    results: list[int] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            res = lab_ssh.run(host.ref(), ["sh", "-c", f"sleep 0.2; echo {i}"])
            results.append(int(res.stdout))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(24)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(results) == list(range(24))
    assert connections(host) == before, "commands opened new connections instead of channels"
    assert time.monotonic() - t0 < 0.2 * 24, "channels did not run concurrently"


def test_command_timeout_is_a_driver_error(netns_hosts: Hosts, lab_ssh: SshTransport) -> None:
    t0 = time.monotonic()
    with pytest.raises(DriverError, match=r"timed out after 0\.5 s"):
        lab_ssh.run(netns_hosts(1)[0].ref(), ["sleep", "30"], timeout=0.5)
    assert time.monotonic() - t0 < 5


# ---------------------------------------------------------------- hosts that cannot be reached


def test_nothing_listening_is_connection_refused_quickly(netns_hosts: Hosts,
                                                         lab_ssh: SshTransport) -> None:
    host = netns_hosts(1)[0]
    ref = HostRef(7, "closed", "qemu", f"ssh://root@{host.address}:2222")
    t0 = time.monotonic()
    with pytest.raises(DriverError) as err:
        lab_ssh.run(ref, ["true"])
    assert str(err.value) == (f"host closed (ssh://root@{host.address}:2222): connection refused "
                              "(is sshd running on port 2222?)")
    assert time.monotonic() - t0 < 3


def test_frozen_sshd_is_a_timeout(netns_lab: NetnsLab, netns_hosts: Hosts) -> None:
    """sshd accepts TCP (the kernel does) but never speaks: the connect timeout fires."""
    host = netns_hosts(3)[2]
    assert host.sshd is not None
    with netns_lab.ssh_transport(connect_timeout=1.0) as ssh:
        os.kill(host.sshd.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(DriverError, match=r"connection timed out after 1 s"):
                ssh.run(host.ref(), ["true"])
            assert time.monotonic() - t0 < 4
        finally:
            os.kill(host.sshd.pid, signal.SIGCONT)
        assert ssh.run(host.ref(), ["true"]).returncode == 0  # and it recovers


def test_wrong_key_is_authentication_failed(netns_lab: NetnsLab, netns_hosts: Hosts,
                                            tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    host = netns_hosts(1)[0]
    with SshTransport(known_hosts=netns_lab.known_hosts, client_keys=[other]) as ssh, \
            pytest.raises(DriverError, match=rf"host {host.netns} \(ssh://root@{host.address}\): "
                                             "authentication failed for user 'root'"):
        ssh.run(host.ref(), ["true"])


def test_unknown_host_key_is_refused_not_trusted(netns_lab: NetnsLab, netns_hosts: Hosts,
                                                 tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = netns_hosts(1)[0]
    with SshTransport(known_hosts=empty, client_keys=[netns_lab.client_key]) as ssh, \
            pytest.raises(DriverError, match="host key not verifiable"):
        ssh.run(host.ref(), ["true"])


def test_host_that_goes_down_errors_then_comes_back(netns_lab: NetnsLab, netns_hosts: Hosts) -> None:
    host = netns_hosts(3)[2]
    with netns_lab.ssh_transport(connect_timeout=2.0) as ssh:
        assert ssh.run(host.ref(), ["true"]).returncode == 0  # a cached connection now exists
        netns_lab.stop_sshd(host)
        try:
            t0 = time.monotonic()
            with pytest.raises(DriverError, match="connection refused"):
                ssh.run(host.ref(), ["true"])
            assert time.monotonic() - t0 < 4
        finally:
            netns_lab.start_sshd(host)
        assert ssh.run(host.ref(), ["echo", "back"]).stdout == b"back\n"


# ---------------------------------------------------------------- local transport, selection


def test_local_transport_runs_and_copies(tmp_path: Path) -> None:
    local = LocalTransport()
    ref = HostRef(0, "local")
    res = local.run(ref, ["sh", "-c", "cat; exit 4"], input=b"in")
    assert (res.returncode, res.stdout) == (4, b"in")
    assert local.run(ref, ["no-such-command-vocloud"]).returncode == 127
    with pytest.raises(DriverError, match="timed out"):
        local.run(ref, ["sleep", "5"], timeout=0.2)
    (tmp_path / "a").write_text("data")
    local.put(ref, str(tmp_path / "a"), str(tmp_path / "b"))
    local.put(ref, str(tmp_path / "b"), str(tmp_path / "b"))  # same file: a no-op
    assert (tmp_path / "b").read_text() == "data"


def test_transport_for_picks_by_scheme_without_connecting() -> None:
    assert isinstance(transport_for(HostRef(0, "l")), LocalTransport)
    assert isinstance(transport_for(HostRef(1, "r", transport="ssh://root@10.250.255.2")),
                      SshTransport)
    with pytest.raises(DriverError, match="unknown transport 'telnet://x'"):
        transport_for(HostRef(2, "t", transport="telnet://x"))
    with pytest.raises(DriverError, match="bad port"):
        transport_for(HostRef(3, "p", transport="ssh://root@h:abc"))


@pytest.mark.parametrize(("url", "want"), [
    ("ssh://root@10.0.0.2", SshAddress("root", "10.0.0.2", 22)),
    ("ssh://admin@node1.example:2222", SshAddress("admin", "node1.example", 2222)),
    ("ssh://root@[fd00::2]:2200", SshAddress("root", "fd00::2", 2200)),
    ("ssh://a@b@host", SshAddress("a@b", "host", 22)),
])
def test_parse_ssh(url: str, want: SshAddress) -> None:
    assert parse_ssh(url) == want
    assert parse_ssh(want.url()) == want


def test_parse_ssh_defaults_to_the_local_user() -> None:
    import getpass

    assert parse_ssh("ssh://h").user == getpass.getuser()
    with pytest.raises(DriverError, match="names no address"):
        parse_ssh("ssh://root@")
    with pytest.raises(DriverError, match="out of range"):
        parse_ssh("ssh://h:70000")
