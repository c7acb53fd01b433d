"""A host that keeps failing its probes is probed less and less often (issue 9, finding 10)."""

from __future__ import annotations

from pathlib import Path

from tests.support.helpers import admin
from tests.support.pools import T0, Clock
from vocloud.drivers.base import HostInfo, HostRef
from vocloud.drivers.vmm.sim import SimDriver
from vocloud.engine.reconcile import LoopSettings, Reconciler
from vocloud.service.cloud import Cloud


class CountingSim(SimDriver):
    """The sim driver, noting when each probe happened."""

    def __init__(self, root: Path, clock: Clock) -> None:
        super().__init__(root, 0, 0, clock=clock)
        self.probes: list[float] = []

    def monitor(self, host: HostRef) -> HostInfo:
        self.probes.append(self.clock() - T0)
        return super().monitor(host)


def _run(rec: Reconciler, clock: Clock, seconds: int) -> None:
    """The daemon's monitor loop: one pass a second."""
    for _ in range(seconds):
        rec.monitor_once()
        clock.t += 1


def test_failing_host_backs_off_survives_restart_and_resets(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    cloud.hosts.create(a, "h1", cpu=4, memory=4096)
    clock = Clock()
    drv = CountingSim(tmp_path / "sim", clock)
    settings = LoopSettings(monitor_interval=1, host_backoff_max=8)
    (drv.host_dir(HostRef(1, "h1", "sim", "local", {})) / "UNREACHABLE").touch()
    rec = Reconciler(cloud, {"sim": drv}, settings, clock=clock)
    _run(rec, clock, 60)
    # 60 passes, 9 probes: 2, 4, 8 s apart, then every 8 s (the cap) — not one a second
    assert drv.probes == [0, 2, 6, 14, 22, 30, 38, 46, 54]
    h = cloud.hosts.show(a, "h1")
    assert h["state"] == "ERROR"
    m = h["monitoring"]
    assert (m["failures"], m["failing_since"], m["next_attempt_at"]) == (9, T0, T0 + 62)
    assert "UNREACHABLE" in m["last_error"] and m["last_error"] == h["error"]

    # a restarted daemon keeps the pace: nothing before the recorded next attempt
    drv.probes.clear()
    rec = Reconciler(cloud, {"sim": drv}, settings, clock=clock)
    _run(rec, clock, 6)
    assert drv.probes == [62]
    assert cloud.hosts.show(a, "h1")["monitoring"]["failures"] == 10

    # an administrator's update is a reason to look again at once
    drv.probes.clear()
    cloud.hosts.update_attrs(a, "h1", {"NOTE": "key fixed"})
    _run(rec, clock, 1)
    assert drv.probes == [66]
    assert cloud.hosts.show(a, "h1")["monitoring"]["failures"] == 11

    # one success resets everything; the host is back on the plain interval
    (tmp_path / "sim" / "h1" / "UNREACHABLE").unlink()
    drv.probes.clear()
    _run(rec, clock, 12)
    assert drv.probes == [74, 75, 76, 77, 78]  # 66 + the cap, then the 1 s interval
    h = cloud.hosts.show(a, "h1")
    assert h["state"] == "MONITORED" and h["error"] == ""
    assert h["monitoring"] == {"failures": 0, "failing_since": None, "next_attempt_at": None,
                               "next_attempt_in": None, "last_error": ""}
