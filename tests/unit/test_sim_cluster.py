"""EASY backfilling on hand-made cases, and a randomized check of its one promise."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence

import pytest

from vocloud.sim.cluster import Cluster


def replay(
    cores: list[int], jobs: Sequence[tuple[float, int, float, float]], *, span: bool = True
) -> tuple[dict[int, float], dict[int, float]]:
    """Run (submit, procs, runtime, estimate) jobs on one partition; returns start times and
    the first reservation (shadow time) each job got as the blocked head of the queue."""
    procs = [p for _, p, _, _ in jobs]
    runtime = [r for _, _, r, _ in jobs]
    est = [e for _, _, _, e in jobs]
    c = Cluster("t", procs, est, runtime, span_nodes=span)
    for i, n in enumerate(cores):
        c.add_node(i, n, 1000, 0.0)
    events: list[tuple[float, int, int]] = [(s, 1, i) for i, (s, _, _, _) in enumerate(jobs)]
    heapq.heapify(events)
    start: dict[int, float] = {}
    reserved: dict[int, float] = {}
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, kind, job = heapq.heappop(events)
            if kind == 0:
                c.finish(job, now)
            else:
                c.submit(job)
        for job, end in c.schedule(now):
            start[job] = now
            heapq.heappush(events, (end, 0, job))
        res = c.reservation(now)
        if res is not None and c.queue[0] not in reserved:
            reserved[c.queue[0]] = res[0]
    return start, reserved


def test_backfill_only_what_cannot_delay_the_head() -> None:
    # 4 cores. A (3 cores, 100 s) runs; B (4 cores) heads the queue with a reservation at 100;
    # C (1 core, 200 s) would delay B; D (1 core, 50 s) fits in the hole and ends before 100.
    jobs = [(0, 3, 100, 100), (1, 4, 10, 10), (2, 1, 200, 200), (3, 1, 50, 50)]
    start, reserved = replay([4], jobs)
    assert reserved[1] == 100
    assert start[3] == 3  # D backfilled
    assert start[1] == 100  # B not delayed
    assert start[2] == 110  # C waits for B
    assert start[0] == 0


def test_extra_cores_may_be_used_by_long_jobs() -> None:
    # 6 cores: A (4 cores to 100). B needs 4 at 100, leaving 2 extra; C (1 core, 500 s) can use
    # one of them even though it ends after the shadow time; E (2 cores, long) cannot.
    jobs = [(0, 4, 100, 100), (1, 4, 10, 10), (2, 1, 500, 500), (3, 2, 500, 500)]
    start, _ = replay([6], jobs)
    assert start[2] == 2
    assert start[1] == 100
    assert start[3] >= 100 + 10  # would have taken the core B needs


def test_fcfs_without_holes() -> None:
    jobs = [(0, 2, 10, 10), (0, 2, 10, 10), (0, 2, 10, 10)]
    start, _ = replay([2], jobs)
    assert [start[i] for i in range(3)] == [0, 10, 20]


def test_overrunning_job_is_expected_to_end_now() -> None:
    # A's estimate (10) is too short; at t=50 its expected end is "now", so D (1 core, 40 s)
    # could only backfill into the cores B leaves spare (none): it waits.
    jobs = [(0, 2, 100, 10), (50, 2, 10, 10), (50, 1, 40, 40)]
    start, reserved = replay([2], jobs)
    assert reserved[1] == 50
    assert start[1] == 100 and start[2] == 110


@pytest.mark.parametrize("seed", range(25))
def test_backfilled_jobs_never_delay_the_head_reservation(seed: int) -> None:
    """With exact estimates, every job starts no later than its first reservation."""
    rng = random.Random(seed)
    total = rng.choice([4, 8, 16])
    jobs = []
    t = 0.0
    for _ in range(60):
        t += rng.choice([0, 0, 1, 5, 30])
        r = float(rng.randint(1, 200))
        jobs.append((t, rng.randint(1, total), r, r))
    start, reserved = replay([total], jobs)
    assert len(start) == len(jobs)
    for job, shadow in reserved.items():
        assert start[job] <= shadow, (job, start[job], shadow)


def test_draining_node_takes_no_new_job_and_busy_node_cannot_be_removed() -> None:
    c = Cluster("t", [1, 1, 1], [10, 10, 10], [10, 10, 10], span_nodes=False)
    c.add_node(1, 1, 100, 0)
    c.add_node(2, 1, 100, 0)
    c.submit(0)
    (job, _end), = c.schedule(0)
    busy = c.alloc[job][0][0]
    other = 2 if busy == 1 else 1
    c.set_draining(other, True)
    c.submit(1)
    assert c.schedule(0) == []  # the only free node drains
    with pytest.raises(RuntimeError, match="running job"):
        c.remove_node(busy, 1)
    c.remove_node(other, 1)  # empty: fine
    c.finish(job, 10)
    assert [j for j, _ in c.schedule(10)] == [1]
    assert c.free == 0 and c.busy == 1


def test_vm_partition_needs_one_node_big_enough() -> None:
    c = Cluster("t", [2], [5], [5], span_nodes=False)
    c.add_node(1, 1, 100, 0)
    c.add_node(2, 1, 100, 0)
    c.submit(0)
    assert c.schedule(0) == []  # 2 free cores, but on two 1-core VMs
    assert not c.fits_somewhere(0)
    res = c.reservation(0)
    assert res is not None and res[0] == math.inf


def test_idle_node_seconds() -> None:
    c = Cluster("t", [1], [5], [5])
    c.add_node(1, 1, 100, 0)
    c.submit(0)
    c.schedule(10)
    c.finish(0, 15)
    c.remove_node(1, 20)
    assert c.idle_node_seconds == 10 + 5
