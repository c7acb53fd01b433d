"""Typed errors shared by every front-end.

Each error carries a stable machine code and the HTTP status it maps to, so the REST API, the EC2
and XML-RPC front-ends and the CLI all report the same failure the same way (4xx JSON, EC2 error
XML, XML-RPC fault, exit code 2) without re-deciding what kind of failure it was.
"""

from __future__ import annotations

from typing import Any


class VocloudError(Exception):
    """Base of every error a user can cause or see; never a bug."""

    status: int = 400
    code: str = "BadRequest"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class InvalidInput(VocloudError):
    """Malformed or out-of-range input: a template, a number, a name."""

    status = 400
    code = "InvalidInput"


class ParseError(InvalidInput):
    """A template or expression could not be parsed; names line and column."""

    code = "ParseError"

    def __init__(self, message: str, line: int, column: int, source: str = "template") -> None:
        super().__init__(f"{source}:{line}:{column}: {message}", line=line, column=column)
        self.line = line
        self.column = column
        self.reason = message


class Unauthorized(VocloudError):
    status = 401
    code = "Unauthorized"


class Forbidden(VocloudError):
    status = 403
    code = "Forbidden"


class NotFound(VocloudError):
    status = 404
    code = "NotFound"


class Conflict(VocloudError):
    """The request is well formed but clashes with current state (name taken, resource in use)."""

    status = 409
    code = "Conflict"


class IllegalAction(Conflict):
    """An action that the lifecycle table does not allow in the object's current state."""

    code = "IllegalAction"

    def __init__(self, kind: str, obj_id: int | str, state: str, action: str) -> None:
        super().__init__(
            f"cannot {action} {kind} {obj_id}: it is {state}",
            kind=kind,
            id=obj_id,
            state=state,
            action=action,
        )
        self.state = state
        self.action = action


class QuotaExceeded(Conflict):
    code = "QuotaExceeded"


class NoCapacity(Conflict):
    """No host (or no free lease) can satisfy the request right now."""

    code = "NoCapacity"


class DriverError(VocloudError):
    """A driver operation failed; the caller decides whether it is a failure state or a retry."""

    status = 502
    code = "DriverError"


class HostUnreachable(DriverError):
    """The host could not be reached at all (refused, timed out, connection lost, not
    authenticated): nothing was done there, so a step that meets it is still owed, not failed.
    The lifecycle keeps such a step and carries it out when the host answers again
    (docs/faults.md); a DriverError that is not this one means the host answered and said no."""

    code = "HostUnreachable"
