"""Run commands on this machine: the transport of ``HostRef(transport="local")``.

It exists so drivers written against :class:`~vocloud.drivers.base.Transport` (the bridge driver,
:class:`~vocloud.drivers.transport.ops.SshOps`) run unchanged on the front-end's own host, and so
their tests can run without sshd.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading

from vocloud.drivers.base import CommandResult, HostRef
from vocloud.drivers.transport.feed import Source, close_quietly, ready_argument
from vocloud.errors import DriverError


class LocalTransport:
    """:class:`~vocloud.drivers.base.Transport` through ``subprocess``; no shell is involved."""

    def run(self, host: HostRef, argv: list[str], input: bytes | None = None,
            timeout: float | None = None) -> CommandResult:
        """Run ``argv``; a missing program is exit status 127, as a shell would report it."""
        try:
            proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise DriverError(f"host {host.name} (local): {argv[0]} timed out after {timeout:g} s"
                              ) from exc
        except FileNotFoundError:
            return CommandResult(127, b"", f"{argv[0]}: command not found\n".encode())
        except OSError as exc:
            return CommandResult(126, b"", f"{argv[0]}: {exc}\n".encode())
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def put(self, host: HostRef, local_path: str, remote_path: str) -> None:
        """Copy a file; the same path on both sides is a no-op (not an error)."""
        try:
            if os.path.realpath(local_path) == os.path.realpath(remote_path):
                return
            shutil.copyfile(local_path, remote_path)
        except OSError as exc:
            raise DriverError(f"host {host.name} (local): cannot copy {local_path} to "
                              f"{remote_path}: {exc}") from exc

    def feed(self, host: HostRef, argv: list[str], source: Source, ready: bytes = b"SEND",
             timeout: float | None = None) -> tuple[CommandResult, int]:
        """Run ``argv``; when it prints a stdout line ``ready`` (or ``ready <arg>``), stream
        ``source(arg)`` to its stdin, then close it. Returns the result (stdout includes the lines
        up to ``ready``) and the bytes written. A command that never prints ``ready`` is sent
        nothing; one that exits while being fed just stops the stream (its exit status says why).

        The same protocol as :meth:`SshTransport.feed`: the image cache uses it to push a base
        under a lock the host holds for the whole transfer."""
        sent = 0
        with tempfile.TemporaryFile() as err:  # a file, so a chatty stderr cannot block the feed
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=err)
            except FileNotFoundError:
                return CommandResult(127, b"", f"{argv[0]}: command not found\n".encode()), 0
            except OSError as exc:
                return CommandResult(126, b"", f"{argv[0]}: {exc}\n".encode()), 0
            fired = threading.Event()

            def expire() -> None:
                fired.set()
                proc.kill()

            timer = threading.Timer(timeout, expire) if timeout is not None else None
            if timer is not None:
                timer.daemon = True
                timer.start()
            try:
                assert proc.stdout is not None and proc.stdin is not None
                head = b""
                while line := proc.stdout.readline():
                    head += line
                    arg = ready_argument(line, ready)
                    if arg is not None:
                        chunks = source(arg)
                        try:
                            with contextlib.suppress(BrokenPipeError):
                                for chunk in chunks:
                                    proc.stdin.write(chunk)
                                    sent += len(chunk)
                        finally:
                            close_quietly(chunks)
                        break
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
                out = proc.stdout.read()
                code = proc.wait()
            finally:
                if timer is not None:
                    timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if fired.is_set():
                raise DriverError(f"host {host.name} (local): {argv[0]} timed out after {timeout:g} s")
            err.seek(0)
            return CommandResult(code, head + out, err.read()), sent

    def close(self) -> None:
        """Nothing to release; present so every transport can be closed the same way."""
