"""Issue 2's acceptance, through the ``vocloud`` command as an administrator would type it.

Three sim hosts of 8 CPUs / 16 GiB, 30 one-CPU VMs: 24 run, packed host after host, none of the
hosts above 8 CPUs, and the 6 left PENDING say why; terminating all of them brings every VM to
DONE and gives the capacity back.
"""

from __future__ import annotations

import re
from typing import Any

from tests.support.daemon import Daemon

N_HOSTS, HOST_CPU, N_VMS = 3, 8, 30


def _vms(daemon: Daemon) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = daemon.api("GET", "/vms", params={"all": "true"})
    return rows


def _states(daemon: Daemon) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in _vms(daemon):
        out[row["state"]] = out.get(row["state"], 0) + 1
    return out


def test_thirty_vms_on_three_hosts(fresh_daemon: Daemon) -> None:
    daemon = fresh_daemon
    for i in range(1, N_HOSTS + 1):
        r = daemon.ok("host", "create", f"node{i}", "--vmm", "sim", "--cpu", str(HOST_CPU),
                      "--memory", "16G")
        assert re.fullmatch(r"ID: \d+\n", r.out)
    daemon.wait_for("hosts MONITORED", lambda: all(
        h["state"] == "MONITORED" for h in daemon.api("GET", "/hosts")))

    listing = daemon.ok("host", "list").out.splitlines()
    assert listing[0].split() == ["ID", "NAME", "STATE", "RVM", "TCPU", "FCPU", "TMEM", "FMEM"]
    assert listing[1].split()[1:] == ["node1", "on", "0", "8", "8", "16G", "16G"]

    created = daemon.ok("vm", "create", "--cpu", "1", "--memory", "512", "-m", str(N_VMS))
    ids = [int(m) for m in re.findall(r"^ID: (\d+)$", created.out, re.MULTILINE)]
    assert len(ids) == N_VMS == len(set(ids))

    running = HOST_CPU * N_HOSTS
    daemon.wait_for("24 RUNNING and 6 PENDING with a reason", lambda: (
        _states(daemon) == {"RUNNING": running, "PENDING": N_VMS - running}
        and all(v["sched_message"] for v in (daemon.api("GET", f"/vms/{i}") for i in ids[running:]))
    ))

    # no host above its 8 CPUs, through the CLI's own JSON
    hosts = daemon.ok("host", "list", "--json").json()
    assert [(h["name"], h["alloc_cpu"], h["running_vms"]) for h in hosts] == [
        (f"node{i}", HOST_CPU, HOST_CPU) for i in range(1, N_HOSTS + 1)]
    assert all(row.split()[5] == "0" for row in daemon.ok("host", "list").out.splitlines()[1:])

    # packing: hosts filled one after the other, in VM order
    by_id = {v["id"]: v for v in daemon.ok("--json", "vm", "list").json()}
    placed = [by_id[i]["host"] for i in ids[:running]]
    assert placed == [f"node{n}" for n in range(1, N_HOSTS + 1) for _ in range(HOST_CPU)]
    assert all(by_id[i]["state"] == "PENDING" and by_id[i]["host"] is None for i in ids[running:])

    table = daemon.ok("vm", "list").out.splitlines()
    assert table[0].split() == ["ID", "USER", "GROUP", "NAME", "STAT", "CPU", "MEM", "HOST", "TIME"]
    first = table[1].split()
    assert first[:3] == [str(ids[0]), "admin", "admin"] and first[4:8] == ["runn", "1", "512M", "node1"]
    assert re.fullmatch(r"\d+d \d\dh\d\d", " ".join(first[8:]))
    assert len(table) == 1 + N_VMS

    # the pending ones say why, prominently
    shown = daemon.ok("vm", "show", str(ids[-1])).out
    assert "STATE      : PENDING" in shown
    reason = next(line for line in shown.splitlines() if line.startswith("NOT PLACED"))
    assert "CPU" in reason, reason
    assert shown.index("SCHEDULING") < shown.index("VIRTUAL MACHINE TEMPLATE")
    assert "terminate" in shown.split("ALLOWED ACTIONS", 1)[1]
    running_vm = daemon.ok("vm", "show", str(ids[0]), "--json").json()
    assert running_vm["state"] == "RUNNING" and running_vm["sched_message"] == ""
    assert "NOT PLACED" not in daemon.ok("vm", "show", str(ids[0])).out

    # terminate all, as one range: the CLI ends the PENDING ones first, so the capacity the
    # running ones free is not handed to VMs that are about to be terminated anyway
    done = daemon.ok("vm", "terminate", f"{ids[0]}..{ids[-1]}")
    assert len(done.out.splitlines()) == N_VMS
    assert [int(line.split()[1].rstrip(":")) for line in done.out.splitlines()[:N_VMS - running]] == \
        ids[running:]
    daemon.wait_for("all DONE", lambda: _states(daemon) == {"DONE": N_VMS})
    assert daemon.ok("vm", "list").out.splitlines()[1:] == []
    assert len(daemon.ok("vm", "list", "--all", "--json").json()) == N_VMS
    daemon.wait_for("hosts free", lambda: all(
        h["alloc_cpu"] == 0 and h["running_vms"] == 0 for h in daemon.api("GET", "/hosts")))
    assert [row.split()[3:6] for row in daemon.ok("host", "list").out.splitlines()[1:]] == [
        ["0", "8", "8"]] * N_HOSTS
