"""The qemu driver's :class:`~vocloud.drivers.vmm.qemu.HostOps` over any Transport (SSH in practice).

The driver keeps all its state in files on the host and finds guests through ``/proc``, so a
remote host needs nothing vocloud-specific installed: every operation is a POSIX command
(``tail``, ``stat``, ``test``, ``find``, ``kill``) whose exit status carries the answer, and the
QMP socket, which is only reachable on the host, is driven by a short ``python3 -c`` client
(:data:`QMP_HELPER`) sent with each call. python3 is on every host that runs qemu in practice
(Debian's qemu pulls it in), which keeps the remote side free of a vocloud install.

One command per operation is simple and stateless (a reconnect loses nothing) at the price of a
round trip each (a few ms on a cached SSH connection); a poll costs about seven. The monitor
pass, which polls every guest of a host each cycle, uses :meth:`SshOps.snapshot` instead: one
request per host to a helper kept running on it (transport/snapshot.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vocloud.drivers.base import CommandResult, HostRef, Transport
from vocloud.drivers.qmp import QMPError
from vocloud.drivers.transport.snapshot import SNAPSHOT_HELPER, HostSnapshot, parse_usage
from vocloud.drivers.transport.ssh import SessionEnded
from vocloud.errors import DriverError

#: Connects to the QMP socket, negotiates, runs one command, prints one JSON document:
#: {"return": ...}, {"error": {...}} (QEMU's) or {"fail": "..."} (socket trouble).
QMP_HELPER = r"""
import json, socket, sys
path, command, args, timeout = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
def out(doc):
    sys.stdout.write(json.dumps(doc))
    sys.exit(0)
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError as exc:
        out({"fail": "cannot connect to QMP socket %s: %s" % (path, exc)})
    f = s.makefile("rwb")
    def read():
        while True:
            line = f.readline()
            if not line:
                raise EOFError("QMP connection closed by QEMU")
            msg = json.loads(line)
            if "event" not in msg:
                return msg
    if "QMP" not in read():
        out({"fail": "unexpected QMP greeting"})
    reply = {}
    for cmd, arguments in (("qmp_capabilities", None), (command, args)):
        msg = {"execute": cmd}
        if arguments:
            msg["arguments"] = arguments
        f.write(json.dumps(msg).encode() + b"\n")
        f.flush()
        reply = read()
        if "error" in reply:
            out({"error": reply["error"]})
    out({"return": reply.get("return")})
except Exception as exc:
    out({"fail": "QMP %s: %s" % (type(exc).__name__, exc)})
"""

# Enough for any qemu to build its machine; the transport adds its own margin on top.
_SLACK_S = 10.0


class SshOps:
    """:class:`~vocloud.drivers.vmm.qemu.HostOps` for one host, every call a command on it.

    Named for its main use; it works over any :class:`~vocloud.drivers.base.Transport`, which is
    how its tests run it through :class:`~vocloud.drivers.transport.local.LocalTransport` too.
    Transport failures (host unreachable) raise :class:`~vocloud.errors.DriverError`, so a dead
    host is an error, never "the guest is gone".
    """

    def __init__(self, transport: Transport, host: HostRef, python: str = "python3") -> None:
        self.transport = transport
        self.host = host
        self.python = python

    def _run(self, argv: list[str], input: bytes | None = None,
             timeout: float | None = None) -> CommandResult:
        return self.transport.run(self.host, argv, input=input, timeout=timeout)

    def _sh(self, script: str, *args: str, input: bytes | None = None,
            timeout: float | None = None) -> CommandResult:
        """A tiny script with positional args: the args are never parsed by a shell."""
        return self._run(["sh", "-c", script, "sh", *args], input=input, timeout=timeout)

    # ------------------------------------------------------------ files

    def read_bytes(self, path: Path, offset: int = 0) -> bytes | None:
        res = self._run(["tail", "-c", f"+{max(offset, 0) + 1}", "--", str(path)])
        return res.stdout if res.returncode == 0 else None

    def size(self, path: Path) -> int:
        res = self._run(["stat", "-L", "-c", "%s", "--", str(path)])
        try:
            return int(res.stdout) if res.returncode == 0 else 0
        except ValueError:
            return 0

    def write_text(self, path: Path, text: str) -> None:
        """Write to ``<name>.tmp.<pid>`` and rename, as LocalOps does, so readers never see half.
        The shell's pid makes the temporary name the writer's own: two loops writing the same
        file at once (the monitor and the lifecycle both seeing a guest's ready marker) once
        raced on one ``.tmp`` and the loser's ``mv`` failed its VM's boot (issue 19's suite)."""
        res = self._sh('umask 077 && tmp="$1.$$" && cat > "$tmp" && mv -f "$tmp" "$2"',
                       str(path.with_name(path.name + ".tmp")), str(path), input=text.encode())
        _check(res, f"write {path}", self.host)

    def put_file(self, local: Path, path: Path) -> None:
        """Copy a file built on the front-end (the context ISO) to the host."""
        self.transport.put(self.host, str(local), str(path))

    def exists(self, path: Path) -> bool:
        return self._run(["test", "-e", str(path)]).returncode == 0

    def mkdir(self, path: Path) -> None:
        # 0700 on the leaf: a run dir holds the VM's context (e.g. a worker's munge key)
        _check(self._run(["mkdir", "-p", "-m", "700", "--", str(path)]), f"mkdir {path}", self.host)

    def remove(self, path: Path) -> None:
        self._run(["rm", "-f", "--", str(path)])

    def remove_tree(self, path: Path) -> None:
        self._run(["rm", "-rf", "--", str(path)])

    def list_dir(self, path: Path) -> list[str]:
        res = self._run(["find", str(path), "-mindepth", "1", "-maxdepth", "1", "-printf", r"%f\0"])
        if res.returncode != 0:
            return []
        return sorted(n.decode(errors="replace") for n in res.stdout.split(b"\0") if n)

    # ------------------------------------------------------------ processes

    def start_daemon(self, argv: list[str], stderr_path: Path, timeout: float) -> tuple[int, str]:
        """Run a self-daemonizing command in its own session, stdio to ``stderr_path``.

        The remote ``timeout`` bounds it (exit 124, as LocalOps reports); the redirections make
        sure the daemon holds no end of the SSH channel, or the channel would never close.
        """
        script = 'err=$1; shift; exec "$@" </dev/null >>"$err" 2>&1'
        wrapped = ["timeout", "-k", "2", f"{timeout:g}", "setsid", "-w",
                   "sh", "-c", script, "sh", str(stderr_path), *argv]
        res = self._run(wrapped, timeout=timeout + _SLACK_S)
        if res.returncode == 124:
            return 124, f"qemu did not finish starting within {timeout:g} s"
        if res.returncode == 127:
            return 127, f"cannot run {argv[0]} on {self.host.name}: not found"
        return res.returncode, res.stderr.decode(errors="replace").strip()

    def cmdline(self, pid: int) -> list[str] | None:
        res = self._run(["cat", f"/proc/{int(pid)}/cmdline"])
        if res.returncode != 0:
            return None
        return [a.decode(errors="replace") for a in res.stdout.split(b"\0") if a] or None

    def kill(self, pid: int, sig: int) -> None:
        """A process already gone is not an error (as with LocalOps)."""
        self._run(["kill", f"-{int(sig)}", str(int(pid))])

    def qmp(self, sock: Path, command: str, arguments: dict[str, Any] | None = None,
            timeout: float = 5.0) -> Any:
        argv = [self.python, "-c", QMP_HELPER, str(sock), command, json.dumps(arguments or {}),
                f"{timeout:g}"]
        res = self._run(argv, timeout=timeout + _SLACK_S)
        try:
            doc = json.loads(res.stdout)
        except ValueError:
            err = res.stderr.decode(errors="replace").strip()[-300:]
            raise QMPError(f"QMP helper on {self.host.name} failed (exit {res.returncode}): "
                           f"{err or 'no output'}") from None
        if "error" in doc:
            err = doc["error"]
            raise QMPError(f"{command}: {err.get('desc', err)}", str(err.get("class", "")))
        if "fail" in doc:
            raise QMPError(str(doc["fail"]))
        return doc.get("return")

    # ------------------------------------------------------------ monitoring

    def resources(self) -> tuple[int, int, int]:
        """(CPUs, MemTotal MiB, MemAvailable MiB) from the host's own /proc."""
        res = self._sh("nproc && cat /proc/meminfo")
        _check(res, "read /proc/meminfo", self.host)
        lines = res.stdout.decode().splitlines()
        mem: dict[str, int] = {}
        for line in lines[1:]:
            key, _, rest = line.partition(":")
            mem[key] = int(rest.split()[0]) if rest.split() else 0
        return int(lines[0]), mem["MemTotal"] // 1024, mem.get("MemAvailable", 0) // 1024

    def usage(self, pid: int) -> tuple[float, int]:
        """(average CPUs used since start, RSS MiB), computed like LocalOps in one round trip."""
        res = self._sh('cat "/proc/$1/stat" /proc/uptime && getconf CLK_TCK && getconf PAGESIZE',
                       str(int(pid)))
        lines = res.stdout.decode(errors="replace").splitlines()
        if res.returncode != 0 or len(lines) < 4:
            return 0.0, 0
        try:
            hz, page = int(lines[2]), int(lines[3])
        except ValueError:
            return 0.0, 0
        return parse_usage(lines[0], lines[1], hz, page)

    def snapshot(self, top: Path, qmp_timeout: float = 5.0) -> HostSnapshot | None:
        """Everything a monitor pass of ``top`` reads, in one request (transport/snapshot.py).

        Over SSH the helper keeps running between passes (:meth:`SshTransport.request`): a pass
        is one request and reply on an open channel. Over other transports it is one command.
        None when the host has no python3 (exit 127): the caller then polls the ordinary way, one
        command per read, as before. Any other failure is the host's error."""
        where = f"host {self.host.name}"
        limit = qmp_timeout * 3 + _SLACK_S
        request = getattr(self.transport, "request", None)
        if request is not None:
            try:
                raw = request(self.host, [self.python, "-c", SNAPSHOT_HELPER, "--serve"],
                              json.dumps({"top": str(top), "timeout": qmp_timeout}).encode(),
                              timeout=limit)
            except SessionEnded as exc:
                if exc.returncode == 127:
                    return None
                raise
            return HostSnapshot.parse(raw, where)
        res = self._run([self.python, "-c", SNAPSHOT_HELPER, str(top), f"{qmp_timeout:g}"],
                        timeout=limit)
        if res.returncode == 127:
            return None
        _check(res, "run the monitor helper (python3)", self.host)
        return HostSnapshot.parse(res.stdout, where)


def _check(res: CommandResult, what: str, host: HostRef) -> None:
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()[-300:]
        raise DriverError(f"host {host.name}: cannot {what}: {err or f'exit {res.returncode}'}")

