"""How one VM is shown (``vm show``), kept apart from the commands that change VMs.

Why the scheduling message comes right after the state: the first question about a PENDING VM is
"why is it not running?", and the scheduler has already written the answer.
"""

import time
from datetime import datetime
from typing import Any

from vocloud.cli import output as out
from vocloud.cli.units import cores, human_mib

_FAILED = ("PROLOG_FAILURE", "BOOT_FAILURE", "EPILOG_FAILURE", "UNKNOWN")


def stamp(t: float | None) -> str:
    return "-" if not t else datetime.fromtimestamp(t).strftime("%m/%d %H:%M:%S")


def render(vm: dict[str, Any]) -> None:
    out.section(f"VIRTUAL MACHINE {vm['id']} INFORMATION")
    out.fields([
        ("ID", vm["id"]), ("NAME", vm["name"]), ("USER", vm["user"]), ("GROUP", vm["group"]),
        ("STATE", vm["state"]), ("HOST", vm["host"]), ("DEPLOY ID", vm.get("deploy_id")),
        ("START TIME", stamp(vm.get("started_at") or vm.get("created_at"))),
        ("END TIME", stamp(vm.get("ended_at"))),
    ])
    if vm["state"] == "PENDING":
        out.echo()
        out.section("SCHEDULING")
        out.fields([("NOT PLACED", vm.get("sched_message") or "waiting for the next scheduler cycle")])
    if vm.get("waiting"):
        out.echo()
        out.section("OWED ACTION")
        out.fields([("WAITING", vm["waiting"]["message"])])
    if vm.get("error") or vm["state"] in _FAILED:
        out.echo()
        out.section("ERROR")
        out.fields([("ERROR", vm.get("error") or f"the VM is {vm['state']}")])
    out.echo()
    out.section("VIRTUAL MACHINE CAPACITY")
    out.fields([("CPU", cores(vm["cpu"])), ("VCPU", vm.get("vcpu")), ("MEMORY", human_mib(vm["memory"]))])
    if vm.get("requirements") or vm.get("rank"):
        out.fields([("SCHED_REQUIREMENTS", vm.get("requirements") or "-"),
                    ("SCHED_RANK", vm.get("rank") or "-")])
    out.echo()
    out.section("ALLOWED ACTIONS")
    out.echo(", ".join(vm.get("allowed_actions") or []) or "none")
    if vm.get("leases"):
        out.echo()
        out.section("VM NICS")
        out.table(["NETWORK", "IP", "MAC"], ([n["network"], n["ip"], n["mac"]] for n in vm["leases"]))
    out.echo()
    out.section("VIRTUAL MACHINE TEMPLATE")
    out.echo((vm.get("template") or "").rstrip())
    out.echo()
    out.section("VIRTUAL MACHINE HISTORY")
    out.table(["TIME", "ACTION", "FROM", "TO", "MESSAGE"],
              ([stamp(e["time"]), e["action"], e["from"] or "-", e["to"] or "-", e["message"]]
               for e in vm.get("history", [])))


def age(row: dict[str, Any], now: float | None = None) -> float:
    """Seconds for ``vm list`` TIME: since start (or creation), up to the end if it ended."""
    begin = row.get("started_at") or row.get("created_at") or 0.0
    end = row.get("ended_at") or (time.time() if now is None else now)
    return float(end) - float(begin)
