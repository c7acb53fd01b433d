"""A minimal synchronous QMP client: one connection per command batch.

The driver's operations are short and synchronous (the lifecycle loop calls them and moves on), so
a blocking socket with a timeout is all that is needed; the async ``qemu.qmp`` package would force
an event loop into every caller. Each call opens the socket, negotiates capabilities, runs its
commands and closes, so no connection state survives a daemon restart and two daemons (or a CLI
and a daemon) never fight over a long-lived connection (QEMU serves one QMP client per socket).
"""

from __future__ import annotations

import json
import socket
import time
from types import TracebackType
from typing import Any


class QMPError(Exception):
    """QEMU answered with an error, or the socket failed; ``cls`` is QEMU's error class if any."""

    def __init__(self, message: str, cls: str = "") -> None:
        super().__init__(message)
        self.cls = cls


class QMPClient:
    """Talk QMP over a UNIX socket; use as a context manager."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buf = b""

    def __enter__(self) -> QMPClient:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise QMPError(f"cannot connect to QMP socket {self.path}: {exc}") from exc
        self._sock = sock
        greeting = self._read_message()
        if "QMP" not in greeting:
            raise QMPError(f"unexpected QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one command and return its ``return`` value; events seen meanwhile are kept."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._send(msg)
        while True:
            reply = self._read_message()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"]
                raise QMPError(f"{command}: {err.get('desc', err)}", str(err.get("class", "")))
            return reply.get("return")

    def _send(self, msg: dict[str, Any]) -> None:
        if self._sock is None:
            raise QMPError("QMP client is not connected")
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise QMPError(f"QMP send failed: {exc}") from exc

    def _read_message(self) -> dict[str, Any]:
        if self._sock is None:
            raise QMPError("QMP client is not connected")
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buf:
            if time.monotonic() > deadline:
                raise QMPError("QMP read timed out")
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                raise QMPError(f"QMP read failed: {exc}") from exc
            if not chunk:
                raise QMPError("QMP connection closed by QEMU")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QMPError(f"malformed QMP message: {line[:200]!r}") from exc
        if not isinstance(parsed, dict):
            raise QMPError(f"malformed QMP message: {line[:200]!r}")
        return parsed


def qmp_execute(path: str, command: str, arguments: dict[str, Any] | None = None,
                timeout: float = 5.0) -> Any:
    """One-shot helper: connect, run ``command``, disconnect."""
    with QMPClient(path, timeout=timeout) as client:
        return client.execute(command, arguments)
