"""The scheduler: policies, limits, reasons, in-cycle updates, and place == place_naive.

Every behavioural test runs against both the fast ``place`` and the naive oracle, so the two can
only agree by both being right; the hypothesis test then compares them on random instances.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vocloud.core import placement as scheduler
from vocloud.core.placement import (
    HostView,
    PendingVM,
    Placement,
    PolicyKind,
    SchedPolicy,
    SchedResult,
    place,
    place_naive,
)

Scheduler = Callable[[Sequence[PendingVM], Sequence[HostView], SchedPolicy], SchedResult]


@pytest.fixture(params=[place, place_naive], ids=["place", "naive"])
def sched(request: pytest.FixtureRequest) -> Scheduler:
    fn: Scheduler = request.param
    return fn


def host(
    id: int,
    cpu: float = 8,
    mem: int = 32768,
    used_cpu: float = 0,
    used_mem: int = 0,
    vms: int = 0,
    **attrs: str | float,
) -> HostView:
    return HostView(id, f"host{id}", cpu, mem, used_cpu, used_mem, vms, attrs)


def vms(n: int, cpu: float = 1, mem: int = 1024, start: int = 0, **kw: str | None) -> list[PendingVM]:
    return [PendingVM(start + k, cpu, mem, **kw) for k in range(n)]


def hosts_of(result: SchedResult) -> list[int]:
    return [p.host_id for p in result.placements]


# -------------------------------------------------------------------------------------- policies


def test_acceptance_packing_fills_hosts_in_id_order(sched: Scheduler) -> None:
    result = sched(vms(30), [host(3), host(1), host(2)], SchedPolicy())
    assert Counter(hosts_of(result)) == {1: 8, 2: 8, 3: 8}
    assert hosts_of(result) == [1] * 8 + [2] * 8 + [3] * 8
    assert [p.vm_id for p in result.placements] == list(range(24))
    assert sorted(result.unplaced) == list(range(24, 30))
    assert set(result.unplaced.values()) == {
        "no host has 1 CPU and 1024 MiB free (most free: 0 CPU on host1, 24576 MiB on host1)"
    }


def test_packing_prefers_the_fullest_host(sched: Scheduler) -> None:
    result = sched(vms(2), [host(1, vms=1), host(2, vms=5), host(3, vms=2)], SchedPolicy())
    assert hosts_of(result) == [2, 2]


def test_striping_spreads_round_robin(sched: Scheduler) -> None:
    result = sched(vms(7), [host(1), host(2), host(3)], SchedPolicy(PolicyKind.STRIPING))
    assert hosts_of(result) == [1, 2, 3, 1, 2, 3, 1]


def test_striping_starts_with_the_emptiest(sched: Scheduler) -> None:
    result = sched(vms(3), [host(1, vms=2), host(2, vms=0), host(3, vms=1)], SchedPolicy(PolicyKind.STRIPING))
    assert hosts_of(result) == [2, 2, 3]


def test_load_aware_follows_free_cpu_as_it_changes(sched: Scheduler) -> None:
    hosts = [host(1, cpu=8, used_cpu=2), host(2, cpu=8, used_cpu=0)]
    result = sched(vms(4, cpu=1), hosts, SchedPolicy(PolicyKind.LOAD_AWARE))
    # free 6 vs 8 -> 2; 6 vs 7 -> 2; 6 vs 6 tie -> 1; 5 vs 6 -> 2
    assert hosts_of(result) == [2, 2, 1, 2]


def test_custom_policy_rank(sched: Scheduler) -> None:
    hosts = [host(1, SPEED="2000"), host(2, SPEED="3000"), host(3)]
    result = sched(vms(2), hosts, SchedPolicy(PolicyKind.CUSTOM, rank="SPEED"))
    assert hosts_of(result) == [2, 2]


def test_vm_rank_overrides_policy_rank(sched: Scheduler) -> None:
    hosts = [host(1, vms=3), host(2)]
    pending = [PendingVM(1, 1, 1024), PendingVM(2, 1, 1024, rank="-RUNNING_VMS"), PendingVM(3, 1, 1024)]
    assert hosts_of(sched(pending, hosts, SchedPolicy())) == [1, 2, 1]


def test_rank_sees_memory_changes_within_the_cycle(sched: Scheduler) -> None:
    hosts = [host(1, mem=8192), host(2, mem=6144)]
    policy = SchedPolicy(PolicyKind.CUSTOM, rank="FREE_MEM")
    assert hosts_of(sched(vms(4, mem=2048), hosts, policy)) == [1, 1, 2, 1]


def test_unknown_trend_rank_is_kept_current(sched: Scheduler) -> None:
    # FREE_CPU * RUNNING_VMS can go either way as a host fills up
    hosts = [host(1, cpu=4, vms=1), host(2, cpu=10, vms=0)]
    policy = SchedPolicy(PolicyKind.CUSTOM, rank="FREE_CPU * RUNNING_VMS")
    # h1: 4*1=4 vs h2: 0 -> 1; h1: 3*2=6 -> 1; h1: 2*3=6 -> 1; h1: 1*4=4 vs 0 -> 1; h1 full -> 2
    assert hosts_of(sched(vms(6), hosts, policy)) == [1, 1, 1, 1, 2, 2]


def test_rank_growth_caused_by_another_signature_is_seen(sched: Scheduler) -> None:
    hosts = [host(1, vms=1), host(2)]
    only2 = "ID = 2"
    pending = [
        PendingVM(1, 1, 1024),  # -> 1 (RUNNING_VMS 2)
        *vms(3, start=2, requirements=only2),  # -> 2 three times (RUNNING_VMS 3)
        PendingVM(9, 1, 1024),  # packing now prefers host 2
    ]
    assert hosts_of(sched(pending, hosts, SchedPolicy())) == [1, 2, 2, 2, 2]


def test_host_dispatch_limit_with_a_static_rank(sched: Scheduler) -> None:
    hosts = [host(1, SPEED="3000"), host(2, SPEED="2000")]
    result = sched(vms(3, rank="SPEED"), hosts, SchedPolicy(max_host_dispatch=1))
    assert hosts_of(result) == [1, 2]
    assert 2 in result.unplaced


def test_ties_go_to_the_lowest_host_id(sched: Scheduler) -> None:
    result = sched(vms(1), [host(9), host(4), host(7)], SchedPolicy(PolicyKind.CUSTOM, rank="1"))
    assert hosts_of(result) == [4]


def test_custom_policy_needs_a_rank() -> None:
    with pytest.raises(ValueError, match="rank"):
        SchedPolicy(PolicyKind.CUSTOM)
    with pytest.raises(ValueError, match="limits"):
        SchedPolicy(max_dispatch=-1)


# ---------------------------------------------------------------------------------- requirements


def test_static_requirements_select_hosts(sched: Scheduler) -> None:
    hosts = [host(1, HYPERVISOR="qemu"), host(2, HYPERVISOR="kvm"), host(3, hypervisor="kvm")]
    result = sched(vms(3, requirements='HYPERVISOR = "kvm"'), hosts, SchedPolicy(PolicyKind.STRIPING))
    assert hosts_of(result) == [2, 3, 2]


def test_builtin_attributes_are_visible(sched: Scheduler) -> None:
    hosts = [host(1, cpu=4), host(2, cpu=16, mem=4096), host(3, cpu=16)]
    pending = [
        PendingVM(1, 1, 1024, requirements="MAX_CPU > 8 & TOTAL_MEM > 4096"),
        PendingVM(2, 1, 1024, requirements='NAME = "host2"'),
        PendingVM(3, 1, 1024, requirements="ID = 1 & USED_CPU = 0 & USED_MEM = 0"),
    ]
    assert hosts_of(sched(pending, hosts, SchedPolicy())) == [3, 2, 1]


def test_dynamic_requirements_see_earlier_placements(sched: Scheduler) -> None:
    hosts = [host(1, cpu=4), host(2, cpu=4)]
    policy = SchedPolicy(PolicyKind.STRIPING)
    # only hosts with at least 3 free cores: 2 VMs each before they drop below
    result = sched(vms(5, cpu=1, requirements="FREE_CPU >= 3"), hosts, policy)
    assert hosts_of(result) == [1, 2, 1, 2]
    assert result.unplaced[4] == 'SCHED_REQUIREMENTS "FREE_CPU >= 3" matched none of 2 hosts'


def test_requirement_that_becomes_true_during_the_cycle(sched: Scheduler) -> None:
    hosts = [host(1), host(2)]
    pending = [
        PendingVM(1, 1, 1024, requirements="RUNNING_VMS > 0"),
        PendingVM(2, 1, 1024),
        PendingVM(3, 1, 1024, requirements="RUNNING_VMS > 0"),
    ]
    result = sched(pending, hosts, SchedPolicy(PolicyKind.STRIPING))
    assert result.placements == [Placement(2, 1), Placement(3, 1)]
    assert result.unplaced == {1: 'SCHED_REQUIREMENTS "RUNNING_VMS > 0" matched none of 2 hosts'}


def test_missing_attribute_excludes_the_host(sched: Scheduler) -> None:
    hosts = [host(1), host(2, GPU="yes")]
    assert hosts_of(sched(vms(1, requirements='GPU = "yes"'), hosts, SchedPolicy())) == [2]
    assert hosts_of(sched(vms(1, requirements='GPU != "yes"'), hosts, SchedPolicy())) == []


# ------------------------------------------------------------------------------- limits and fit


def test_fit_is_inclusive_and_checks_both_resources(sched: Scheduler) -> None:
    hosts = [host(1, cpu=2, mem=2048)]
    result = sched([PendingVM(1, 2, 2048), PendingVM(2, 0.5, 0)], hosts, SchedPolicy())
    assert result.placements == [Placement(1, 1)]
    pending = [PendingVM(1, 1, 4096), PendingVM(2, 4, 1024)]
    assert sched(pending, hosts, SchedPolicy()).placements == []


def test_max_dispatch(sched: Scheduler) -> None:
    result = sched(vms(5), [host(1)], SchedPolicy(max_dispatch=2))
    assert hosts_of(result) == [1, 1]
    assert result.unplaced == {k: "dispatch limit of 2 VMs per cycle reached" for k in (2, 3, 4)}


def test_max_dispatch_counts_placements_not_attempts(sched: Scheduler) -> None:
    pending = [PendingVM(0, 100, 1024), *vms(2, start=1)]
    result = sched(pending, [host(1)], SchedPolicy(max_dispatch=2))
    assert hosts_of(result) == [1, 1]


def test_max_host_dispatch(sched: Scheduler) -> None:
    result = sched(vms(5), [host(1), host(2)], SchedPolicy(max_host_dispatch=2))
    assert hosts_of(result) == [1, 1, 2, 2]
    assert result.unplaced == {
        4: "all 2 hosts with room for 1 CPU / 1024 MiB reached the per-host dispatch limit of 2 VMs per cycle"
    }


def test_max_host_dispatch_with_requirements(sched: Scheduler) -> None:
    hosts = [host(1, C="a"), host(2, C="b")]
    result = sched(vms(2, requirements='C = "a"'), hosts, SchedPolicy(max_host_dispatch=1))
    assert hosts_of(result) == [1]
    assert result.unplaced[1] == (
        "all 1 matching hosts with room for 1 CPU / 1024 MiB reached the per-host dispatch limit"
        " of 1 VMs per cycle"
    )


# --------------------------------------------------------------------------------------- reasons


def test_reason_no_hosts(sched: Scheduler) -> None:
    assert sched(vms(2), [], SchedPolicy()).unplaced == {0: "no hosts available", 1: "no hosts available"}


def test_reason_requirements_match_nothing(sched: Scheduler) -> None:
    hosts = [host(i, HYPERVISOR="qemu") for i in range(12)]
    result = sched(vms(1, requirements='HYPERVISOR = "kvm"'), hosts, SchedPolicy())
    assert result.unplaced == {0: 'SCHED_REQUIREMENTS "HYPERVISOR = \\"kvm\\"" matched none of 12 hosts'}


def test_reason_one_host(sched: Scheduler) -> None:
    result = sched(vms(1, requirements="ID = 5"), [host(1)], SchedPolicy())
    assert result.unplaced == {0: 'SCHED_REQUIREMENTS "ID = 5" matched none of 1 host'}


def test_reason_requirements_match_but_no_room(sched: Scheduler) -> None:
    hosts = [host(1, C="a", cpu=1), host(2, C="a", cpu=1), host(3, C="a", cpu=1), host(4, C="b")]
    result = sched(vms(1, cpu=2, mem=4096, requirements='C = "a"'), hosts, SchedPolicy())
    assert result.unplaced == {0: "requirements matched 3 hosts but none has room for 2 CPU / 4096 MiB"}


def test_reason_no_room_names_the_most_free_hosts(sched: Scheduler) -> None:
    hosts = [host(1, cpu=2, mem=16384), host(2, cpu=8, used_cpu=6.5, mem=4096), host(3, cpu=2, mem=2048)]
    result = sched([PendingVM(7, 4, 8192)], hosts, SchedPolicy())
    assert result.unplaced == {
        7: "no host has 4 CPU and 8192 MiB free (most free: 2 CPU on host1, 16384 MiB on host1)"
    }
    result = sched([PendingVM(7, 0.25, 32768)], hosts, SchedPolicy())
    assert result.unplaced == {
        7: "no host has 0.25 CPU and 32768 MiB free (most free: 2 CPU on host1, 16384 MiB on host1)"
    }


def test_reason_reflects_placements_earlier_in_the_cycle(sched: Scheduler) -> None:
    hosts = [host(1, cpu=4), host(2, cpu=2)]
    result = sched([PendingVM(1, 3, 1024), PendingVM(2, 3, 1024)], hosts, SchedPolicy(PolicyKind.LOAD_AWARE))
    assert result.placements == [Placement(1, 1)]
    assert result.unplaced == {
        2: "no host has 3 CPU and 1024 MiB free (most free: 2 CPU on host2, 32768 MiB on host2)"
    }


def test_bad_expressions_fail_only_their_vm(sched: Scheduler) -> None:
    pending = [
        PendingVM(1, 1, 1024, requirements="FREE_CPU > "),
        PendingVM(2, 1, 1024, rank="(FREE_CPU"),
        PendingVM(3, 1, 1024, requirements="FREE_CPU"),
        PendingVM(4, 1, 1024),
    ]
    result = sched(pending, [host(1)], SchedPolicy())
    assert result.placements == [Placement(4, 1)]
    assert result.unplaced == {
        1: "bad SCHED_REQUIREMENTS: unexpected end of expression, expected a value (column 11)",
        2: "bad SCHED_RANK: missing ')' for the '(' at column 1 (column 10)",
        3: "bad SCHED_REQUIREMENTS: expected a comparison (e.g. FREE_CPU > 1) (column 1)",
    }


def test_bad_policy_rank_is_reported_per_vm(sched: Scheduler) -> None:
    policy = SchedPolicy(PolicyKind.CUSTOM, rank="FREE_CPU +")
    result = sched([PendingVM(1, 1, 1024), PendingVM(2, 1, 1024, rank="FREE_CPU")], [host(1)], policy)
    assert result.placements == [Placement(2, 1)]
    assert result.unplaced == {
        1: "bad scheduler policy rank: unexpected end of expression, expected a value (column 11)"
    }


def test_negative_sizes_are_refused(sched: Scheduler) -> None:
    result = sched(
        [PendingVM(1, -1, 1024), PendingVM(2, 1, -5), PendingVM(3, 0, 0)], [host(1)], SchedPolicy()
    )
    assert result.placements == [Placement(3, 1)]
    assert result.unplaced == {1: "invalid size: -1 CPU / 1024 MiB", 2: "invalid size: 1 CPU / -5 MiB"}


def test_blank_expressions_mean_none(sched: Scheduler) -> None:
    result = sched([PendingVM(1, 1, 1024, requirements="  ", rank="")], [host(1)], SchedPolicy())
    assert result.placements == [Placement(1, 1)]


def test_inputs_are_not_modified(sched: Scheduler) -> None:
    hosts = [host(1, X="1")]
    sched(vms(3), hosts, SchedPolicy())
    assert hosts[0] == host(1, X="1")


def test_place_is_much_cheaper_than_the_naive_scan() -> None:
    """Counts host evaluations rather than timing: the fast path must not scan per VM."""
    calls = Counter[str]()

    class CountingDict(dict[str, object]):
        def get(self, key: str, default: object = None) -> object:
            calls["get"] += 1
            return super().get(key, default)

    hosts = [host(i, HYPERVISOR="qemu" if i % 2 else "kvm") for i in range(200)]
    pending = vms(400, requirements='HYPERVISOR = "qemu" & FREE_CPU > 0', rank="FREE_CPU")
    original = scheduler._Host.__init__

    def counting_init(self: scheduler._Host, view: HostView) -> None:
        original(self, view)
        self.attrs = CountingDict(self.attrs)

    mp = pytest.MonkeyPatch()
    mp.setattr(scheduler._Host, "__init__", counting_init)
    try:
        fast = place(pending, hosts, SchedPolicy())
        fast_calls, calls["get"] = calls["get"], 0
        naive = place_naive(pending, hosts, SchedPolicy())
        naive_calls = calls["get"]
    finally:
        mp.undo()
    assert fast == naive
    assert fast_calls * 20 < naive_calls, (fast_calls, naive_calls)


# ----------------------------------------------------------------------------- property: oracle

REQUIREMENTS = [
    None,
    'HYPERVISOR = "kvm"',
    'CLUSTER = "blue" | CLUSTER = "red"',
    "FREE_CPU >= 2",
    "FREE_CPU >= 2 & FREE_MEM > 2048",
    'RUNNING_VMS < 3 & HYPERVISOR != "kvm"',
    "RUNNING_VMS > 1",
    "FREE_CPU = 4",
    '!(NAME = "h1*")',
    'GPU @> "a100"',
    "FREE_CPU > RUNNING_VMS",
    "FREE_CPU >",
]
RANKS = [
    None,
    None,
    "RUNNING_VMS",
    "-RUNNING_VMS",
    "FREE_CPU",
    "FREE_MEM / 1024 - RUNNING_VMS",
    "FREE_CPU * RUNNING_VMS",
    "SPEED",
    "0",
    "1 / FREE_CPU",
    "(",
]
POLICIES = [
    SchedPolicy(PolicyKind.PACKING),
    SchedPolicy(PolicyKind.STRIPING),
    SchedPolicy(PolicyKind.LOAD_AWARE),
    SchedPolicy(PolicyKind.CUSTOM, rank="FREE_MEM - USED_CPU * 512"),
    SchedPolicy(PolicyKind.CUSTOM, rank="SPEED * 2 - RUNNING_VMS"),
]

host_views = st.builds(
    lambda id, cpu, mem, used, running, hv, cluster, speed, gpu: HostView(
        id,
        f"h{id}",
        cpu,
        mem,
        min(used, cpu),
        min(used * 1024, mem),
        running,
        {
            k: v
            for k, v in {"HYPERVISOR": hv, "CLUSTER": cluster, "SPEED": speed, "GPU": gpu}.items()
            if v is not None
        },
    ),
    id=st.integers(0, 30),
    cpu=st.sampled_from([1, 2, 4, 4.5, 8]),
    mem=st.sampled_from([1024, 4096, 8192]),
    used=st.integers(0, 3),
    running=st.integers(0, 3),
    hv=st.sampled_from(["kvm", "qemu", None]),
    cluster=st.sampled_from(["blue", "red", "green"]),
    speed=st.sampled_from(["2000", "3000", 2500.0, "fast", None]),
    gpu=st.sampled_from(["a100,t4", "t4", None]),
)


@st.composite
def pending_vms(draw: st.DrawFn, max_size: int = 30, ranks: Sequence[str | None] = RANKS) -> list[PendingVM]:
    """VMs drawn from a few (requirements, rank) families and a few shapes, as on a real site,
    so that signatures repeat and share families: that is where the fast path keeps state."""
    families = draw(
        st.lists(st.tuples(st.sampled_from(REQUIREMENTS), st.sampled_from(ranks)), min_size=1, max_size=3)
    )
    shapes = draw(
        st.lists(
            st.tuples(st.sampled_from([0.5, 1, 2, 4]), st.sampled_from([256, 1024, 2048])),
            min_size=1,
            max_size=3,
        )
    )
    picks = draw(
        st.lists(
            st.tuples(st.integers(0, len(families) - 1), st.integers(0, len(shapes) - 1)), max_size=max_size
        )
    )
    return [PendingVM(k, *shapes[s], *families[f]) for k, (f, s) in enumerate(picks)]


@settings(max_examples=600, deadline=None)
@given(
    hosts=st.lists(host_views, max_size=8, unique_by=lambda h: h.id),
    pending=pending_vms(),
    policy=st.sampled_from(POLICIES),
    max_dispatch=st.sampled_from([0, 0, 3, 10]),
    max_host_dispatch=st.sampled_from([0, 0, 1, 2]),
    skip_limit=st.sampled_from([0, 1, 24]),
)
def test_place_equals_place_naive(
    hosts: list[HostView],
    pending: list[PendingVM],
    policy: SchedPolicy,
    max_dispatch: int,
    max_host_dispatch: int,
    skip_limit: int,
) -> None:
    policy = SchedPolicy(policy.kind, policy.rank, max_dispatch, max_host_dispatch)
    # small limits push signatures from the shared heap to private ones, as on big sites
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scheduler, "_SKIP_LIMIT", skip_limit)
        assert place(pending, hosts, policy) == place_naive(pending, hosts, policy)


@settings(max_examples=300, deadline=None)
@given(
    hosts=st.lists(host_views, max_size=6, unique_by=lambda h: h.id),
    pending=pending_vms(ranks=[None, "RUNNING_VMS", "FREE_CPU * RUNNING_VMS", "USED_MEM"]),
    max_host_dispatch=st.sampled_from([0, 0, 2]),
    skip_limit=st.sampled_from([0, 1, 24]),
)
def test_place_equals_place_naive_when_ranks_grow(
    hosts: list[HostView], pending: list[PendingVM], max_host_dispatch: int, skip_limit: int
) -> None:
    """Packing-like ranks grow as hosts fill, the case where stale heap entries underrate a
    host: concentrated here because it needs several signatures touching the same hosts."""
    policy = SchedPolicy(PolicyKind.PACKING, max_host_dispatch=max_host_dispatch)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scheduler, "_SKIP_LIMIT", skip_limit)
        assert place(pending, hosts, policy) == place_naive(pending, hosts, policy)


@settings(max_examples=200, deadline=None)
@given(
    hosts=st.lists(host_views, min_size=1, max_size=6),
    pending=pending_vms(max_size=20).map(lambda vms: vms + vms[:3]),
    policy=st.sampled_from(POLICIES),
)
def test_place_equals_place_naive_with_duplicate_ids(
    hosts: list[HostView], pending: list[PendingVM], policy: SchedPolicy
) -> None:
    """Duplicate host or VM ids are a caller bug, but must not make the two disagree."""
    assert place(pending, hosts, policy) == place_naive(pending, hosts, policy)


def test_benchmark_script_runs_and_checks_equivalence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import json
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_place.py"
    spec = importlib.util.spec_from_file_location("bench_place", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_place", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    assert bench.main(["--vms", "300", "--hosts", "40", "--baseline-vms", "100", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in rows] == ["packing", "custom"]
    assert all(r["extrapolated"] and r["baseline_vms"] == 100 and r["placed"] > 0 for r in rows)
