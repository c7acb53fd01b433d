"""Run commands on a remote host over SSH (asyncssh), behind the synchronous Transport API.

Why this shape:

* The drivers and the reconcile loops are synchronous, so the async client lives on one private
  event-loop thread and every call is a blocking ``run_coroutine_threadsafe``. Callers from many
  threads are fine: the connection cache is only touched on the loop thread.
* Opening an SSH connection costs a key exchange (tens of ms); a driver step issues several
  commands. So there is **one cached connection per** ``user@address:port`` and every command is
  a new channel on it. At most ``max_channels`` run at once per connection, below OpenSSH's
  default ``MaxSessions 10``, because sshd refuses channels beyond it.
* A cached connection can go stale (sshd restarted, host rebooted). A channel that cannot be
  opened on a *cached* connection is retried once on a fresh one; vocloud's driver commands are
  idempotent, so the rare double run this allows is harmless. A fresh connection is never retried:
  the error goes to the caller, who (the monitor loop) marks the host ERROR.
* Every failure is a :class:`~vocloud.errors.DriverError` naming the host and its transport and
  saying what an admin can act on: connection refused, timed out, authentication failed, host
  key not verifiable. Those that mean "the host was not reached" (no connection, or it was lost)
  are its subclass :class:`~vocloud.errors.HostUnreachable`: the engine keeps the step owed
  instead of failing it (docs/faults.md). A command that ran and failed, or timed out while
  running, stays a plain DriverError.

Host keys are always checked unless explicitly disabled: ``known_hosts`` is an OpenSSH
``known_hosts`` file (default ``~/.ssh/known_hosts`` of the user running vocloud, or
``$VOCLOUD_SSH_KNOWN_HOSTS``). A host missing from it fails with "host key not verifiable" rather
than being trusted on first use, because a daemon has nobody to ask. ``check_host_keys=False``
exists for throw-away labs only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from vocloud.drivers.base import CommandResult, HostRef
from vocloud.drivers.transport.address import SshAddress, parse_ssh
from vocloud.drivers.transport.feed import Source, close_quietly, ready_argument
from vocloud.errors import DriverError, HostUnreachable

T = TypeVar("T")

# Errors that mean "this connection is unusable", as opposed to "the command failed".
_STALE = (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, asyncssh.DisconnectError,
          BrokenPipeError, ConnectionResetError, EOFError)


class _Conn:
    """A cached connection and the semaphore that keeps it under sshd's MaxSessions."""

    def __init__(self, conn: asyncssh.SSHClientConnection, max_channels: int) -> None:
        self.conn = conn
        self.slots = asyncio.Semaphore(max_channels)


class _Session:
    """A long-lived helper command on a cached connection (see :meth:`SshTransport.request`).
    It holds one of its connection's channel slots for as long as it lives."""

    def __init__(self, proc: asyncssh.SSHClientProcess[bytes], entry: _Conn) -> None:
        self.proc = proc
        self.entry = entry
        self.lock = asyncio.Lock()  # one request at a time on the pipe
        self.released = False

    def end(self) -> None:
        self.proc.close()
        if not self.released:
            self.released = True
            self.entry.slots.release()


class SessionEnded(DriverError):
    """A helper session's command exited or garbled its reply; ``returncode`` when it exited
    (127: the program is not on the host)."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


class SshTransport:
    """:class:`~vocloud.drivers.base.Transport` for ``ssh://[user@]address[:port]`` hosts."""

    def __init__(
        self,
        *,
        known_hosts: Path | str | None = None,
        client_keys: Sequence[Path | str] | None = None,
        check_host_keys: bool = True,
        connect_timeout: float = 10.0,
        command_timeout: float = 120.0,
        keepalive_interval: float = 15.0,
        max_channels: int = 8,
    ) -> None:
        """``known_hosts``/``client_keys`` default to OpenSSH's (``~/.ssh``) when None."""
        self.known_hosts = Path(known_hosts).expanduser() if known_hosts else None
        self.client_keys = [Path(k).expanduser() for k in client_keys] if client_keys else None
        self.check_host_keys = check_host_keys
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.keepalive_interval = keepalive_interval
        self.max_channels = max_channels
        self._conns: dict[SshAddress, _Conn] = {}
        self._locks: dict[SshAddress, asyncio.Lock] = {}
        self._sessions: dict[tuple[SshAddress, str], _Session] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    @classmethod
    def from_settings(cls, ssh_key: str, known_hosts: str) -> SshTransport:
        """The daemon's transport: settings ``ssh_known_hosts`` and ``ssh_key`` (``:``-separated)."""
        keys = [k for k in ssh_key.split(":") if k]
        return cls(known_hosts=known_hosts or None, client_keys=keys or None)

    # ------------------------------------------------------------ the loop thread

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="vocloud-ssh", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _call(self, coro: Coroutine[Any, Any, T], limit: float) -> T:
        """Run ``coro`` on the loop thread; ``limit`` is a safety net above the coroutine's own."""
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        try:
            return future.result(limit)
        except FutureTimeout:
            future.cancel()
            raise HostUnreachable("ssh operation did not finish in time") from None

    def close(self) -> None:
        """Close every cached connection and stop the loop thread; the transport can be reused."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close_all(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()
        self._loop = self._thread = None
        self._locks.clear()  # asyncio locks belong to the loop that just closed

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _close_all(self) -> None:
        for sess in self._sessions.values():
            sess.end()
        self._sessions.clear()
        conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            c.conn.close()
        # together, 5 s at most: a host that vanished (its namespace deleted, a partition)
        # never takes the disconnect message, so its socket is aborted instead of flushed
        waits = [asyncio.ensure_future(c.conn.wait_closed()) for c in conns]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=5)
            for c, w in zip(conns, waits, strict=True):
                if w in pending:
                    w.cancel()
                    with contextlib.suppress(Exception):
                        c.conn.abort()

    def forget(self, host: HostRef) -> None:
        """Drop the cached connection to ``host`` (after its sshd or keys changed)."""
        addr = parse_ssh(host.transport)
        if self._loop is not None:
            self._call(self._drop(addr), 10)

    async def _drop(self, addr: SshAddress) -> None:
        for key in [k for k in self._sessions if k[0] == addr]:
            self._sessions.pop(key).end()
        c = self._conns.pop(addr, None)
        if c is not None:
            c.conn.close()

    # ------------------------------------------------------------ connections

    def _where(self, host: HostRef) -> str:
        return f"host {host.name} ({host.transport})"

    async def _connection(self, host: HostRef, addr: SshAddress) -> tuple[_Conn, bool]:
        """(connection, came from cache); one connect at a time per address."""
        lock = self._locks.setdefault(addr, asyncio.Lock())
        async with lock:
            cached = self._conns.get(addr)
            if cached is not None and not cached.conn.is_closed():
                return cached, True
            conn = await self._connect(host, addr)
            entry = _Conn(conn, self.max_channels)
            self._conns[addr] = entry
            return entry, False

    async def _connect(self, host: HostRef, addr: SshAddress) -> asyncssh.SSHClientConnection:
        where = self._where(host)
        options: dict[str, Any] = {
            "username": addr.user,
            "port": addr.port,
            "known_hosts": (str(self.known_hosts) if self.known_hosts else ())
            if self.check_host_keys else None,
            "connect_timeout": self.connect_timeout,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": 3,
            "agent_path": None,
        }
        if self.client_keys is not None:
            options["client_keys"] = [str(k) for k in self.client_keys]
        try:
            return await asyncio.wait_for(asyncssh.connect(addr.address, **options),
                                          self.connect_timeout + 1)
        except ConnectionRefusedError:
            raise HostUnreachable(f"{where}: connection refused (is sshd running on port {addr.port}?)"
                              ) from None
        except TimeoutError:
            raise HostUnreachable(f"{where}: connection timed out after {self.connect_timeout:g} s"
                              ) from None
        except asyncssh.PermissionDenied:
            raise HostUnreachable(f"{where}: authentication failed for user {addr.user!r} "
                              "(is vocloud's public key in the host's authorized_keys?)") from None
        except asyncssh.HostKeyNotVerifiable as exc:
            known = self.known_hosts or "~/.ssh/known_hosts"
            raise HostUnreachable(f"{where}: host key not verifiable against {known} ({exc.reason}); "
                              f"add the host's key, e.g. ssh-keyscan -p {addr.port} {addr.address}"
                              ) from None
        except (asyncssh.Error, OSError) as exc:
            raise HostUnreachable(f"{where}: cannot connect: {_reason(exc)}") from None

    # ------------------------------------------------------------ Transport

    def run(self, host: HostRef, argv: list[str], input: bytes | None = None,
            timeout: float | None = None) -> CommandResult:
        """Run ``argv`` (quoted for the remote POSIX shell); stdout/stderr as bytes."""
        if not argv:
            raise DriverError(f"{self._where(host)}: empty command")
        addr = parse_ssh(host.transport)
        limit = timeout if timeout is not None else self.command_timeout
        return self._call(self._run(host, addr, shlex.join(argv), input, limit),
                          limit + self.connect_timeout * 2 + 5)

    async def _run(self, host: HostRef, addr: SshAddress, command: str, input: bytes | None,
                   timeout: float) -> CommandResult:
        where = self._where(host)
        for attempt in (1, 2):
            entry, cached = await self._connection(host, addr)
            try:
                async with entry.slots:
                    proc = await entry.conn.run(command, input=input, encoding=None,
                                                timeout=timeout, check=False)
            except asyncssh.TimeoutError:
                raise DriverError(f"{where}: command timed out after {timeout:g} s: {command[:200]}"
                                  ) from None
            except _STALE as exc:
                await self._drop(addr)
                if cached and attempt == 1:
                    continue
                raise HostUnreachable(f"{where}: connection lost: {_reason(exc)}") from None
            code = proc.returncode if proc.returncode is not None else 255
            return CommandResult(code, _as_bytes(proc.stdout), _as_bytes(proc.stderr))
        raise AssertionError("unreachable")

    def request(self, host: HostRef, argv: list[str], payload: bytes,
                timeout: float | None = None) -> bytes:
        """Send ``payload`` (one line) to a long-lived ``argv`` on the host and return its reply,
        framed as ``<length>\\n<bytes>``.

        Why: a command per request costs an SSH session (sshd forks, a shell starts) and the
        program's own start (python3 with its imports: ~40 ms of the host's CPU); the monitor asks
        every host every cycle. The session is started on first use and kept, one per host and
        command, on the host's cached connection (it holds one of its channel slots), so a cycle
        costs one request/reply on an open channel. Requests must be idempotent reads: a session
        found dead (the helper exited, the connection was lost) is restarted once and the request
        sent again. A request that times out ends its session; the next one starts a new one.
        """
        if not argv:
            raise DriverError(f"{self._where(host)}: empty command")
        if b"\n" in payload:
            raise DriverError(f"{self._where(host)}: a request is one line")
        addr = parse_ssh(host.transport)
        limit = timeout if timeout is not None else self.command_timeout
        return self._call(self._request(host, addr, shlex.join(argv), payload, limit),
                          limit * 2 + self.connect_timeout * 2 + 5)

    async def _session(self, host: HostRef, addr: SshAddress, command: str
                       ) -> tuple[_Session, bool]:
        """(session, was running already); a fresh one on the host's cached connection."""
        key = (addr, command)
        sess = self._sessions.get(key)
        if sess is not None and not sess.proc.is_closing() and not sess.entry.conn.is_closed():
            return sess, True
        if sess is not None:
            self._sessions.pop(key).end()
        for attempt in (1, 2):
            entry, cached = await self._connection(host, addr)
            await entry.slots.acquire()
            try:
                proc = await entry.conn.create_process(command, encoding=None)
            except _STALE as exc:
                entry.slots.release()
                await self._drop(addr)
                if cached and attempt == 1:
                    continue
                raise HostUnreachable(f"{self._where(host)}: connection lost: {_reason(exc)}"
                                      ) from None
            sess = self._sessions[key] = _Session(proc, entry)
            return sess, False
        raise AssertionError("unreachable")

    async def _request(self, host: HostRef, addr: SshAddress, command: str, payload: bytes,
                       timeout: float) -> bytes:
        where = self._where(host)
        key = (addr, command)
        for attempt in (1, 2):
            sess, reused = await self._session(host, addr, command)
            try:
                async with sess.lock:
                    sess.proc.stdin.write(payload + b"\n")
                    head = await asyncio.wait_for(sess.proc.stdout.readline(), timeout)
                    if not head.strip().isdigit():
                        raise EOFError(head[:200].decode(errors="replace"))
                    return bytes(await asyncio.wait_for(
                        sess.proc.stdout.readexactly(int(head)), timeout))
            except TimeoutError:
                self._end_session(key, sess)
                raise DriverError(f"{where}: no reply in {timeout:g} s from {command[:120]}"
                                  ) from None
            except (*_STALE, asyncio.IncompleteReadError) as exc:
                code, err = await self._exit_of(sess)
                self._end_session(key, sess)
                if reused and attempt == 1:
                    continue  # it died between requests (or the connection did): start again
                if code is None and not isinstance(exc, EOFError):
                    raise HostUnreachable(f"{where}: connection lost: {_reason(exc)}") from None
                raise SessionEnded(f"{where}: {command[:120]} ended (exit {code}): "
                                   f"{err or _reason(exc)}", code) from None
        raise AssertionError("unreachable")

    @staticmethod
    async def _exit_of(sess: _Session) -> tuple[int | None, str]:
        """The helper's exit status and the end of its stderr, if it has exited (else None)."""
        with contextlib.suppress(Exception):
            done = await asyncio.wait_for(sess.proc.wait(), 2)
            return done.returncode, _as_bytes(done.stderr).decode(errors="replace").strip()[-300:]
        return None, ""

    def _end_session(self, key: tuple[SshAddress, str], sess: _Session) -> None:
        if self._sessions.get(key) is sess:
            del self._sessions[key]
        sess.end()

    def feed(self, host: HostRef, argv: list[str], source: Source, ready: bytes = b"SEND",
             timeout: float | None = None) -> tuple[CommandResult, int]:
        """Run ``argv``; when it prints a stdout line ``ready`` (or ``ready <arg>``), stream
        ``source(arg)`` to its stdin (one channel, with SSH flow control: never more than the
        window in flight), then send EOF. Returns the result (stdout includes the lines up to
        ``ready``) and the bytes written. A command that never prints ``ready`` is sent nothing;
        one that exits while being fed stops the stream, and its exit status says why.

        The remote side decides *whether* it wants the data after taking a lock, so a base image
        is pushed under a host-side lock held for the whole transfer (see the image cache). A
        stale cached connection is retried on a fresh one only if nothing was sent yet."""
        if not argv:
            raise DriverError(f"{self._where(host)}: empty command")
        addr = parse_ssh(host.transport)
        limit = timeout if timeout is not None else self.command_timeout
        return self._call(self._feed(host, addr, shlex.join(argv), source, ready, limit),
                          limit + self.connect_timeout * 2 + 5)

    async def _feed(self, host: HostRef, addr: SshAddress, command: str, source: Source,
                    ready: bytes, timeout: float) -> tuple[CommandResult, int]:
        where = self._where(host)
        sent = [0]
        for attempt in (1, 2):
            entry, cached = await self._connection(host, addr)
            try:
                async with entry.slots:
                    proc = await entry.conn.create_process(command, encoding=None)
                    try:
                        return await asyncio.wait_for(self._feed_proc(proc, source, ready, sent),
                                                      timeout)
                    finally:
                        proc.close()
            except TimeoutError:
                raise DriverError(f"{where}: command timed out after {timeout:g} s "
                                  f"({sent[0]} bytes sent): {command[:200]}") from None
            except _STALE as exc:
                await self._drop(addr)
                if cached and attempt == 1 and sent[0] == 0:
                    continue
                raise HostUnreachable(f"{where}: connection lost after {sent[0]} bytes sent: "
                                  f"{_reason(exc)}") from None
        raise AssertionError("unreachable")

    @staticmethod
    async def _feed_proc(proc: asyncssh.SSHClientProcess[bytes], source: Source,
                         ready: bytes, sent: list[int]) -> tuple[CommandResult, int]:
        head = b""
        while line := await proc.stdout.readline():
            head += line
            arg = ready_argument(line, ready)
            if arg is not None:
                chunks = source(arg)
                try:
                    for chunk in chunks:
                        proc.stdin.write(chunk)
                        sent[0] += len(chunk)
                        await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the command stopped reading: its exit status below says why
                finally:
                    close_quietly(chunks)
                break
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write_eof()
        done = await proc.wait()
        code = done.returncode if done.returncode is not None else 255
        return CommandResult(code, head + _as_bytes(done.stdout), _as_bytes(done.stderr)), sent[0]

    def host_key(self, host: HostRef) -> str:
        """The host's public key as ``<type> <base64>``, from this transport's connection (so
        already checked against ``known_hosts``): image distribution hands it to the host that
        sends to this one, which then trusts exactly this key (docs/image-distribution.md)."""
        addr = parse_ssh(host.transport)
        return self._call(self._host_key(host, addr), self.connect_timeout * 2 + 5)

    async def _host_key(self, host: HostRef, addr: SshAddress) -> str:
        entry, _ = await self._connection(host, addr)
        key = entry.conn.get_server_host_key()
        if key is None:
            raise DriverError(f"{self._where(host)}: the connection has no server host key")
        return " ".join(key.export_public_key("openssh").decode().split()[:2])

    def put(self, host: HostRef, local_path: str, remote_path: str) -> None:
        """Copy a file by SFTP to ``remote_path.part`` then rename it: readers never see half."""
        addr = parse_ssh(host.transport)
        try:
            size = os.path.getsize(local_path)
        except OSError as exc:
            raise DriverError(f"{self._where(host)}: cannot copy {local_path}: {exc.strerror}"
                              ) from None
        limit = self.command_timeout + size / 1e6  # generous: at least 1 MB/s
        self._call(self._put(host, addr, local_path, remote_path, limit),
                   limit + self.connect_timeout * 2 + 5)

    async def _put(self, host: HostRef, addr: SshAddress, local: str, remote: str,
                   timeout: float) -> None:
        where = self._where(host)
        for attempt in (1, 2):
            entry, cached = await self._connection(host, addr)
            try:
                async with entry.slots:
                    await asyncio.wait_for(self._sftp_put(entry.conn, local, remote), timeout)
                return
            except TimeoutError:
                raise DriverError(f"{where}: copying {local} to {remote} timed out") from None
            except asyncssh.SFTPError as exc:
                raise DriverError(f"{where}: cannot write {remote}: {exc.reason}") from None
            except _STALE as exc:
                await self._drop(addr)
                if cached and attempt == 1:
                    continue
                raise HostUnreachable(f"{where}: connection lost: {_reason(exc)}") from None
            except OSError as exc:
                raise DriverError(f"{where}: cannot copy {local}: {exc}") from None

    @staticmethod
    async def _sftp_put(conn: asyncssh.SSHClientConnection, local: str, remote: str) -> None:
        part = remote + ".part"
        async with conn.start_sftp_client() as sftp:
            await sftp.put(local, part)
            await sftp.posix_rename(part, remote)


def _as_bytes(data: object) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    return str(data).encode()


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
    return str(reason)
