"""The qemu driver's HostOps, answering reads from a monitor snapshot (one command per host).

:class:`PrefetchedOps` wraps a host's real ops and a
:class:`~vocloud.drivers.transport.snapshot.HostSnapshot` taken at the start of a monitor pass.
Reads the snapshot holds (the small files of each run dir, ``/proc/PID/cmdline`` and ``stat``,
QMP ``query-status``, the host's resources) are answered from it; anything else (a booting
guest's console, a crashed one's logs) and every write go to the real ops. A write also drops the
written path from the snapshot, so a read after it in the same pass sees the host again.

The driver's poll code is unchanged: it just runs against these ops for the duration of the pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocloud.drivers.qmp import QMPError
from vocloud.drivers.transport.snapshot import SNAP_EXISTS, SNAP_FILES, HostSnapshot, parse_usage
from vocloud.drivers.vmm.hostops import HostOps


class PrefetchedOps:
    """:class:`~vocloud.drivers.vmm.qemu.HostOps` over ``inner``, reads served from ``snap``."""

    def __init__(self, inner: HostOps, snap: HostSnapshot, top: Path) -> None:
        self.inner = inner
        self.snap = snap
        self.top = top
        self._dropped: set[Path] = set()
        self._killed: set[int] = set()  # signalled during the pass: ask the host again

    def _guest_file(self, path: Path) -> tuple[str, str] | None:
        """(run dir name, file name) when ``path`` is a file of a run dir in the snapshot."""
        if path in self._dropped or path.parent.parent != self.top:
            return None
        name = path.parent.name
        return (name, path.name) if name in self.snap.guests else None

    def _pid_of(self, pid: int) -> Any:
        if pid in self._killed:
            return None
        for g in self.snap.guests.values():
            if g.pid == pid and g.cmdline is not None:
                return g
        return None

    # ------------------------------------------------------------ reads from the snapshot

    def read_bytes(self, path: Path, offset: int = 0) -> bytes | None:
        where = self._guest_file(path)
        if where is not None and where[1] in SNAP_FILES:
            data = self.snap.guests[where[0]].files.get(where[1])
            return None if data is None else data[max(offset, 0):]
        return self.inner.read_bytes(path, offset)

    def exists(self, path: Path) -> bool:
        where = self._guest_file(path)
        if where is not None and where[1] in SNAP_EXISTS:
            return self.snap.guests[where[0]].exists.get(where[1], False)
        if path.parent == self.top and path not in self._dropped and self.snap.entries is not None:
            return path.name in self.snap.entries
        return self.inner.exists(path)

    def list_dir(self, path: Path) -> list[str]:
        if path == self.top and path not in self._dropped:
            return list(self.snap.entries or [])
        return self.inner.list_dir(path)

    def cmdline(self, pid: int) -> list[str] | None:
        g = self._pid_of(pid)
        return list(g.cmdline) if g is not None else self.inner.cmdline(pid)

    def usage(self, pid: int) -> tuple[float, int]:
        g = self._pid_of(pid)
        if g is None or g.stat is None:
            return self.inner.usage(pid)
        return parse_usage(g.stat, self.snap.uptime, self.snap.hz, self.snap.page)

    def qmp(self, sock: Path, command: str, arguments: dict[str, Any] | None = None,
            timeout: float = 5.0) -> Any:
        where = self._guest_file(sock)
        answer = (self.snap.guests[where[0]].qmp.get(command)
                  if where is not None and not arguments else None)
        if answer is None:
            return self.inner.qmp(sock, command, arguments, timeout)
        if "error" in answer:
            err = answer["error"]
            desc = err.get("desc", err) if isinstance(err, dict) else err
            cls = str(err.get("class", "")) if isinstance(err, dict) else ""
            raise QMPError(f"{command}: {desc}", cls)
        if "fail" in answer:
            raise QMPError(str(answer["fail"]))
        return answer.get("return")

    def resources(self) -> tuple[int, int, int]:
        return self.snap.nproc, self.snap.mem_total_kib // 1024, self.snap.mem_avail_kib // 1024

    # ------------------------------------------------------------ the rest goes to the host

    def size(self, path: Path) -> int:
        return self.inner.size(path)

    def write_text(self, path: Path, text: str) -> None:
        self._dropped.add(path)
        self.inner.write_text(path, text)

    def mkdir(self, path: Path) -> None:
        self._dropped.add(path)
        self.inner.mkdir(path)

    def remove(self, path: Path) -> None:
        self._dropped.add(path)
        self.inner.remove(path)

    def remove_tree(self, path: Path) -> None:
        self._dropped.add(path)
        for name in SNAP_FILES + SNAP_EXISTS:
            self._dropped.add(path / name)
        self.inner.remove_tree(path)

    def put_file(self, local: Path, path: Path) -> None:
        self._dropped.add(path)
        self.inner.put_file(local, path)

    def start_daemon(self, argv: list[str], stderr_path: Path, timeout: float) -> tuple[int, str]:
        return self.inner.start_daemon(argv, stderr_path, timeout)

    def kill(self, pid: int, sig: int) -> None:
        self._killed.add(pid)
        self.inner.kill(pid, sig)
