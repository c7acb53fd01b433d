"""The CLI's one error type: whatever the user did wrong becomes one line and exit code 2.

Why a separate type: every failure a user can cause (an unreachable daemon, a refused request, an
unreadable file, a malformed size) must reach :func:`vocloud.cli.main.main` as a message, never
as a traceback, and scripts rely on the exit code to tell "you asked wrongly" (2) from success.
"""

from __future__ import annotations

from typing import Any

EXIT_USER_ERROR = 2


class CliError(Exception):
    """A failure to report on one line of stderr, with exit code 2."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the source said


class ApiError(CliError):
    """The daemon answered with an error: its own message, status and machine code kept.

    Kept apart from :class:`CliError` so that multi-ID commands can report a refused ID and go
    on with the next one, while a daemon that cannot be reached at all still stops everything.
    """

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or {}
