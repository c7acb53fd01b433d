"""The one REST client of vocloud's API: used by the CLI, the demo, the benchmarks and tests.

JSON in, JSON out, every failure one typed exception with a one-line message: :class:`ApiError`
when the daemon answered with an error (its status, machine code and message kept), and
:class:`ClientError` when it could not be reached or did not speak JSON. Callers decide how to
show them (the CLI: one line and exit code 2; the demo: a failed step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import httpx
import orjson

API = "/api/v1"
TIMEOUT = 120.0
EXIT_USER_ERROR = 2
_LOOPBACK = {"localhost", "::1"}


class ClientError(Exception):
    """A failure to report on one line (the CLI exits with code 2)."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the source said


class ApiError(ClientError):
    """The daemon answered with an error: its own message, status and machine code kept.

    Kept apart from :class:`ClientError` so that multi-ID commands can report a refused ID and go
    on with the next one, while a daemon that cannot be reached at all still stops everything.
    """

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or {}


class Client:
    """``url`` is the daemon's base URL (``http://127.0.0.1:2633``); ``unauthorized_hint`` says
    where a refused token came from (the CLI's credential sources)."""

    def __init__(self, url: str, token: str | None, timeout: float = TIMEOUT,
                 unauthorized_hint: Callable[[], str] | None = None) -> None:
        self.url = url
        self.token = token
        self._hint = unauthorized_hint
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # Certificates are loaded only for https: building a verifying SSL context costs a tenth
        # of a second, paid by every command against the usual plain-http loopback daemon. A
        # proxy from the environment is honoured, except for loopback, where it is never meant.
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL as exc:
            raise ClientError(f"bad vocloud URL {url!r}: {exc}") from None
        self._http = httpx.Client(base_url=url + API, headers=headers, timeout=timeout,
                                  trust_env=host not in _LOOPBACK and not host.startswith("127."),
                                  verify=url.startswith("https://"))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def as_user(self, token: str) -> Client:
        """The same daemon with another user's token."""
        return Client(self.url, token, self._http.timeout.read or TIMEOUT)

    def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=query)

    def get_text(self, path: str, **params: Any) -> str:
        """A GET whose answer is text, not JSON (``/accounting/apel``)."""
        query = {k: v for k, v in params.items() if v is not None}
        try:
            resp = self._http.request("GET", path, params=query)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot talk to vocloud at {self.url}: {exc}") from None
        if resp.status_code >= 400:
            raise self._error(resp)
        return resp.text

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body=body or {})

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self.request("DELETE", path, params=query or None)

    def upload(self, path: str, stream: BinaryIO, size: int, params: dict[str, Any],
               progress: Callable[[int], None] | None = None, chunk: int = 1 << 20,
               timeout: float = 3600.0) -> Any:
        """POST a file's bytes as ``application/octet-stream`` (``vocloud image upload``), read
        and sent a chunk at a time, never whole in memory; ``progress`` gets each chunk's length."""
        def body() -> Iterator[bytes]:
            while data := stream.read(chunk):
                if progress is not None:
                    progress(len(data))
                yield data

        query = {k: v for k, v in params.items() if v is not None}
        return self.request("POST", path, params=query, content=body(), timeout=timeout,
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Length": str(size)})

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None, content: Iterator[bytes] | None = None,
                headers: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        try:
            resp = self._http.request(
                method, path, params=params,
                content=orjson.dumps(body) if body is not None else content,
                headers={"Content-Type": "application/json"} if body is not None else headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.ConnectError:
            raise ClientError(f"cannot reach vocloud at {self.url}: is `vocloud serve` running?") from None
        except httpx.TimeoutException:
            raise ClientError(f"vocloud at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot talk to vocloud at {self.url}: {exc}") from None
        return self._result(resp)

    def _result(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            raise self._error(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise ClientError(f"{self.url} answered with something that is not JSON: "
                              "is it vocloud?") from None

    def _error(self, resp: httpx.Response) -> ApiError:
        try:
            doc = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and "message" in doc:
            code, message = str(doc.get("error", "Error")), str(doc["message"])
            details = doc.get("details") if isinstance(doc.get("details"), dict) else None
        elif isinstance(doc, dict) and "detail" in doc:  # FastAPI's own (404 on unknown route)
            code, message, details = "Error", f"{resp.request.url.path}: {doc['detail']}", None
        else:
            code, details = "Error", None
            message = f"HTTP {resp.status_code} from {self.url}: {resp.text[:200]}"
        if resp.status_code == 401 and self._hint is not None:
            hint = self._hint()
            message = hint if self.token is None else f"{message}; {hint}"
        return ApiError(resp.status_code, code, message, details)


def wait_healthy(url: str, alive: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll ``/api/v1/health`` until it answers 200 (True), ``alive()`` turns False or the time
    is up (False): how a script waits for a daemon it started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            if httpx.get(url + API + "/health", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False
