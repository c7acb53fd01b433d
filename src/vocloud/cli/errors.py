"""The CLI's error types: whatever the user did wrong becomes one line and exit code 2.

Why one type: every failure a user can cause (an unreachable daemon, a refused request, an
unreadable file, a malformed size) must reach :func:`vocloud.cli.main.main` as a message, never
as a traceback, and scripts rely on the exit code to tell "you asked wrongly" (2) from success.
They are the shared REST client's own (vocloud/client.py), so a client failure needs no
translation.
"""

from __future__ import annotations

from vocloud.client import EXIT_USER_ERROR, ApiError, ClientError

__all__ = ["EXIT_USER_ERROR", "ApiError", "CliError"]

#: A failure to report on one line of stderr, with exit code 2.
CliError = ClientError
