"""What every REST route module shares: request bounds and types, the strict request-body base,
authentication (the ``Who`` dependency) and the documented success response.

A module of its own so that the route modules (``rest.py``, ``pools.py``, and the coming
front-ends' routers) import it and never each other.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
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


class _DeclaredBearer(HTTPBearer):
    """The bearer scheme as the OpenAPI document shows it; reads nothing (``_credentials``
    does, for every registered scheme), so no credentials model is built per request."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


bearer = _DeclaredBearer(auto_error=False, scheme_name="bearer",
                         description="a user token: `Authorization: Bearer vc_...` (`vocloud user token`)")


def _credentials(request: Request) -> Credentials | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return Credentials(scheme.strip(), value.strip())


class PendingActor:
    """A request's credentials, checked in the route's own worker-thread call.

    Why not a plain (sync) dependency: FastAPI runs a sync dependency and a sync route in two
    threadpool hops, each a thread handoff and a GIL round under 50 concurrent clients. The
    ``Who`` dependency is async and only takes the credentials; :class:`OneHopRoute` runs the
    authentication at the start of the route's own call, before the route's first line, so
    the route still never runs for an unauthenticated request. A request that also fails
    validation is authenticated first (``rest.py``'s handler), so it gets 401 before 400, as
    before."""

    __slots__ = ("actor", "cloud", "credentials")

    def __init__(self, cloud: Cloud, credentials: Credentials | None) -> None:
        self.cloud = cloud
        self.credentials = credentials
        self.actor: Actor | None = None

    def resolve(self) -> Actor:
        """The Actor (store read: call it off the event loop), or ``Unauthorized``."""
        if self.actor is None:
            self.actor = self.cloud.authenticate_with(self.credentials)
        return self.actor

    def resolve_in_batch(self) -> Actor:
        """:meth:`resolve` in a group-commit call: one store read per credential per batch
        (``Database.batch_memo``), where each call would read the same user row in turn
        before the batch's transaction opens. A refusal is not remembered: every call with a
        bad credential is refused by its own check."""
        memo = self.cloud.db.batch_memo()
        if memo is None or self.credentials is None or self.actor is not None:
            return self.resolve()
        key = (PendingActor, self.credentials.scheme, self.credentials.value)
        actor = memo.get(key)
        if actor is None:
            actor = memo[key] = self.resolve()
        self.actor = actor
        return actor


#: Where a request's :class:`PendingActor` is kept (``request.state``) for the error handlers.
PENDING_KEY = "vocloud_pending_actor"


async def _actor(request: Request, _declared: Annotated[Any, Depends(bearer)] = None) -> Any:
    pending = PendingActor(request.app.state.cloud, _credentials(request))
    setattr(request.state, PENDING_KEY, pending)
    return pending


def _resolve(kwargs: dict[str, Any]) -> None:
    for key, value in kwargs.items():
        if type(value) is PendingActor:
            kwargs[key] = value.resolve()


#: A route's ``PendingWho`` parameter: the credentials, not yet checked (:func:`in_group_commit`).
PendingWho = Annotated[PendingActor, Depends(_actor)]

T = TypeVar("T")


def authenticates_in_call(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an async route whose ``PendingWho`` is authenticated inside the call it hands to
    the group commit (:func:`in_group_commit`), instead of in a threadpool call before it:
    a write route then costs no worker thread at all. The route's body may only build that
    call; the actor exists only inside it."""
    if not inspect.iscoroutinefunction(endpoint):
        raise TypeError(f"{endpoint.__name__}: only an async route authenticates in its call")
    endpoint.__vocloud_authenticates_in_call__ = True  # type: ignore[attr-defined]
    return endpoint


async def in_group_commit(cloud: Cloud, who: PendingActor, call: Callable[[Actor], T]) -> T:
    """``call(actor)`` in the store's group commit (``store/group_commit.py``), the request's
    credentials checked first, in the same call: ``Unauthorized`` before anything else. Where
    there is none (the group commit closed or turned off), in one worker-thread call, as any
    route."""

    def authenticated() -> T:
        return call(who.resolve_in_batch())

    future = cloud.group_commit.submit(authenticated)
    if future is None:
        return await run_in_threadpool(authenticated)
    return await asyncio.wrap_future(future)


def _one_hop(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` with its ``Who`` parameters authenticated first, in the same call (a sync
    endpoint: in its worker thread; an async one: in one worker-thread call of its own, or in
    its group-commit call if it is marked :func:`authenticates_in_call`)."""
    if getattr(endpoint, "__vocloud_one_hop__", False):
        return endpoint  # include_router builds the route again from the wrapped endpoint
    if getattr(endpoint, "__vocloud_authenticates_in_call__", False):
        endpoint.__vocloud_one_hop__ = True  # type: ignore[attr-defined]
        return endpoint
    if inspect.iscoroutinefunction(endpoint):
        @functools.wraps(endpoint)
        async def run_async(**kwargs: Any) -> Any:
            if any(type(v) is PendingActor for v in kwargs.values()):
                await run_in_threadpool(_resolve, kwargs)
            return await endpoint(**kwargs)

        run_async.__vocloud_one_hop__ = True  # type: ignore[attr-defined]
        return run_async

    @functools.wraps(endpoint)
    def run(**kwargs: Any) -> Any:
        _resolve(kwargs)
        return endpoint(**kwargs)

    run.__vocloud_one_hop__ = True  # type: ignore[attr-defined]
    return run


class OneHopRoute(APIRoute):
    """Every route that takes ``Who`` must be one of these (``check_one_hop`` says so at app
    construction): authentication and the route in one threadpool hop."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, _one_hop(endpoint), **kwargs)


def check_one_hop(app: Any) -> None:
    """Refuse an app with a ``Who`` route that would be handed an unchecked PendingActor."""

    def uses_who(dep: Any) -> bool:
        return any(d.call is _actor or uses_who(d) for d in dep.dependencies)

    def routes(holder: Any) -> Iterator[Any]:
        for route in getattr(holder, "routes", []):
            included = getattr(route, "original_router", None)  # include_router, kept lazily
            yield from routes(included) if included is not None else (route,)

    for route in routes(app):
        if isinstance(route, APIRoute) and not isinstance(route, OneHopRoute) and uses_who(route.dependant):
            raise RuntimeError(f"route {route.path} takes Who but is not a OneHopRoute "
                               "(APIRouter(route_class=OneHopRoute))")


Who = Annotated[Actor, Depends(_actor)]


def ok(model: Any, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """The documented success response of a route (documentation only: never validated)."""
    return {status: {"model": model, "description": "success"}}
