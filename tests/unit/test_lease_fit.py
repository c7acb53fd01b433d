"""Host leases, the pure parts: WALLTIME, the lease-fit requirement with the real placement,
the lease life cycle, the job script and squeue's answer."""

from __future__ import annotations

import pytest

from vocloud.batch.lease_jobs import lease_script, parse_squeue_states
from vocloud.core.lease_fit import LEASE_END, fit_requirements, lease_fit, lease_next
from vocloud.core.placement import HostView, PendingVM, PolicyKind, SchedPolicy, place
from vocloud.errors import InvalidInput
from vocloud.model.host_lease import JobView, LeaseState
from vocloud.model.walltime import parse_walltime, slurm_time

L, J = LeaseState, JobView


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("30:00", 1800), ("1:30:00", 5400), ("2-00:00:00", 172800), ("1-02:00", 93600),
    ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1.5h", 5400), (" 2H ", 7200),
])
def test_walltime_reads_batch_style_lengths(text: str, seconds: float) -> None:
    assert parse_walltime(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "abc", "1:60", "1:00:60", "1-", "1-5", "5x",
                                  "400d", "1e9", "nan", "1:2:3:4"])
def test_walltime_refuses_anything_else(text: str) -> None:
    with pytest.raises(InvalidInput, match="WALLTIME"):
        parse_walltime(text)


def test_slurm_time_rounds_up_to_minutes() -> None:
    assert slurm_time(60) == "0-00:01:00" and slurm_time(61) == "0-00:02:00"
    assert slurm_time(90000) == "1-01:00:00"


def _hosts() -> list[HostView]:
    return [HostView(1, "cloud", 4, 4096, 0, 0, 0),
            HostView(2, "leased", 4, 4096, 0, 0, 0, {LEASE_END: 1000.0})]


def test_only_vms_that_end_in_time_go_to_leased_hosts() -> None:
    hosts = _hosts()
    fit = lease_fit(hosts, now=0, margin=100)
    vms = [PendingVM(1, 1, 64, fit(None, None)),  # no known end: cloud hosts only
           PendingVM(2, 1, 64, fit(None, 800)),  # ends at 900 <= 1000
           PendingVM(3, 1, 64, fit(None, 950)),  # 1050 > 1000: cloud only
           PendingVM(4, 1, 64, fit('NAME = "leased"', 800)),  # its own requirement kept
           PendingVM(5, 1, 64, fit('NAME = "leased"', 950))]
    # rank: prefer the leased host when allowed, so the test sees the rule, not the tie-break
    got = place(vms, hosts, SchedPolicy(kind=PolicyKind.CUSTOM, rank=LEASE_END))
    where = {p.vm_id: p.host_id for p in got.placements}
    assert where == {1: 1, 2: 2, 3: 1, 4: 2}
    assert LEASE_END in got.unplaced[5]


def test_no_leased_host_no_change() -> None:
    fit = lease_fit([HostView(1, "cloud", 4, 4096, 0, 0, 0)], now=0, margin=100)
    assert fit("FREE_CPU > 1", None) == "FREE_CPU > 1" and fit(None, 60) is None


def test_fit_rounds_the_end_up_so_vms_share_an_expression() -> None:
    assert fit_requirements(None, 100, now=1001, margin=20) == fit_requirements(None, 100, 1005, 20)
    assert fit_requirements(None, 100, now=1001, margin=20).endswith(f"{LEASE_END} >= 1130)")


@pytest.mark.parametrize(("state", "job", "now", "ending", "empty", "expected"), [
    (L.SUBMITTED, J.PENDING, 0, False, True, L.SUBMITTED),
    (L.SUBMITTED, J.RUNNING, 0, False, True, L.SUBMITTED),  # running, not registered yet
    (L.SUBMITTED, J.GONE, 0, False, True, L.ENDED),
    (L.RUNNING, J.RUNNING, 0, False, False, L.RUNNING),
    (L.RUNNING, J.RUNNING, 0, True, False, L.DRAINING),  # the agent's SIGTERM report
    (L.RUNNING, J.GONE, 0, False, False, L.DRAINING),  # scancel seen in squeue
    (L.RUNNING, J.RUNNING, 899, False, False, L.RUNNING),
    (L.RUNNING, J.RUNNING, 900, False, False, L.DRAINING),  # lease end 1000 - lead 100
    (L.DRAINING, J.RUNNING, 950, False, False, L.DRAINING),
    (L.DRAINING, J.GONE, 950, False, True, L.ENDED),
    (L.ENDED, J.RUNNING, 0, True, True, L.ENDED),
    (L.FAILED, J.GONE, 0, False, True, L.FAILED),
])
def test_lease_life_cycle(state: LeaseState, job: JobView, now: float, ending: bool, empty: bool,
                          expected: LeaseState) -> None:
    assert lease_next(state, job, now, 1000.0, 100.0, ending, empty)[0] is expected


def test_job_script_gives_the_token_on_stdin_only() -> None:
    token = "ab12" * 16
    script = lease_script(7, token, "http://10.0.0.1:8474", ["/usr/bin/python3", "-m", "x y"],
                          {"PYTHONPATH": "/opt/vo cloud/src"})
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh" and "export PYTHONPATH='/opt/vo cloud/src'" in lines
    [run] = [line for line in lines if line.startswith("exec ")]
    assert token not in run and "'x y'" in run and "--lease 7" in run
    assert lines[-2:] == [token, "VOCLOUD_LEASE_TOKEN"] and script.count(token) == 1
    with pytest.raises(ValueError):
        lease_script(7, "x'; reboot", "http://h", ["python"])


def test_squeue_states() -> None:
    out = "12|RUNNING\n13|PENDING\n14|COMPLETING\n15|CANCELLED\n"
    assert parse_squeue_states(out, ["12", "13", "14", "15", "16"]) == {
        "12": J.RUNNING, "13": J.PENDING, "14": J.GONE, "15": J.GONE, "16": J.GONE}
