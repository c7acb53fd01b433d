"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temp dir on 127.0.0.1.

Debian's ``postgresql`` package puts the server binaries in /usr/lib/postgresql/<ver>/bin. initdb
refuses to run as root, so as root the cluster is created and started as the ``postgres`` user
(created by the package).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.ports import free_port


def find_bindir() -> Path | None:
    env = os.environ.get("VOCLOUD_PG_BINDIR")
    if env:
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PgServer:
    def __init__(self, bindir: Path, options: str = "") -> None:
        self.bindir = bindir
        self.options = options  # more ``-c name=value`` server settings (bench/probe_pg_rest.py)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="vocloud-pg-"))
        self.datadir = self.root / "data"
        self.as_user: str | None = None
        if os.geteuid() == 0:
            self.as_user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.user = self.as_user or pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.root)

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", self.user,
                  "--no-sync", "-E", "UTF8")
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 {self.options}")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-o", opts, "-l",
                  str(self.root / "log"), "-w", "-t", "60", "start")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop")
        time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)
