"""Issue 19 on a real SSH host with real guests: a terminate accepted while the host's sshd is
down outlives 2 x shutdown_timeout and a ``kill -9`` of the daemon, and is carried out when sshd
returns (nothing left: qemu, tap, run directory, overlay, lease); the other guest is the same
qemu process before and after; the outage is told in a few lines, and a healthy SSH host with two
guests costs (almost) no log lines at the default level.

Before the fix the terminate went SHUTDOWN_HARD -> UNKNOWN after 2 x shutdown_timeout and the VM
was RUNNING again when the host returned, with no line in the log saying the host had failed.
The full matrix (every fault at every moment) is ``bench/bench_faults.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faults import fault_site
from tests.support.netns import LabUnavailable, NetnsHost, NetnsLab
from vocloud.guest.build import GuestImage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fault_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NetnsLab, NetnsHost]]:
    """A lab of our own: the faults below kill this host's sshd and processes, so no other
    module's host may be it."""
    lab = NetnsLab(tmp_path_factory.mktemp("faultlab"))
    try:
        lab.start()
        host = lab.add_host()
    except LabUnavailable as exc:
        lab.close()
        if os.environ.get("VOCLOUD_REQUIRE_NETNS"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        yield lab, host
    finally:
        lab.close()


def test_owed_terminate_survives_outage_and_restart_and_is_told_once(
        fault_host: tuple[NetnsLab, NetnsHost], guest_image: GuestImage, tmp_path: Path) -> None:
    lab, host = fault_host
    with fault_site(tmp_path / "daemon", lab, host, guest_image) as site:
        gone, kept = site.create(2)
        site.wait([gone, kept], "RUNNING", 240)
        deploy = {v: site.vm(v)["deploy_id"] for v in (gone, kept)}
        kept_pids = site.qemu_pids(deploy[kept])
        assert len(kept_pids) == 1

        # defect 3: a healthy SSH host with two guests, at the default level (info)
        start = site.log_lines()
        time.sleep(10)
        healthy = site.log_since(start)
        assert len(healthy) <= 1, healthy  # no asyncssh INFO per command, no line per probe

        # defect 1: the host's sshd (and every session) dies; a terminate is accepted
        start = site.log_lines()
        t_out = time.monotonic()
        site.inject("sshd_all")
        site.wait_host("ERROR", 30)
        site.wait([gone, kept], "UNKNOWN", 30)
        assert site.api.post(f"/vms/{gone}/action", {"action": "terminate"})["state"] == "SHUTDOWN_HARD"
        time.sleep(8)  # > 2 x shutdown_timeout (3 s): where the old code gave the terminate up
        shown = site.vm(gone)
        assert shown["state"] == "SHUTDOWN_HARD", shown["history"]
        assert shown["waiting"]["message"].startswith("SHUTDOWN_HARD, waiting for host node1 since")
        assert "connection refused" in shown["waiting"]["reason"]

        site.daemon.kill9()  # and the daemon dies during the outage
        site.daemon.start()
        time.sleep(4)
        assert site.state(gone) == "SHUTDOWN_HARD" and site.state(kept) == "UNKNOWN"
        outage = site.log_since(start)
        outage_s = time.monotonic() - t_out

        site.heal("sshd_all")
        site.wait([gone], "DONE", 60)
        site.wait([kept], "RUNNING", 60)
        assert site.leftovers(gone) == []
        assert site.qemu_pids(deploy[kept]) == kept_pids  # the same guest, never restarted
        history = site.vm(gone)["history"]
        after = [h["to"] for h in history[next(i for i, h in enumerate(history)
                                               if h["action"] == "terminate"):]]
        assert "RUNNING" not in after and "UNKNOWN" not in after, history

        # defect 2: told once each, in a few lines (the restart tells a still-open fault again)
        lines = site.log_since(start)
        assert sum("host node1 is ERROR (was MONITORED)" in ln for ln in lines) == 1, lines
        assert sum("host node1 answers again" in ln for ln in lines) == 1, lines
        assert sum(f"VM {kept} is UNKNOWN" in ln for ln in lines) == 1, lines
        assert sum(f"VM {kept} is RUNNING again" in ln for ln in lines) == 1, lines
        # what the loops said during 30 s of outage and a restart (the restart's own start-up
        # lines are not the outage's)
        engine = [ln for ln in outage if "vocloud.engine" in ln]
        assert sum("WARNING" in ln for ln in engine) <= 3, engine
        # each fault once, and once more after the restart: host ERROR, two VMs UNKNOWN, the
        # terminate waiting; then ERROR and the wait again (6). A count, not a rate: this window
        # is ~15 s on a quiet machine. The old code logged 119 warnings a minute.
        assert len(engine) <= 8, (round(outage_s), engine)

        site.api.post(f"/vms/{kept}/action", {"action": "terminate-hard"})
        site.wait([kept], "DONE", 60)
        assert site.leftovers(kept) == []
        assert site.held() == {"running_vms": 0, "alloc_mem": 0, "leases": 0}
