"""What every REST route module shares: request bounds and types, the strict request-body base,
authentication (the ``Who`` dependency) and the documented success response.

A module of its own so that the route modules (``rest.py``, ``pools.py``, and the coming
front-ends' routers) import it and never each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Request
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, model_validator

from vocloud.service.auth import Actor, Credentials
from vocloud.service.base import MAX_ID
from vocloud.service.cloud import Cloud

# ------------------------------------------------------------------------------ bounds
#: Largest memory size anywhere (MiB): 64 TiB, the largest host the hosts service accepts.
MAX_MIB = 64 * 1024 * 1024
#: Largest CPU count anywhere (cores).
MAX_CPU = 4096.0
#: Longest free text (descriptions, paths), characters.
MAX_TEXT = 65536

Id = Annotated[int, Field(ge=0, le=MAX_ID, description="object id")]
#: An object name: ASCII letters, digits, '.', '_', '-', not all digits (the service's check_name).
Name = Annotated[str, StringConstraints(min_length=1, max_length=128,
                                        pattern=r"^[A-Za-z0-9._-]*[A-Za-z._-][A-Za-z0-9._-]*$")]
RefValue = Id | Name
Short = Annotated[str, StringConstraints(max_length=32)]
AttrKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
AttrValue = Annotated[str, StringConstraints(max_length=4096)]
Attrs = Annotated[dict[AttrKey, AttrValue], Field(max_length=256)]

IdPath = Annotated[int, Path(ge=0, le=MAX_ID, description="object id")]
RefPath = Annotated[str, Path(min_length=1, max_length=128, description="id or name")]


def enum_of(values: Iterable[str]) -> dict[str, JsonValue]:
    """A documented enum for a string the service checks itself (its message lists the values)."""
    items: list[JsonValue] = [v for v in sorted(values)]
    return {"enum": items}


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


# ------------------------------------------------------------------------------ request bodies
class Strict(BaseModel):
    """Request bodies: unknown keys, NaN/infinity and NUL characters are refused (400)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("NUL characters are not allowed")
        return data


Format = Literal["auto", "one", "json", "toml"]


bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="a user token: `Authorization: Bearer vc_...` (`vocloud user token`)")


def _credentials(request: Request) -> Credentials | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return Credentials(scheme.strip(), value.strip())


def _actor(request: Request, _declared: Annotated[Any, Depends(bearer)] = None) -> Actor:
    cloud: Cloud = request.app.state.cloud
    return cloud.authenticate_with(_credentials(request))


Who = Annotated[Actor, Depends(_actor)]


def ok(model: Any, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """The documented success response of a route (documentation only: never validated)."""
    return {status: {"model": model, "description": "success"}}
