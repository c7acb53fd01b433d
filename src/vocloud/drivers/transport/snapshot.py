"""One command per host per monitor cycle: everything the qemu driver's poll reads, in one go.

Why: over SSH every :class:`~vocloud.drivers.transport.ops.SshOps` call is a round trip, and a
monitor pass of a host cost ``2 + ~9 per guest`` of them (``resources``, ``list_dir``, then per
guest ``test -e spec.json``, ``tail qemu.pid``, ``cat /proc/PID/cmdline``, the QMP helper,
``tail intent``, ``test -e ready``, ``tail spec.json``, the usage script). With 100 hosts that was
the whole cycle. :data:`SNAPSHOT_HELPER` reads the same files, ``/proc`` entries and QMP
``query-status`` answers on the host in one ``python3 -c`` (python3 is already required there for
QMP) and prints them as one JSON document; :class:`HostSnapshot` holds it, and the driver's own
poll logic then runs against it (:class:`~vocloud.drivers.vmm.qemu_snapshot.PrefetchedOps`), so
there is one decision path, not a second "fast" one that could disagree.

What the snapshot does not hold (a booting guest's console, the failure detail of a crashed one)
is read the ordinary way, so a steady host costs one command and a changing one a few more.
File contents travel as latin-1 text, which maps every byte to one character and back exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vocloud.errors import DriverError

#: The files of a run dir the poll reads whole (``read_bytes`` at offset 0).
SNAP_FILES = ("spec.json", "qemu.pid", "intent", "boot_offset")
#: The files of a run dir whose existence the poll tests.
SNAP_EXISTS = ("spec.json", "ready", "state.sav")

#: argv ``TOP TIMEOUT``: prints one JSON document (see :class:`HostSnapshot`) about the state dir
#: TOP. argv ``--serve``: the same for each request line ``{"top": ..., "timeout": ...}`` on stdin,
#: each answer framed ``<length>\n<json>`` (SshTransport.request keeps it running). Past twice
#: the QMP timeout it stops asking QMP: those guests are then polled the ordinary way.
SNAPSHOT_HELPER = r"""
import json, os, socket, sys, time
FILES = @FILES@
EXISTS = @EXISTS@
def text(path, limit=1 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("latin-1")
    except OSError:
        return None
def qmp(path, command, timeout):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError as exc:
            s.close()
            return {"fail": "cannot connect to QMP socket %s: %s" % (path, exc)}
        with s:
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
                return {"fail": "unexpected QMP greeting"}
            reply = {}
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                reply = read()
                if "error" in reply:
                    return {"error": reply["error"]}
            return {"return": reply.get("return")}
    except Exception as exc:
        return {"fail": "QMP %s: %s" % (type(exc).__name__, exc)}
def snap(top, timeout):
    deadline = time.monotonic() + 2 * timeout  # hung QMP sockets cannot stall the whole answer
    mem = {}
    for line in open("/proc/meminfo"):
        key, _, rest = line.partition(":")
        mem[key] = int(rest.split()[0]) if rest.split() else 0
    out = {"nproc": len(os.sched_getaffinity(0)), "mem_total_kib": mem["MemTotal"],
           "mem_avail_kib": mem.get("MemAvailable", 0), "uptime": text("/proc/uptime"),
           "hz": os.sysconf("SC_CLK_TCK"), "page": os.sysconf("SC_PAGESIZE"),
           "entries": None, "guests": {}}
    try:
        out["entries"] = sorted(os.listdir(top))
    except OSError:
        pass
    for name in out["entries"] or ():
        run = os.path.join(top, name)
        g = {"files": {n: text(os.path.join(run, n)) for n in FILES},
             "exists": {n: os.path.exists(os.path.join(run, n)) for n in EXISTS}}
        out["guests"][name] = g
        raw = (g["files"]["qemu.pid"] or "").strip()
        if not raw.isdigit():
            continue
        g["pid"] = pid = int(raw)
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                g["cmdline"] = [a.decode("latin-1") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        g["stat"] = text("/proc/%d/stat" % pid)
        sock = os.path.join(run, "qmp.sock")
        if sock in " ".join(g["cmdline"]) and time.monotonic() < deadline:
            g["qmp"] = {"query-status": qmp(sock, "query-status", timeout)}
    return out
if sys.argv[1] != "--serve":
    sys.stdout.write(json.dumps(snap(sys.argv[1], float(sys.argv[2]))))
    sys.exit(0)
out = sys.stdout.buffer
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    try:
        req = json.loads(line)
        data = json.dumps(snap(str(req["top"]), float(req["timeout"])))
    except Exception as exc:
        data = json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)})
    data = data.encode()
    out.write(b"%d\n" % len(data) + data)
    out.flush()
""".replace("@FILES@", repr(SNAP_FILES)).replace("@EXISTS@", repr(SNAP_EXISTS))


@dataclass(frozen=True)
class GuestSnapshot:
    """What the host said about one entry of its state dir."""

    files: dict[str, bytes | None]
    exists: dict[str, bool]
    pid: int | None = None
    cmdline: list[str] | None = None
    stat: str | None = None
    qmp: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class HostSnapshot:
    """One monitor helper answer: the host's resources and every run dir's small files."""

    nproc: int
    mem_total_kib: int
    mem_avail_kib: int
    uptime: str
    hz: int
    page: int
    entries: list[str] | None  # None: the state dir does not exist (yet)
    guests: dict[str, GuestSnapshot]

    @classmethod
    def parse(cls, raw: bytes, where: str) -> HostSnapshot:
        """The helper's JSON, checked for shape: a host's answer is data, not trusted code."""
        try:
            doc = json.loads(raw)
            if isinstance(doc, dict) and "error" in doc:
                raise DriverError(f"{where}: the monitor helper failed: {str(doc['error'])[:300]}")
            guests = {
                str(name): GuestSnapshot(
                    files={str(k): (None if v is None else str(v).encode("latin-1"))
                           for k, v in g["files"].items()},
                    exists={str(k): bool(v) for k, v in g["exists"].items()},
                    pid=int(g["pid"]) if g.get("pid") is not None else None,
                    cmdline=[str(a) for a in g["cmdline"]] if g.get("cmdline") is not None else None,
                    stat=str(g["stat"]) if g.get("stat") is not None else None,
                    qmp={str(k): dict(v) for k, v in (g.get("qmp") or {}).items()})
                for name, g in doc["guests"].items()}
            entries = doc["entries"]
            return cls(nproc=int(doc["nproc"]), mem_total_kib=int(doc["mem_total_kib"]),
                       mem_avail_kib=int(doc["mem_avail_kib"]), uptime=str(doc["uptime"] or ""),
                       hz=int(doc["hz"]), page=int(doc["page"]),
                       entries=None if entries is None else [str(e) for e in entries],
                       guests=guests)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError) as exc:
            raise DriverError(f"{where}: the monitor helper's answer is malformed: "
                              f"{type(exc).__name__}: {str(exc)[:200]}") from None


def parse_usage(stat: str, uptime: str, hz: int, page: int) -> tuple[float, int]:
    """(average CPUs used since start, RSS MiB) from ``/proc/PID/stat`` and ``/proc/uptime``;
    (0, 0) when they do not parse (the process is gone, or an odd kernel)."""
    try:
        fields = stat.rsplit(")", 1)[1].split()
        up = float(uptime.split()[0])
        cpu_s = (int(fields[11]) + int(fields[12])) / hz
        age = max(up - int(fields[19]) / hz, 1e-3)
        rss_mib = int(fields[21]) * page // (1024 * 1024)
    except (IndexError, ValueError, ZeroDivisionError):
        return 0.0, 0
    return round(cpu_s / age, 3), rss_mib
