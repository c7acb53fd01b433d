"""The qemu driver's one-command monitor (transport/snapshot.py) against its per-read original.

The driver runs over :class:`SshOps` on a :class:`LocalTransport` (the same commands sshd would
run, without sshd): every guest state the monitor can report must come out the same both ways,
a steady host must cost exactly one command, and a host answer that is not the helper's JSON must
be an error, not guests. The real-sshd version is tests/integration/test_ssh_monitor.py.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakeguests import QmpStub, make_guest
from vocloud.drivers.base import CommandResult, DomainState, HostRef
from vocloud.drivers.transport import LocalTransport
from vocloud.drivers.transport.snapshot import HostSnapshot, parse_usage
from vocloud.drivers.vmm.qemu import QemuDriver
from vocloud.engine.probes import call_all
from vocloud.errors import DriverError

HOST = HostRef(id=1, name="sclhost", vmm="qemu", transport="ssh://root@192.0.2.1")


class Counting(LocalTransport):
    """LocalTransport that counts commands (and can answer one with a forged output)."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []
        self.forge: bytes | None = None

    def run(self, host: HostRef, argv: list[str], input: bytes | None = None,
            timeout: float | None = None) -> CommandResult:
        self.commands.append(argv)
        if self.forge is not None and argv[:2] == ["python3", "-c"]:
            return CommandResult(0, self.forge, b"")
        return super().run(host, argv, input=input, timeout=timeout)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[QemuDriver, QemuDriver, Counting, Path]]:
    """Two drivers on one state dir (snapshot / per-read), guests in every steady state."""
    counting = Counting()
    fast = QemuDriver(tmp_path, transports=lambda h: counting)
    slow = QemuDriver(tmp_path, transports=lambda h: counting, batch_monitor=False)
    top = fast.host_state_dir(HOST)
    with QmpStub([top / f"vc-{i}" / "qmp.sock" for i in (1, 2)]) as stub:
        make_guest(top, "vc-1", 1, pid=stub.pid)  # RUNNING
        make_guest(top, "vc-2", 2, pid=stub.pid, ready=False)  # RUNNING once the marker is seen
        make_guest(top, "vc-3", 3, pid=None, intent="shutdown")  # OFF
        make_guest(top, "vc-4", 4, pid=2 ** 22 + 7, ready=False)  # FAILED: the process is gone
        (top / "not-a-guest").mkdir()
        yield fast, slow, counting, top


def test_snapshot_monitor_reports_what_the_per_read_monitor_does(
        site: tuple[QemuDriver, QemuDriver, Counting, Path]) -> None:
    fast, slow, _, _ = site
    a = fast.monitor(HOST)
    b = slow.monitor(HOST)
    assert {k: v.state for k, v in a.domains.items()} == {
        "vc-1": DomainState.RUNNING, "vc-2": DomainState.RUNNING, "vc-3": DomainState.OFF,
        "vc-4": DomainState.FAILED}
    assert {k: (v.state, v.detail, v.memory_mib) for k, v in a.domains.items()} == \
        {k: (v.state, v.detail, v.memory_mib) for k, v in b.domains.items()}
    assert (a.total_cpu, a.total_mem_mib, a.attrs["ACCEL"]) == (b.total_cpu, b.total_mem_mib,
                                                                 b.attrs["ACCEL"])
    assert a.domains["vc-1"].memory_mib > 0  # the stub's RSS, read from /proc/PID/stat


def test_a_steady_host_costs_one_command_per_pass(
        site: tuple[QemuDriver, QemuDriver, Counting, Path]) -> None:
    fast, slow, counting, top = site
    fast.monitor(HOST)  # vc-2 sees its marker and gets its ready file (a write: a command)
    shutil.rmtree(top / "vc-4")  # a failed guest's detail is read the ordinary way: not steady
    counting.commands.clear()
    info = fast.monitor(HOST)
    assert len(counting.commands) == 1, counting.commands
    assert counting.commands[0][:2] == ["python3", "-c"]
    assert len(info.domains) == 3
    counting.commands.clear()
    slow.monitor(HOST)
    assert len(counting.commands) >= 15  # what one pass cost before: ~9 per live guest


def test_a_write_during_the_pass_is_read_back_from_the_host(
        site: tuple[QemuDriver, QemuDriver, Counting, Path]) -> None:
    fast, _, _, top = site
    assert not (top / "vc-2" / "ready").exists()
    assert fast.monitor(HOST).domains["vc-2"].state == DomainState.RUNNING
    assert (top / "vc-2" / "ready").exists()  # the snapshot said "no ready": the write went out


def test_a_forged_or_broken_answer_is_an_error_not_guests(
        site: tuple[QemuDriver, QemuDriver, Counting, Path]) -> None:
    fast, _, counting, _ = site
    for forged in (b"", b"[]", b'{"nproc": 1}', b"not json", b'{"guests": {"x": 1}}'):
        counting.forge = forged
        with pytest.raises(DriverError, match="monitor helper's answer is malformed"):
            fast.monitor(HOST)


def test_parse_usage_rejects_garbage() -> None:
    assert parse_usage("", "", 100, 4096) == (0.0, 0)
    assert parse_usage("1 (x) R " + "a " * 30, "10.0 5.0", 100, 4096) == (0.0, 0)
    assert parse_usage("1 (x) R" + " 0" * 10 + " 100 100" + " 0" * 6 + " 200 0 2560", "12 0",
                       100, 4096) == (0.2, 10)


def test_snapshot_parse_keeps_bytes_exactly() -> None:
    raw = bytes(range(256))
    doc = json.dumps({"nproc": 2, "mem_total_kib": 2048, "mem_avail_kib": 1024, "uptime": "1 1",
                      "hz": 100, "page": 4096, "entries": ["g"],
                      "guests": {"g": {"files": {"spec.json": raw.decode("latin-1")},
                                       "exists": {"ready": True}}}})
    snap = HostSnapshot.parse(doc.encode(), "h")
    assert snap.guests["g"].files["spec.json"] == raw
    with pytest.raises(DriverError):
        HostSnapshot.parse(doc.replace('"hz": 100', '"hz": "x"').encode(), "h")


def test_call_all_bounds_concurrency_and_keeps_order() -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def call(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        if i == 5:
            raise DriverError("host 5 is down")
        return i * 10

    got = call_all(list(range(20)), call, lambda i: i % 4 != 0, workers=4)
    assert [g if isinstance(g, int) else "err" for g in got] == \
        [i * 10 if i != 5 else "err" for i in range(20)]
    assert 2 <= peak[0] <= 4 + 1  # four remote workers, plus the caller's inline local calls
    with pytest.raises(ZeroDivisionError):  # a bug is not a host failure: it propagates
        call_all([1, 2], lambda i: 1 // 0, lambda i: True, workers=2)


def test_host_dir_missing_is_no_guests(tmp_path: Path) -> None:
    counting = Counting()
    drv = QemuDriver(tmp_path / "nothing-yet", transports=lambda h: counting)
    info = drv.monitor(HOST)
    assert info.domains == {} and info.total_cpu == len(os.sched_getaffinity(0))
    assert len(counting.commands) == 1
