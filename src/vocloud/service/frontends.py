"""Who serves this store and who leads it: for administrators only (``GET /api/v1/status``,
``vocloud status``).

Why a callable: the facts (this process, the election's record and lock) belong to the
composition root and the engine, above this layer; the rule — only an administrator may see
host names, pids and data directories — belongs here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vocloud import __version__
from vocloud.service.auth import Actor
from vocloud.service.base import require_admin


class FrontendService:
    def __init__(self, describe: Callable[[], dict[str, Any]]) -> None:
        self.describe = describe

    def status(self, actor: Actor) -> dict[str, Any]:
        require_admin(actor, "see which front-ends serve the store and which one leads")
        return {"version": __version__, **self.describe()}
