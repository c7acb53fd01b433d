"""Issue 19 through the CLI: ``vocloud vm show`` says what an owed terminate waits for, and
``vocloud host offline --gone`` ends it (and refuses, changing nothing, while the host holds a
VM nobody asked to end)."""

from __future__ import annotations

from tests.support.daemon import Daemon


def test_owed_terminate_is_shown_waiting_and_ended_by_host_gone(daemon: Daemon) -> None:
    daemon.ok("host", "create", "gonehost", "--cpu", "2", "--memory", "2G")
    daemon.wait_for("gonehost monitored",
                    lambda: daemon.api("GET", "/hosts/gonehost")["state"] == "MONITORED")
    ids = daemon.api("POST", "/vms", json={
        "template": 'CPU=0.5\nMEMORY=64\nSCHED_REQUIREMENTS="NAME = \\"gonehost\\""\n', "count": 2})["ids"]
    daemon.wait_for("VMs RUNNING", lambda: all(daemon.api("GET", f"/vms/{i}")["state"] == "RUNNING"
                                               for i in ids))
    sim = daemon.data_dir / "sim" / "gonehost"
    (sim / "UNREACHABLE").touch()
    daemon.wait_for("VMs UNKNOWN", lambda: all(daemon.api("GET", f"/vms/{i}")["state"] == "UNKNOWN"
                                               for i in ids))
    daemon.ok("vm", "terminate", str(ids[0]))
    out = daemon.ok("vm", "show", str(ids[0])).out
    assert "OWED ACTION" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("WAITING "))
    assert "SHUTDOWN_HARD, waiting for host gonehost since " in line and "UNREACHABLE" in line

    refused = daemon.fails("host", "offline", "gonehost", "--gone")
    assert f"{ids[1]} (UNKNOWN)" in refused.err and "not asked to end" in refused.err
    assert daemon.api("GET", f"/vms/{ids[0]}")["state"] == "SHUTDOWN_HARD"  # nothing changed

    daemon.api("POST", f"/vms/{ids[1]}/action", json={"action": "terminate"})
    daemon.ok("host", "offline", "gonehost", "--gone")
    for i in ids:
        vm = daemon.api("GET", f"/vms/{i}")
        assert vm["state"] == "DONE" and vm["waiting"] is None
        assert vm["error"] == "host gonehost declared gone for good by admin"
    host = daemon.api("GET", "/hosts/gonehost")
    assert (host["state"], host["running_vms"], host["alloc_mem"]) == ("OFFLINE", 0, 0)
    (sim / "UNREACHABLE").unlink()
    daemon.api("DELETE", "/hosts/gonehost")
