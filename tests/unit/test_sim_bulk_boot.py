"""``deploy_many`` (the sim driver's bulk boot) and ``boot_many`` (bulk where a driver has it,
guest by guest otherwise) keep ``deploy``'s rules: idempotent, one answer per guest, a host that
does not answer raises (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vocloud.drivers.base import BulkBoot, DomainInfo, DomainSpec, DomainState, HostRef, boot_many
from vocloud.drivers.vmm.sim import SimDriver
from vocloud.errors import DriverError, HostUnreachable

HOST = HostRef(id=1, name="h1")


def spec(i: int, deploy_id: str = "") -> DomainSpec:
    return DomainSpec(vm_id=i, deploy_id=deploy_id or f"vct-{i}", name=f"w{i}", cpu=1, vcpu=1,
                      memory_mib=256)


class OneByOne:
    """The sim driver without its bulk method: boot_many takes the per-guest default."""

    def __init__(self, inner: SimDriver) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        if name == "deploy_many":
            raise AttributeError(name)
        return getattr(self.inner, name)


def states(got: list[DomainInfo | DriverError]) -> list[str]:
    return [g.state.value if isinstance(g, DomainInfo) else f"error: {g.message}" for g in got]


@pytest.mark.parametrize("bulk", [True, False])
def test_boot_many_starts_new_keeps_existing_restores_saved(tmp_path: Path, bulk: bool) -> None:
    t = [100.0]
    sim = SimDriver(tmp_path, boot_delay=5, shutdown_delay=0, clock=lambda: t[0])
    drv = sim if bulk else OneByOne(sim)
    assert isinstance(drv, BulkBoot) == bulk
    sim.deploy(HOST, spec(1))
    sim.deploy(HOST, spec(2))
    sim.save(HOST, "vct-2")
    t[0] = 110.0
    got = boot_many(drv, HOST, [spec(1), spec(2), spec(3), spec(4, "bad/id")])  # type: ignore[arg-type]
    assert states(got) == ["RUNNING", "RUNNING", "BOOTING", "error: bad deploy id 'bad/id'"]
    assert "boots 1" in sim.console(HOST, "vct-1")  # not started twice
    again = boot_many(drv, HOST, [spec(3)])  # type: ignore[arg-type]
    assert states(again) == ["BOOTING"] and "boots 1" in sim.console(HOST, "vct-3")
    t[0] = 120.0
    assert sim.poll(HOST, "vct-3").state == DomainState.RUNNING
    assert sorted(sim.monitor(HOST).domains) == ["vct-1", "vct-2", "vct-3"]


@pytest.mark.parametrize("bulk", [True, False])
def test_boot_many_raises_for_an_unreachable_host(tmp_path: Path, bulk: bool) -> None:
    sim = SimDriver(tmp_path, boot_delay=0, shutdown_delay=0)
    sim.set_reachable(HOST, False)
    with pytest.raises(HostUnreachable):
        boot_many(sim if bulk else OneByOne(sim), HOST, [spec(1), spec(2)])  # type: ignore[arg-type]
    sim.set_reachable(HOST, True)
    assert sim.monitor(HOST).domains == {}  # nothing was started
