"""Run commands on this machine: the transport of ``HostRef(transport="local")``.

It exists so drivers written against :class:`~vocloud.drivers.base.Transport` (the bridge driver,
:class:`~vocloud.drivers.transport.ops.SshOps`) run unchanged on the front-end's own host, and so
their tests can run without sshd.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from vocloud.drivers.base import CommandResult, HostRef
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

    def close(self) -> None:
        """Nothing to release; present so every transport can be closed the same way."""
