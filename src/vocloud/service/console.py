"""Guest console logs, behind the same rights check for every front-end.

The console is read by whoever knows the drivers (the daemon's reconciler); this service decides
who may see it. A console can hold what the guest printed of its context (site secrets a worker
received, passwords a user's boot script echoed), so reading it takes MANAGE on the VM, not
merely USE (the right that shows its record).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vocloud.service.acl import ObjRef
from vocloud.service.auth import Actor
from vocloud.service.base import find, require
from vocloud.store.db import Database
from vocloud.store.schema import VM

#: ``vm id -> console text``; raises ``DriverError`` when the host cannot be reached.
ConsoleReader = Callable[[int], str]


class ConsoleService:
    def __init__(self, db: Database, reader: ConsoleReader | None = None) -> None:
        self.db = db
        self.reader = reader

    def log(self, actor: Actor, vm_id: int | str) -> dict[str, Any]:
        """The VM's console log (NotFound for an unknown VM, Forbidden without MANAGE)."""
        with self.db.read() as s:
            vm = find(s, VM, "VM", vm_id)
            require(s, actor, "MANAGE", ObjRef("VM", vm.id, vm.owner_id, vm.group_id))
            vid, state = vm.id, vm.state
        text = self.reader(vid) if self.reader is not None else ""  # outside the transaction
        return {"id": vid, "state": state, "log": text,
                "note": "" if text else "no console log (guest not started or cleaned up)"}
