"""The FakeRunner the batch-adapter tests share: recorded outputs of the real commands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from vocloud.batch.runner import CommandFailed

DATA = Path(__file__).parent.parent / "unit" / "data" / "batch"


def data(system: str, name: str) -> str:
    return (DATA / system / name).read_text()


class FakeRunner:
    """Answers commands from a table keyed by argv prefix; records every call.

    The adapter under test runs its real code: only the subprocess is replaced. A value that is
    an exception is raised, the way :class:`CommandRunner` raises on a failing command.
    """

    def __init__(self, answers: Mapping[tuple[str, ...], str | Exception] | None = None) -> None:
        self.answers: dict[tuple[str, ...], str | Exception] = dict(answers or {})
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str]) -> str:
        self.calls.append(list(argv))
        best = max((k for k in self.answers if tuple(argv[: len(k)]) == k), key=len, default=None)
        if best is None:
            raise AssertionError(f"unexpected command {list(argv)}")
        answer = self.answers[best]
        if isinstance(answer, Exception):
            raise answer
        return answer


def failed(argv: Sequence[str], stderr: str, rc: int = 1) -> CommandFailed:
    return CommandFailed(argv, f"{' '.join(argv)} exited with {rc}: {stderr}", returncode=rc,
                         stderr=stderr)
