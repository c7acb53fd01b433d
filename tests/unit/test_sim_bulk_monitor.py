"""``monitor_many`` (the sim driver's bulk probe) answers each host as ``monitor`` does, one
answer per host, a failing host returned rather than raised; ``probe_all`` asks a bulk driver
once for all its hosts and every other driver host by host, answers in host order (issue 15)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from vocloud.drivers.base import (
    BulkMonitor,
    DomainInfo,
    DomainSpec,
    DomainState,
    HostInfo,
    HostRef,
    VMMDriver,
)
from vocloud.drivers.vmm.sim import SimDriver
from vocloud.engine.probes import probe_all
from vocloud.errors import DriverError, HostUnreachable

CAP = {"TOTAL_CPU": "8", "TOTAL_MEM": "16384"}


def ref(i: int, name: str = "", **attrs: str) -> HostRef:
    return HostRef(id=i, name=name or f"h{i}", vmm="sim", transport="local", attrs={**CAP, **attrs})


def spec(i: int, cpu: float = 1, mem: int = 256) -> DomainSpec:
    return DomainSpec(vm_id=i, deploy_id=f"vct-{i}", name=f"w{i}", cpu=cpu, vcpu=1, memory_mib=mem)


def site(tmp_path: Path, t: list[float]) -> tuple[SimDriver, list[HostRef]]:
    sim = SimDriver(tmp_path, boot_delay=5, shutdown_delay=1, clock=lambda: t[0])
    hosts = [ref(1), ref(2), ref(3, TOTAL_CPU="lots"), ref(4), ref(5)]
    sim.deploy_many(hosts[0], [spec(1), spec(2, 2, 512), spec(3), spec(4)])
    sim.deploy_many(hosts[3], [spec(5)])
    sim.deploy_many(hosts[4], [spec(6)])
    t[0] = 110.0  # booted
    sim.save(hosts[0], "vct-2")  # a saved guest is listed, its resources not counted
    sim.shutdown(hosts[0], "vct-3", hard=False)  # stopping...
    t[0] = 120.0  # ...and gone: its file goes at the probe
    sim.set_reachable(hosts[1], False)
    (tmp_path / "h5" / "vct-6.json").write_text("{not json")
    return sim, hosts


def test_monitor_many_answers_each_host_as_monitor_does(tmp_path: Path) -> None:
    t = [100.0]
    sim, hosts = site(tmp_path / "a", t)
    got = sim.monitor_many(hosts)
    assert len(got) == 5
    h1 = got[0]
    assert isinstance(h1, HostInfo)
    assert sorted(h1.domains) == ["vct-1", "vct-2", "vct-4"]
    assert h1.domains["vct-2"].state == DomainState.SAVED
    assert h1.domains["vct-1"].state == DomainState.RUNNING
    assert (h1.used_cpu, h1.used_mem_mib, h1.total_cpu, h1.total_mem_mib) == (2.0, 512, 8.0, 16384)
    assert not (tmp_path / "a" / "h1" / "vct-3.json").exists()
    assert isinstance(got[1], HostUnreachable) and "UNREACHABLE" in got[1].message
    assert isinstance(got[2], DriverError) and "bad capacity" in got[2].message
    assert isinstance(got[3], HostInfo) and list(got[3].domains) == ["vct-5"]
    assert isinstance(got[4], DriverError) and "unreadable" in got[4].message
    # monitor() on an identical site: the same answers, raised instead of returned
    t2 = [100.0]
    one, hosts2 = site(tmp_path / "b", t2)
    for h, bulk in zip(hosts2, got, strict=True):
        if isinstance(bulk, DriverError):
            with pytest.raises(type(bulk)) as err:
                one.monitor(h)
            assert err.value.message.replace(f"{tmp_path}/b/", f"{tmp_path}/a/") == bulk.message
        else:
            assert one.monitor(h) == bulk


def test_monitor_many_bad_host_name_and_empty_host(tmp_path: Path) -> None:
    sim = SimDriver(tmp_path, 0, 0)
    got = sim.monitor_many([ref(1, "../etc"), ref(2)])
    assert isinstance(got[0], DriverError) and "bad host name" in got[0].message
    assert got[1] == HostInfo(total_cpu=8.0, total_mem_mib=16384, attrs={"HYPERVISOR": "sim"})
    assert sim.monitor_many([]) == []


def test_a_subclass_overriding_monitor_is_asked_host_by_host(tmp_path: Path) -> None:
    class Counting(SimDriver):
        def __init__(self, root: Path) -> None:
            super().__init__(root, 0, 0)
            self.asked: list[str] = []

        def monitor(self, host: HostRef) -> HostInfo:
            self.asked.append(host.name)
            return super().monitor(host)

    sim = Counting(tmp_path)
    sim.set_reachable(ref(2), False)
    got = sim.monitor_many([ref(1), ref(2)])
    assert sim.asked == ["h1", "h2"]
    assert isinstance(got[0], HostInfo) and isinstance(got[1], HostUnreachable)


class Bulk:
    """A driver with a bulk probe: records each call's hosts."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def monitor_many(self, hosts: Sequence[HostRef]) -> list[HostInfo | DriverError]:
        self.calls.append([h.name for h in hosts])
        return [DriverError(f"{h.name} says no") if h.name == "b2" else
                HostInfo(total_cpu=h.id, total_mem_mib=1) for h in hosts]


class Single:
    """A driver without one: ``monitor`` per host, on the probe threads when remote."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def monitor(self, host: HostRef) -> HostInfo:
        self.threads.add(threading.current_thread().name)
        if host.name == "s2":
            raise HostUnreachable("s2 is away")
        return HostInfo(total_cpu=host.id, total_mem_mib=2,
                        domains={"d": DomainInfo("d", DomainState.RUNNING)})


def test_probe_all_bulk_once_per_driver_others_per_host_in_order() -> None:
    bulk, single = Bulk(), Single()
    assert isinstance(bulk, BulkMonitor) and not isinstance(single, BulkMonitor)
    drivers: dict[str, object] = {"bulk": bulk, "single": single}
    hosts = [HostRef(1, "b1", "bulk"), HostRef(2, "s1", "single", "ssh://a"),
             HostRef(3, "x1", "gone"), HostRef(4, "b2", "bulk"), HostRef(5, "s2", "single", "ssh://b"),
             HostRef(6, "b3", "bulk"), HostRef(7, "s3", "single")]

    def driver(h: HostRef) -> VMMDriver:
        try:
            return drivers[h.vmm]  # type: ignore[return-value]
        except KeyError:
            raise DriverError(f"no '{h.vmm}' driver") from None

    got = probe_all(hosts, driver, lambda h: h, lambda h: h.transport != "local", workers=4)
    assert bulk.calls == [["b1", "b2", "b3"]]
    kinds = [type(g).__name__ if isinstance(g, DriverError) else f"info {g.total_cpu:g}"
             for g in got]
    assert kinds == ["info 1", "info 2", "DriverError", "DriverError", "HostUnreachable", "info 6",
                     "info 7"]
    assert "no 'gone' driver" in str(got[2])
    assert any(n.startswith("vocloud-probe") for n in single.threads)  # remote: on the pool
    assert probe_all([], driver, lambda h: h, lambda h: True, workers=4) == []
