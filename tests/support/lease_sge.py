"""A real Grid Engine cell whose execution hosts are network-namespace hosts, for host leases.

The Grid Engine twin of :mod:`tests.support.lease_slurm`, built on the harness's cell
(:class:`~tests.support.sge_harness.SgeCell`: private ``SGE_ROOT``, classic spooling, everything
as root in a temp dir). Each execution host is a :class:`~tests.support.netns.NetnsHost` (its own
address, its own sshd) running ``sge_execd`` inside its network namespace, so a lease job's
processes live there and reach the daemon over the veth, as a compute node reaches its cloud's
front-end.

Names, which Grid Engine checks both ways (the name a daemon announces must be the reverse lookup
of the address it connects from): the qmaster, every client command, every execd and the vocloud
daemon run in their own mount namespaces with a private hosts file (``<root>/hosts``) bind-mounted
over /etc/hosts (``sge_harness.private_hosts_wrapper``). That file says

* ``<hub> <this machine's name>``: the qmaster's name (``act_qmaster``) is the hub address (the
  root side of the first host's veth), which every namespace has a route to; clients in the root
  namespace reach it there too, so the qmaster sees them coming from the hub, under that name
  (the submit host);
* ``<address> gelease<i>``: each namespace host. Its execd runs in its own UTS namespace too
  (``unshare -u``, hostname ``gelease<i>``), so it announces that name.

No execd runs in the root namespace; host group ``@allhosts`` is the namespace hosts, queue
``lease`` (the lease's ``--partition``) one slot per host, ``notify`` 60 s (the delay between
``-notify``'s SIGUSR1/SIGUSR2 and the signal it announces: the agent's grace period).

Teardown: the cell's daemons carry the harness's marker and die with :meth:`SgeCell.stop`; lease
jobs get an environment of Grid Engine's making (no marker), so the namespace lab's teardown,
which kills every process in each namespace, ends them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support.netns import NetnsHost, sh
from tests.support.sge_harness import _PE, _QUEUE, SgeCell, private_hosts_wrapper
from tests.support.sge_harness import missing_reason as sge_missing

QUEUE = "lease"
NOTIFY_S = 60  # the queue's notify time (Grid Engine's default)


def missing_reason() -> str | None:
    reason = sge_missing()
    if reason is None and shutil.which("unshare") is None:
        reason = "unshare(1) not found (util-linux): the cell needs private name resolution"
    return reason


class LeaseSge(SgeCell):
    """sge_qmaster on the hub address, one sge_execd per namespace host, queue ``lease``."""

    def __init__(self, hosts: Sequence[NetnsHost], root_hosts: Path) -> None:
        self.hosts = list(hosts)
        self.hub = self.hosts[0].peer
        self.hosts_file = root_hosts
        super().__init__(hosts_file=root_hosts)
        root_hosts.write_text("127.0.0.1 localhost\n" + f"{self.hub} {self.host}\n" + "".join(
            f"{h.address} {self.node(h)}\n" for h in self.hosts))
        root_hosts.chmod(0o644)

    @staticmethod
    def node(h: NetnsHost) -> str:
        return f"gelease{h.index}"

    @property
    def wrap_daemon(self) -> list[str]:
        """The prefix the vocloud daemon runs under (its ``qsub``/``qstat`` resolve like ours)."""
        return private_hosts_wrapper(self.hosts_file)

    def start(self) -> None:
        try:
            for h in self.hosts[1:]:  # the first host's veth peer *is* the hub
                sh("ip", "-n", h.netns, "route", "replace", f"{self.hub}/32", "via", h.peer)
            self._make_cell()
            (self.common / "host_aliases").write_text("")  # the private file names us right
            self._daemon("sge_qmaster")
            self.wait_for(lambda: self._ok("qconf", "-sh"), 30, "sge_qmaster to answer")
            self._configure()
            for h in self.hosts:
                self._execd(h)
            self.wait_for(self.all_up, 60, "the namespace execds to report to the qmaster")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        super().stop()
        for h in self.hosts[1:]:
            sh("ip", "-n", h.netns, "route", "del", f"{self.hub}/32", check=False)

    def _configure(self) -> None:
        self.run("qconf", "-as", self.host)
        sched = self.run("qconf", "-ssconf")
        fast = {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1"}
        self._apply("-Msconf", "\n".join(
            f"{k} {fast[k]}" if (k := line.split(None, 1)[0] if line.strip() else "") in fast else line
            for line in sched.splitlines()) + "\n")
        names = [self.node(h) for h in self.hosts]
        for name in names:
            self.add_exec_host(name)
        self._apply("-Ahgrp", f"group_name @allhosts\nhostlist {' '.join(names)}\n")
        self._apply("-Ap", _PE)
        queue = _QUEUE.format(name=QUEUE, slots=1, projects="NONE", tmpdir=self.job_tmpdir())
        assert f"notify 00:00:{NOTIFY_S}" in queue
        self._apply("-Aq", queue)

    def _execd(self, h: NetnsHost) -> None:
        """``sge_execd`` in ``h``'s network namespace, its own mount (hosts file) and UTS (name)
        namespaces; it forks into the background and the parent exits."""
        argv = ["nsenter", f"--net=/run/netns/{h.netns}", "unshare", "-m", "-u",
                "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/hosts && hostname "$1" && exec /usr/sbin/sge_execd',
                str(self.hosts_file), self.node(h)]
        with (self.root / f"sge_execd-{self.node(h)}.out").open("ab") as log:
            proc = subprocess.run(argv, env=self.env, stdout=log, stderr=log,
                                  stdin=subprocess.DEVNULL, cwd=self.root, timeout=60, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"sge_execd on {self.node(h)} exited {proc.returncode}:\n"
                                 f"{self.log_tail()}")

    def all_up(self) -> bool:
        out = self._try("qstat", "-f", "-q", QUEUE)
        rows = {r[0]: r for line in out.splitlines() if line.startswith(f"{QUEUE}@")
                for r in [line.split()]}
        for h in self.hosts:
            row = rows.get(f"{QUEUE}@{self.node(h)}")
            if row is None or "-NA-" in row or "u" in (row[5:] or [""])[0]:
                return False
        return True

    def job_state(self, job: str) -> str:
        """The job's ``qstat`` state letters, or ``GONE`` when it is no longer listed."""
        for line in self._try("qstat", "-u", "*").splitlines()[2:]:
            cols = line.split()
            if cols and cols[0] == job:
                return cols[4]
        return "GONE"

    def job_host(self, job: str) -> str:
        """The host a running job is on (``lease@gelease1`` -> ``gelease1``), or ``""``."""
        for line in self._try("qstat", "-u", "*", "-s", "r").splitlines()[2:]:
            cols = line.split()
            if cols and cols[0] == job and "@" in cols[7]:
                return cols[7].split("@", 1)[1]
        return ""
