"""A streaming-replication standby of a test PostgreSQL (``pgserver.PgServer``), promoted on
demand: PostgreSQL's own high availability, as docs/ha.md describes it, on one machine.

initdb's default pg_hba.conf already trusts replication connections from 127.0.0.1, and
``wal_level = replica`` is the default, so ``pg_basebackup -R`` of the running primary is a
standby as soon as it starts.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.pgserver import PgServer
from tests.support.ports import free_port


class PgStandby:
    def __init__(self, primary: PgServer) -> None:
        self.primary = primary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="vocloud-pg-standby-"))
        self.datadir = self.root / "data"
        if primary.as_user:
            pw = pwd.getpwnam(primary.as_user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self.primary.as_user:
            cmd = ["runuser", "-u", self.primary.as_user, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.root)

    def start(self) -> None:
        b = self.primary.bindir
        self._run(str(b / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port),
                  "-U", self.primary.user, "-D", str(self.datadir), "-R", "-X", "stream",
                  "-c", "fast", "--no-sync")
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                "-c max_connections=200")
        self._run(str(b / "pg_ctl"), "-D", str(self.datadir), "-o", opts, "-l",
                  str(self.root / "log"), "-w", "-t", "60", "start")

    def caught_up(self) -> bool:
        """Whether the standby has replayed everything the primary wrote so far."""
        import psycopg

        dsn = "host=127.0.0.1 user={} dbname=postgres port={}"
        with psycopg.connect(dsn.format(self.primary.user, self.primary.port), autocommit=True) as p:
            row = p.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        with psycopg.connect(dsn.format(self.primary.user, self.port), autocommit=True) as s:
            ok = s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                           (row[0] if row else "0/0",)).fetchone()
        return bool(ok and ok[0])

    def promote(self) -> None:
        self._run(str(self.primary.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "promote")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.primary.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop")
        time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)


def multi_host_url(primary: PgServer, standby: PgStandby, db: str) -> str:
    """One SQLAlchemy URL naming both servers: libpq tries them in order and keeps the one that
    accepts writes, so a daemon reconnects to whichever has been promoted."""
    return (f"postgresql+psycopg://{primary.user}@/{db}?host=127.0.0.1:{primary.port}"
            f"&host=127.0.0.1:{standby.port}&target_session_attrs=read-write")
