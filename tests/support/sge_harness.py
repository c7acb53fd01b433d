"""A real, throwaway Grid Engine cell on loopback for integration tests (Debian's ``gridengine-*``).

Topology (what runs, all as root, all inside one temp dir under /tmp):

* A private ``SGE_ROOT`` (``<tmp>/sge``) whose ``bin``, ``lib``, ``util`` and ``utilbin`` are
  symlinks into the package's ``/var/lib/gridengine``, and a cell ``default`` made the way
  Debian's ``init_cluster`` makes one (``spoolinit`` + ``spooldefaults``), but with *classic*
  spooling into the temp dir, ``admin_user root`` and ``min_uid 0`` (the tests submit as root).
  The machine's own cell (``/var/lib/gridengine/default``) is never read or touched.
* ``sge_qmaster`` and one ``sge_execd`` for this machine's host name, on free loopback ports
  (``SGE_QMASTER_PORT``/``SGE_EXECD_PORT`` in :attr:`SgeCell.env`). Both daemonize; the
  scheduler runs every second.
* Host names: Grid Engine insists that the name a client announces matches the reverse lookup
  of its address. When this host's name maps to an address whose *first* name is another one
  (``127.0.0.1 localhost`` before ``127.0.0.1 vm`` in /etc/hosts), the cell's ``host_aliases``
  file folds that name into the host name: no change to /etc/hosts is needed.
* Host group ``@allhosts`` = this host; parallel environment ``smp`` (``$pe_slots``); projects
  ``atlas``, ``cms``, ``lhcb``, ``alice``; queues ``all.q`` (2 slots per host) and ``vo-cms`` (1 slot, only
  project ``cms``: a queue per VO, for ``vo_queue_prefix="vo-"``), both on ``@allhosts``.

Private name resolution (``SgeCell(hosts_file=...)``, for cells whose execution hosts are VMs on
a test bridge): every daemon and client command then runs in its own mount namespace
(``unshare -m``) with ``hosts_file`` bind-mounted over ``/etc/hosts``, so names the test (or the
adapter under test) appends there resolve for the qmaster and the clients without touching the
machine's /etc/hosts. Append or rewrite the file in place, never by rename: the bind mount pins
its inode. :func:`private_hosts_wrapper` gives the same prefix for other processes (the vocloud
daemon, whose ``qconf -Ae`` resolves on the client side).

Cleanup does not trust pid files: every daemon carries ``VOCLOUD_SGE_HARNESS=<root>`` in its
environment, and :meth:`SgeCell.qsub` passes it to the job (``-v``), because jobs get an
environment of Grid Engine's making, not the execd's. Teardown SIGKILLs every process that has
it (a graceful ``qconf -km`` takes ~10 s), then removes the directory.

Missing packages (or not root) skip the tests with the reason; ``VOCLOUD_REQUIRE_SGE=1`` turns
that skip into a failure, for CI machines that must run them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.ports import free_ports
from tests.support.procs import processes_with_env
from vocloud.devtools.localprocs import kill_all, poll_until, tail_files

MARKER = "VOCLOUD_SGE_HARNESS"
PACKAGE_ROOT = Path("/var/lib/gridengine")
UTIL = Path("/usr/lib/gridengine")
DEFAULTS = Path("/usr/share/gridengine")
BINARIES = ("sge_qmaster", "sge_execd", "qstat", "qconf", "qsub", "qmod", "qdel")
HELPERS = (UTIL / "spoolinit", UTIL / "spooldefaults", DEFAULTS / "default-configuration",
           DEFAULTS / "util" / "resources" / "centry", DEFAULTS / "util" / "resources" / "usersets")
PROJECTS = ("atlas", "cms", "lhcb", "alice")  # alice: outside the tests' VO mapping
SLOTS = 2  # all.q slots per host
VO_SLOTS = 1  # vo-cms slots per host
INSTALL_HINT = "apt-get install gridengine-master gridengine-exec gridengine-client"

T = TypeVar("T")

_QUEUE = """qname {name}
hostlist @allhosts
seq_no 0
load_thresholds NONE
suspend_thresholds NONE
nsuspend 1
suspend_interval 00:05:00
priority 0
min_cpu_interval 00:05:00
processors UNDEFINED
qtype BATCH INTERACTIVE
ckpt_list NONE
pe_list smp
rerun FALSE
slots {slots}
tmpdir {tmpdir}
shell /bin/sh
prolog NONE
epilog NONE
shell_start_mode posix_compliant
starter_method NONE
suspend_method NONE
resume_method NONE
terminate_method NONE
notify 00:00:60
owner_list NONE
user_lists NONE
xuser_lists NONE
subordinate_list NONE
complex_values NONE
projects {projects}
xprojects NONE
calendar NONE
initial_state default
""" + "".join(f"{lim} INFINITY\n" for lim in (
    "s_rt", "h_rt", "s_cpu", "h_cpu", "s_fsize", "h_fsize", "s_data", "h_data", "s_stack",
    "h_stack", "s_core", "h_core", "s_rss", "h_rss", "s_vmem", "h_vmem"))

_EXEC_HOST = """hostname {host}
load_scaling NONE
complex_values NONE
user_lists NONE
xuser_lists NONE
projects NONE
xprojects NONE
usage_scaling NONE
report_variables NONE
"""

_PE = """pe_name smp
slots 999
user_lists NONE
xuser_lists NONE
start_proc_args NONE
stop_proc_args NONE
allocation_rule $pe_slots
control_slaves FALSE
job_is_first_task TRUE
urgency_slots min
accounting_summary FALSE
qsort_args NONE
"""


def missing_reason() -> str | None:
    """Why this machine cannot run the harness, or ``None`` if it can."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    absent += [str(p) for p in HELPERS if not p.exists()]
    if absent:
        return f"Grid Engine not installed ({', '.join(absent)} missing): {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "the Grid Engine harness runs sge_execd, which needs root"
    return None


def private_hosts_wrapper(hosts_file: Path) -> list[str]:
    """Argv prefix that runs a command in a mount namespace where ``hosts_file`` is /etc/hosts."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts_file)]


def processes_with_marker(value: str) -> list[int]:
    """Pids whose environment carries ``MARKER=value`` (our daemons, shepherds and jobs)."""
    return processes_with_env(MARKER, value)


def host_aliases(host: str) -> str:
    """The ``host_aliases`` line that makes ``host`` match the reverse lookup of its address."""
    try:
        reverse = socket.gethostbyaddr(socket.gethostbyname(host))[0]
    except OSError:
        return ""
    return f"{host} {reverse}\n" if reverse != host else ""


class SgeCell:
    """One running Grid Engine cell; ``env`` is what a client command needs to reach it."""

    def __init__(self, hosts_file: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vocloud-sge-"))
        #: argv prefix of every daemon and client (module docstring, private name resolution)
        self.wrap = private_hosts_wrapper(hosts_file) if hosts_file is not None else []
        self.sge_root = self.root / "sge"
        self.common = self.sge_root / "default" / "common"
        self.spool = self.root / "spool"
        self.host = socket.gethostname()
        self.qmaster_port, self.execd_port = free_ports(2)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SGE_", "JOB_"))}
        self.env.update({"SGE_ROOT": str(self.sge_root), "SGE_CELL": "default",
                         "SGE_QMASTER_PORT": str(self.qmaster_port),
                         "SGE_EXECD_PORT": str(self.execd_port), MARKER: str(self.root)})
        self.client_env = {k: self.env[k] for k in ("SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT",
                                                    "SGE_EXECD_PORT")}

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._make_cell()
            self._daemon("sge_qmaster")
            self.wait_for(lambda: self._ok("qconf", "-sh"), 30, "sge_qmaster to answer")
            self._configure()
            self.start_execd()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill everything the cell started (SIGKILL: nothing here holds state worth saving)."""
        kill_all(lambda: processes_with_marker(str(self.root)), 10, interval=0.1)
        if os.environ.get("VOCLOUD_KEEP_SGE_CELL"):  # for debugging: the qmaster/execd logs
            print(f"Grid Engine cell kept in {self.root}")
            return
        shutil.rmtree(self.root, ignore_errors=True)

    def _make_cell(self) -> None:
        self.root.chmod(0o755)
        self.common.mkdir(parents=True)
        for sub in ("bin", "lib", "util", "utilbin"):
            (self.sge_root / sub).symlink_to(PACKAGE_ROOT / sub)
        (self.spool / "qmaster" / "job_scripts").mkdir(parents=True)
        (self.spool / "execd").mkdir()
        spooling = f"{self.common};{self.spool / 'qmaster'}"
        (self.common / "bootstrap").write_text(
            "# Version: 8.1.9\nadmin_user root\ndefault_domain none\nignore_fqdn true\n"
            f"spooling_method classic\nspooling_lib libspoolc\nspooling_params {spooling}\n"
            f"binary_path /usr/sbin\nqmaster_spool_dir {self.spool / 'qmaster'}\n"
            "security_mode none\nlistener_threads 2\nworker_threads 2\nscheduler_threads 1\n")
        (self.common / "act_qmaster").write_text(self.host + "\n")
        (self.common / "host_aliases").write_text(host_aliases(self.host))
        overrides = {"execd_spool_dir": str(self.spool / "execd"), "min_uid": "0", "min_gid": "0",
                     "mailer": "/bin/true", "load_report_time": "00:00:05",
                     "reporting_params": "accounting=false reporting=false flush_time=00:00:15 "
                                         "joblog=false sharelog=00:00:00"}
        lines = []
        for line in (DEFAULTS / "default-configuration").read_text().splitlines():
            key = line.split(None, 1)[0] if line.strip() and not line.startswith("#") else ""
            lines.append(f"{key} {overrides[key]}" if key in overrides else line)
        conf = self.root / "global.conf"
        conf.write_text("\n".join(lines) + "\n")
        resources = DEFAULTS / "util" / "resources"
        self._init("spoolinit", "classic", "libspoolc", spooling, "init")
        self._init("spooldefaults", "configuration", str(conf))
        self._init("spooldefaults", "complexes", str(resources / "centry"))
        self._init("spooldefaults", "usersets", str(resources / "usersets"))
        self._init("spooldefaults", "managers", "root")

    def _init(self, tool: str, *args: str) -> None:
        proc = subprocess.run([str(UTIL / tool), *args], env=self.env, capture_output=True,
                              text=True, timeout=60, check=False, cwd=self.root)
        if proc.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} exited {proc.returncode}: "
                                 f"{proc.stderr or proc.stdout}")

    def _daemon(self, name: str) -> None:
        """Start a Grid Engine daemon; it forks into the background and the parent exits."""
        with (self.root / f"{name}.out").open("ab") as log:
            subprocess.run([*self.wrap, f"/usr/sbin/{name}"], env=self.env, stdout=log,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
                           timeout=60, check=True)

    def _configure(self) -> None:
        self.run("qconf", "-as", self.host)
        sched = self.run("qconf", "-ssconf")
        fast = {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1"}
        self._apply("-Msconf", "\n".join(
            f"{k} {fast[k]}" if (k := line.split(None, 1)[0] if line.strip() else "") in fast else line
            for line in sched.splitlines()) + "\n")
        self.add_exec_host(self.host)
        self._apply("-Ahgrp", f"group_name @allhosts\nhostlist {self.host}\n")
        self._apply("-Ap", _PE)
        for project in PROJECTS:
            self._apply("-Aprj", f"name {project}\noticket 0\nfshare 0\nacl NONE\nxacl NONE\n")
        tmp = self.job_tmpdir()
        self._apply("-Aq", _QUEUE.format(name="all.q", slots=SLOTS, projects="NONE", tmpdir=tmp))
        self._apply("-Aq", _QUEUE.format(name="vo-cms", slots=VO_SLOTS, projects="cms", tmpdir=tmp))

    def job_tmpdir(self) -> Path:
        """The queues' ``tmpdir``, inside the cell's directory: execd makes a job's TMPDIR
        (``<job>.<task>.<queue>``) there and leaves it when it is stopped under a running job;
        under ``/tmp`` that was left on the machine."""
        tmp = self.root / "jobtmp"
        tmp.mkdir(exist_ok=True)  # the tests' jobs run as the user who runs the tests
        return tmp

    def _apply(self, option: str, text: str) -> None:
        path = self.root / f"qconf{option}.txt"
        path.write_text(text)
        self.run("qconf", option, str(path))

    def add_exec_host(self, host: str) -> None:
        """Declare an execution host (what a site does before its execd first starts)."""
        proc = self._proc("qconf", "-Ae", str(self._write("exechost.txt", _EXEC_HOST.format(host=host))))
        if proc.returncode != 0 and "already exists" not in proc.stdout + proc.stderr:
            raise AssertionError(f"qconf -Ae {host}: {proc.stderr or proc.stdout}")

    def _write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def start_execd(self) -> None:
        """Start this host's execd and wait until its queue instances report a load."""
        self._daemon("sge_execd")
        self.wait_for(self.execd_up, 60, "sge_execd to report to the qmaster")

    def stop_execd(self) -> None:
        """Shut the execd down (``qconf -ke``): the qmaster marks its queues ``u`` at once."""
        self.run("qconf", "-ke", self.host)
        self.wait_for(lambda: not self.execd_up(), 30, "the execd's queues to turn unknown")

    def execd_up(self) -> bool:
        out = self._try("qstat", "-f", "-q", f"all.q@{self.host}")
        rows = [line.split() for line in out.splitlines() if line.startswith(f"all.q@{self.host}")]
        return bool(rows) and "-NA-" not in rows[0] and "u" not in (rows[0][5:] or [""])[0]

    # -- helpers for tests ------------------------------------------------------------------

    def _proc(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.wrap, *argv], env=self.env, capture_output=True, text=True, timeout=60,
                              check=False, cwd=self.root, stdin=subprocess.DEVNULL)

    def _try(self, *argv: str) -> str:
        proc = self._proc(*argv)
        return proc.stdout if proc.returncode == 0 else ""

    def _ok(self, *argv: str) -> bool:
        return self._proc(*argv).returncode == 0

    def run(self, *argv: str) -> str:
        """Run a Grid Engine client command against this cell; a failure shows the logs' tail."""
        proc = self._proc(*argv)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: "
                                 f"{proc.stderr or proc.stdout}\n{self.log_tail()}")
        return proc.stdout

    def qsub(self, *args: str, command: str = "sleep 600") -> str:
        """Submit a binary job (``-b y``); returns its number. The job carries the marker."""
        out = self.run("qsub", "-terse", "-b", "y", "-o", "/dev/null", "-e", "/dev/null",
                       "-v", f"{MARKER}={self.root}", *args, *command.split())
        return out.strip().split(".")[0]

    def exec_hosts(self) -> list[str]:
        """``qconf -sel`` (which exits 1 on an empty list)."""
        return self._try("qconf", "-sel").split()

    def running(self) -> set[str]:
        """Numbers of the jobs in state ``r`` now."""
        out = self.run("qstat", "-u", "*", "-s", "r")
        return {line.split()[0] for line in out.splitlines()[2:] if line.strip()}

    def delete_all(self) -> None:
        self._try("qdel", "-f", "-u", "*")
        self.wait_for(lambda: self._try("qstat", "-u", "*") == "", 30, "all jobs to leave the queue")

    def wait_for(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """Poll ``check`` until it returns something truthy; return that."""
        return poll_until(check, timeout, what, self.log_tail)

    def log_tail(self, lines: int = 15) -> str:
        logs = sorted(self.spool.rglob("messages")) + sorted(self.root.glob("*.out"))
        return tail_files(logs, lines, root=self.root)


def sge_cell_fixture() -> Iterator[SgeCell]:
    """Body of the ``sge`` fixture: skip (or fail) without Grid Engine, always tear down."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("VOCLOUD_REQUIRE_SGE"):
            pytest.fail(reason)
        pytest.skip(reason)
    cell = SgeCell()
    cell.start()
    try:
        yield cell
    finally:
        cell.stop()


def record(dest: Path) -> None:
    """Capture real ``qstat -xml`` into ``dest`` for the unit tests' parsers.

    Run as ``python -m tests.support.sge_harness record tests/unit/data/batch/gridengine``.
    Scenario on a fresh cell (so job numbers are stable): job 1 (``-wd`` a missing directory)
    fails to start and sits in ``Eqw``; 2 is a 5-task lhcb array on ``all.q`` (tasks 1-2 run,
    3-5 wait); 3 a cms job running in ``vo-cms``; then pending: 4 atlas ``-pe smp 2 -l
    h_vmem=1G,h_rt=2:00:00``, 5 cms ``-q vo-cms -l mem_free=1500M,h_rt=30``, 6 held (``-h``),
    7 ``-hold_jid 4``, 8 project alice, 9 no project, 10 lhcb ``-l s_vmem=512M,s_rt=0:1:30``.
    Host listings: ``hosts_busy`` (that state), ``hosts_draining`` (after ``qmod -d``),
    ``hosts_drained`` (jobs gone), ``hosts_down`` (execd shut down), ``hosts_idle``.
    """
    cell = SgeCell()
    cell.start()
    pending = ["qstat", "-u", "*", "-s", "p", "-r", "-ext", "-urg", "-xml"]
    hosts = ["qstat", "-f", "-u", "*", "-xml"]
    try:
        bad = cell.qsub("-P", "atlas", "-wd", str(cell.root / "missing"))
        cell.wait_for(lambda: "Eqw" in cell.run("qstat", "-u", "*"), 30, f"job {bad} to fail")
        arr = cell.qsub("-P", "lhcb", "-q", "all.q", "-t", "1-5")
        cms = cell.qsub("-P", "cms", "-q", "vo-cms")
        cell.wait_for(lambda: len(cell.running()) == 2, 30, "the array and the cms job to run")
        cell.wait_for(lambda: cell.run("qstat", "-u", "*", "-s", "r").count(f" {arr} ") == 2, 30,
                      "two array tasks to run")
        cell.qsub("-P", "atlas", "-pe", "smp", "2", "-l", "h_vmem=1G,h_rt=2:00:00")
        cell.qsub("-P", "cms", "-q", "vo-cms", "-l", "mem_free=1500M,h_rt=30")
        cell.qsub("-P", "atlas", "-h")
        cell.qsub("-P", "atlas", "-hold_jid", "4")
        cell.qsub("-P", "alice")
        cell.qsub()
        cell.qsub("-P", "lhcb", "-l", "s_vmem=512M,s_rt=0:1:30")
        (dest / "pending.xml").write_text(cell.run(*pending))
        (dest / "pending_ext_without_urg.xml").write_text(
            cell.run("qstat", "-u", "*", "-s", "p", "-r", "-ext", "-xml"))
        (dest / "hosts_busy.xml").write_text(cell.run(*hosts))
        cell.run("qmod", "-d", f"*@{cell.host}")
        (dest / "hosts_draining.xml").write_text(cell.run(*hosts))
        cell.run("qdel", arr, cms)
        cell.wait_for(lambda: not cell.running(), 30, "the running jobs to end")
        (dest / "hosts_drained.xml").write_text(cell.run(*hosts))
        cell.delete_all()
        (dest / "pending_empty.xml").write_text(cell.run(*pending))
        cell.run("qmod", "-e", f"*@{cell.host}")
        (dest / "hosts_idle.xml").write_text(cell.run(*hosts))
        cell.stop_execd()
        (dest / "hosts_down.xml").write_text(cell.run(*hosts))
    finally:
        cell.stop()


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "record":
        sys.exit("usage: python -m tests.support.sge_harness record DEST_DIR")
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    record(out)
