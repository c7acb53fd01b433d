"""A small elastic site for the pool tests: store + real IaaS loops (sim hosts) + SimBatch.

The controller, the scheduler and the lifecycle loop are driven by hand (``Site.step``), the
pool controller and the batch system share a virtual clock, and a worker's node registers in
the batch system when its VM is RUNNING (as a real worker's batch daemon would), so a whole
queue -> boot -> join -> run -> drain -> shutdown cycle takes milliseconds.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.pools import OWN, Site
from vocloud.elastic.policy import PoolVMState
from vocloud.errors import Conflict, NotFound
from vocloud.model.lifecycle import VMState
from vocloud.service.cloud import Cloud
from vocloud.store.pools import PoolBackoffRow, PoolEventRow, PoolVMRow
from vocloud.store.schema import VM, Host

# ================================================================================ scenarios


def _two_vos(site: Site) -> None:
    site.vo("atlas", OWN)
    site.vo("cms")
    site.pools.create(site.admin, "atlas", "atlas-wn", cores=1, memory=512, max=10,
                      idle_timeout=60, scale_down_delay=0, boot_timeout=300)
    site.pools.create(site.admin, "cms", "std-worker", cores=1, memory=512, min=1, max=10,
                      idle_timeout=60, scale_down_delay=0, boot_timeout=300)


def test_scale_up_run_scale_down(cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path)
    _two_vos(site)
    for _ in range(6):
        site.sim.submit("atlas", runtime=100)
    for _ in range(3):
        site.sim.submit("cms", runtime=100)
    site.step()
    assert site.live_vms("atlas") == 6
    assert site.live_vms("cms") == 3
    site.step()
    assert site.pool_states("atlas") == Counter({"JOINED_BUSY": 6})
    assert site.pool_states("cms") == Counter({"JOINED_BUSY": 3})
    assert site.sim.pending() == []
    site.advance(100)
    site.step()
    assert len(site.sim.finished) == 9
    assert site.pool_states("atlas") == Counter({"JOINED_IDLE": 6})
    site.advance(61)
    site.step(3)
    assert site.live_vms("atlas") == 0
    assert site.live_vms("cms") == 1
    assert site.pool_states("cms") == Counter({"JOINED_IDLE": 1})
    assert site.sim.killed == []
    events = [e["action"] for e in site.pools.events(site.admin, "atlas")]
    assert events.count("drain") == 6 and events.count("shutdown") == 6


def test_lowering_max_while_jobs_run_kills_no_job(cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path)
    _two_vos(site)
    jobs = [site.sim.submit("atlas", runtime=100) for _ in range(6)]
    site.step(2)
    assert site.pool_states("atlas") == Counter({"JOINED_BUSY": 6})
    site.pools.update(site.admin, "atlas", max=2)
    site.step(2)
    # four busy workers drain: their jobs go on running, none is killed, none is terminated
    assert site.pool_states("atlas") == Counter({"DRAINING": 4, "JOINED_BUSY": 2})
    assert site.live_vms("atlas") == 6
    assert site.sim.killed == [] and site.sim.finished == []
    site.advance(100)
    site.step(3)
    assert sorted(site.sim.finished, key=int) == jobs
    assert site.sim.killed == []
    assert site.live_vms("atlas") == 2
    assert site.pool_states("atlas") == Counter({"JOINED_IDLE": 2})


def test_weights_split_scarce_capacity(cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path, hosts=1, cpu=8)
    site.vo("atlas", OWN)
    site.vo("cms")
    site.pools.create(site.admin, "atlas", "atlas-wn", cores=1, memory=512, max=20, weight=3)
    site.pools.create(site.admin, "cms", "std-worker", cores=1, memory=512, max=20, weight=1)
    for _ in range(10):
        site.sim.submit("atlas", runtime=1000)
        site.sim.submit("cms", runtime=1000)
    site.step()
    assert (site.live_vms("atlas"), site.live_vms("cms")) == (6, 2)
    notes = site.pools.show(site.admin, "cms")["notes"]
    assert any("split by weight" in n for n in notes)


def test_failing_image_backs_off_other_vo_unaffected(cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path)
    site.vo("atlas", OWN + "SIM_BOOT=fail\n")
    site.vo("cms")
    site.pools.create(site.admin, "atlas", "atlas-wn", cores=1, memory=512, max=10)
    site.pools.create(site.admin, "cms", "std-worker", cores=1, memory=512, max=10)
    for _ in range(3):
        site.sim.submit("atlas", runtime=50)
        site.sim.submit("cms", runtime=50)
    site.step(3)
    assert site.pool_states("cms") == Counter({"JOINED_BUSY": 3})
    shown = site.pools.show(site.admin, "atlas")
    assert _image_failures(site) == 1  # three VMs failing together are one incident
    assert any("backing off" in n for n in shown["notes"])
    booted = site.all_vms().total()
    site.step(3)  # within the backoff: no new atlas boot
    assert site.all_vms().total() == booted
    assert site.live_vms("atlas") == 0  # failed VMs are removed, never leaked
    site.advance(31)
    site.step()  # after the wait: exactly one probe boot, which fails again
    assert site.all_vms().total() == booted + 1
    site.step(2)
    assert _image_failures(site) == 2
    site.advance(50)
    site.step(2)
    assert len(site.sim.finished) == 3 and site.sim.killed == []
    assert all(j.node is None for j in site.sim.jobs() if j.vo == "atlas")
    failed = [e for e in site.pools.events(site.admin, "atlas") if e["action"] == "boot-failed"]
    # each says why: the VM's own error (the sim guest "crashed"; a qemu one, its console)
    assert failed and all("failed to boot: " in e["reason"] and "crashed" in e["reason"]
                          for e in failed), failed


def _image_failures(site: Site) -> int:
    backoff = {b["key"]: b for b in site.pools.show(site.admin, "atlas")["backoff"]}
    return int(backoff["image:atlas-wn"]["failures"])


def test_restart_before_vms_are_created_never_doubles(cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path)
    _two_vos(site)
    for _ in range(6):
        site.sim.submit("atlas", runtime=100)
    crashing = site.controller()

    def crash(*_a: object, **_k: object) -> list[int]:
        raise SystemExit("controller killed")

    # The decision is persisted, then the controller dies before creating any VM.
    crashing.cloud = Cloud(cloud.db)
    crashing.cloud.vms.create = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        crashing.reconcile_once()
    assert site.pool_states("atlas") == Counter({"REQUESTED": 6})
    assert site.live_vms("atlas") == 0
    site.advance(2)  # the restarted daemon's controller
    fresh = site.controller(bind_grace_s=30)
    site.step(ctl=fresh)  # the dead controller's decisions are carried out at once, and once
    assert site.live_vms("atlas") == 6 and site.live_vms("cms") == 1  # cms: its minimum
    site.step(2, ctl=fresh)
    assert site.pool_states("atlas") == Counter({"JOINED_BUSY": 6})
    with cloud.db.read() as s:
        names = Counter(s.scalars(select(VM.name)))
        boots = list(s.scalars(select(PoolEventRow.count).where(PoolEventRow.action == "boot")))
    assert len(names) == 7 and set(names.values()) == {1}, names
    assert sorted(boots) == [1, 6], boots  # decided by the dead controller, never again


def test_a_failed_pass_of_the_live_controller_is_retried_after_the_grace(
        cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path)
    _two_vos(site)
    site.advance(1)
    for _ in range(2):
        site.sim.submit("atlas", runtime=100)

    def broken(*_a: object, **_k: object) -> list[int]:
        raise RuntimeError("database went away")

    site.ctl.cloud = Cloud(cloud.db)
    site.ctl.cloud.vms.create = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        site.ctl.reconcile_once()
    site.ctl.cloud = cloud
    site.advance(5)
    site.step(ctl=site.ctl)  # its own rows: no retry within the grace, and nothing booted again
    assert site.pool_states("atlas") == Counter({"REQUESTED": 2})
    assert site.all_vms().total() == 0
    site.advance(60)
    site.step(2, ctl=site.ctl)
    assert site.live_vms("atlas") == 2 and site.live_vms("cms") == 1
    assert site.pool_states("atlas") == Counter({"JOINED_BUSY": 2})


def test_restart_after_vms_are_created_adopts_them(cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path)
    _two_vos(site)
    for _ in range(4):
        site.sim.submit("atlas", runtime=100)
    crashing = site.controller()

    def crash(*_a: object, **_k: object) -> None:
        raise SystemExit("controller killed")

    # VMs are created, then the controller dies before recording their ids.
    crashing._record_vm = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        crashing.reconcile_once()
    fresh = site.controller(bind_grace_s=0)
    site.advance(1)
    site.step(3, ctl=fresh)
    with cloud.db.read() as s:
        names = Counter(s.scalars(select(VM.name).where(VM.name.like("atlas-%"))))
    assert len(names) == 4 and set(names.values()) == {1}  # four workers, each created once
    assert site.pool_states("atlas") == Counter({"JOINED_BUSY": 4})


def test_restart_with_workers_booting_boots_nothing_more(cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path)
    _two_vos(site)
    for _ in range(5):
        site.sim.submit("atlas", runtime=100)
    site.ctl.reconcile_once()  # decided and created; not yet placed or joined
    before = site.all_vms().total()
    for _ in range(3):
        again = site.controller()
        again.reconcile_once()
    assert site.all_vms().total() == before
    site.step(2, ctl=site.controller())
    assert site.pool_states("atlas") == Counter({"JOINED_BUSY": 5})


def test_never_terminates_a_worker_running_a_job(cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path)
    _two_vos(site)
    job = site.sim.submit("atlas", runtime=100)
    site.step(2)
    assert site.pool_states("atlas") == Counter({"JOINED_BUSY": 1})
    # A corrupted store (or a bug) says the busy worker should stop: the controller refuses.
    with cloud.db.write() as s:
        row = s.scalars(select(PoolVMRow).where(PoolVMRow.name.like("atlas-%"))).one()
        row.state = PoolVMState.STOPPING.value
        vm_id = row.vm_id
    assert vm_id is not None
    site.step(2)
    assert cloud.vms.show(site.admin, vm_id)["state"] == "RUNNING"
    assert site.sim.killed == []
    assert any(e["action"] == "refused" for e in site.pools.events(site.admin, "atlas"))
    site.advance(100)
    site.step(2)
    assert site.sim.finished == [job] and site.sim.killed == []
    assert site.live_vms("atlas") == 0  # once the job ended, the shutdown went ahead


def test_forced_delete_drains_then_deletes(cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path)
    _two_vos(site)
    site.sim.submit("atlas", runtime=100)
    site.step(2)
    with pytest.raises(Conflict, match="still has 1 VMs"):
        site.pools.delete(site.admin, "atlas")
    assert site.pools.delete(site.admin, "atlas", force=True)["draining"] == 1
    site.step(2)
    assert site.live_vms("atlas") == 1 and site.sim.killed == []
    site.advance(100)
    site.step(3)
    assert site.sim.killed == [] and len(site.sim.finished) == 1
    assert [p["vo"] for p in site.pools.list(site.admin)] == ["cms"]
    with pytest.raises(NotFound):
        site.pools.show(site.admin, "atlas")


def test_a_worker_marked_down_is_reaped_after_its_grace(cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path)
    _two_vos(site)
    site.sim.submit("atlas", runtime=1000)
    site.step(2)
    [name] = [n.name for n in site.sim.nodes() if n.vo == "atlas"]
    site.sim.node_down(name)  # slurmd died: the batch system lost the job with it
    site.step()
    assert site.pool_states("atlas") == Counter({"DOWN": 1})
    site.advance(60)
    site.step()
    assert site.pool_states("atlas") == Counter({"DOWN": 1})  # within the 120 s grace
    site.advance(61)
    site.step(3)
    assert name not in {n.name for n in site.sim.nodes()}
    assert site.live_vms("atlas") == 0  # its VM is terminated, not leaked
    events = site.pools.events(site.admin, "atlas")
    assert any(e["action"] == "shutdown" and "node down" in e["reason"] for e in events)


def test_observed_event_is_pure_and_never_skips_the_table() -> None:
    from vocloud.batch.base import NodeState, WorkerNode
    from vocloud.elastic.failures import PoolVMEvent as Ev
    from vocloud.elastic.observe import observed_event

    V, S = PoolVMState, VMState

    def node(jobs: int, state: NodeState = NodeState.BUSY) -> WorkerNode:
        return WorkerNode("w", state, 1, 512, jobs, "atlas", None)

    assert observed_event(V.REQUESTED, True, S.PENDING, None) is None  # a stockout waits
    assert observed_event(V.REQUESTED, True, S.BOOT, None) is Ev.PLACED
    assert observed_event(V.REQUESTED, True, S.BOOT_FAILURE, None) is Ev.BOOT_FAILED
    assert observed_event(V.BOOTING, True, S.RUNNING, None) is None
    assert observed_event(V.BOOTING, True, S.RUNNING, node(0, NodeState.IDLE)) is Ev.JOINED
    assert observed_event(V.JOINED_IDLE, True, S.RUNNING, node(1)) is Ev.JOB_STARTED
    assert observed_event(V.JOINED_BUSY, True, S.RUNNING, node(0, NodeState.IDLE)) is Ev.JOBS_DONE
    assert observed_event(V.DRAINING, True, S.RUNNING, node(1, NodeState.DRAINING)) is None
    assert observed_event(V.JOINED_BUSY, True, S.RUNNING, None) is Ev.NODE_DOWN
    assert observed_event(V.JOINED_BUSY, True, None, node(1)) is Ev.LOST
    assert observed_event(V.STOPPING, True, S.SHUTDOWN, None) is None
    assert observed_event(V.STOPPING, True, S.DONE, None) is Ev.STOPPED


def test_a_disabled_pool_is_frozen(cloud: Cloud, tmp_path: Path) -> None:
    site = Site(cloud, tmp_path)
    _two_vos(site)
    site.pools.update(site.admin, "atlas", enabled=False)
    site.sim.submit("atlas", runtime=10)
    site.step(2)
    assert site.live_vms("atlas") == 0 and len(site.sim.pending()) == 1
    site.pools.update(site.admin, "atlas", enabled=True)
    site.step(2)
    assert site.live_vms("atlas") == 1 and site.sim.pending() == []


def test_boots_steer_clear_of_a_host_in_backoff(cloud: Cloud, tmp_path: Path) -> None:
    """A host that failed this pool's boots is not offered to its new VMs while it backs off;
    when it is the only host left, boots go to it anyway (nothing waits for nothing)."""
    site = Site(cloud, tmp_path)
    site.vo("cms")
    site.pools.create(site.admin, "cms", "std-worker", cores=1, memory=512, max=10)
    pool_id = site.pools.show(site.admin, "cms")["id"]
    with cloud.db.write() as s:
        s.add(PoolBackoffRow(pool_id=pool_id, key="host:h1", failures=2,
                             retry_at=site.clock.t + 3600, last_failure=site.clock.t))
    for _ in range(3):
        site.sim.submit("cms", runtime=50)
    site.step(2)
    with cloud.db.read() as s:
        placed = Counter(s.scalars(select(Host.name).join(VM, VM.host_id == Host.id)
                                   .where(VM.state != VMState.DONE.value)))
        reqs = list(s.scalars(select(VM.template).where(VM.state != VMState.DONE.value)))
    assert placed == Counter({"h2": 3}), placed  # packing would have filled h1 first
    assert all('SCHED_REQUIREMENTS="NAME != ' in t and 'h1' in t for t in reqs), reqs
    cloud.hosts.action(site.admin, "h2", "disable")
    for _ in range(2):
        site.sim.submit("cms", runtime=50)
    site.step(2)
    with cloud.db.read() as s:
        on_h1 = list(s.scalars(select(VM.template).join(Host, Host.id == VM.host_id)
                               .where(Host.name == "h1")))
    assert len(on_h1) == 2 and not any("NAME !=" in t for t in on_h1), on_h1
