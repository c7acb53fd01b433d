"""The daemon's REST API as the CLI sees it: JSON in, JSON out, every failure a CliError.

Why one small wrapper: the CLI must never show a traceback for something the user can fix, and
all commands must phrase "daemon not running", "wrong token" and "request refused" the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import httpx
import orjson

from vocloud.cli.credentials import Endpoint, token_hint
from vocloud.cli.errors import ApiError, CliError

API = "/api/v1"
TIMEOUT = 120.0
_LOOPBACK = {"localhost", "::1"}  # creating thousands of VMs in one request is legitimately slow


class Client:
    def __init__(self, endpoint: Endpoint, timeout: float = TIMEOUT) -> None:
        self.endpoint = endpoint
        headers = {"Accept": "application/json"}
        if endpoint.token:
            headers["Authorization"] = f"Bearer {endpoint.token}"
        # Certificates are loaded only for https: building a verifying SSL context costs a tenth
        # of a second, paid by every command against the usual plain-http loopback daemon. A
        # proxy from the environment is honoured, except for loopback, where it is never meant.
        try:
            host = httpx.URL(endpoint.url).host
        except httpx.InvalidURL as exc:
            raise CliError(f"bad vocloud URL {endpoint.url!r}: {exc}") from None
        self._http = httpx.Client(base_url=endpoint.url + API, headers=headers, timeout=timeout,
                                  trust_env=host not in _LOOPBACK and not host.startswith("127."),
                                  verify=endpoint.url.startswith("https://"))

    def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self._request("GET", path, params=query)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, body=body or {})

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("PUT", path, body=body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("PATCH", path, body=body)

    def delete(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self._request("DELETE", path, params=query or None)

    def upload(self, path: str, stream: BinaryIO, size: int, params: dict[str, Any],
               progress: Callable[[int], None] | None = None, chunk: int = 1 << 20,
               timeout: float = 3600.0) -> Any:
        """POST a file's bytes as ``application/octet-stream``, read and sent a chunk at a time
        (never whole in memory); ``progress`` is called with each chunk's length."""
        def body() -> Iterator[bytes]:
            while data := stream.read(chunk):
                if progress is not None:
                    progress(len(data))
                yield data

        query = {k: v for k, v in params.items() if v is not None}
        return self._request("POST", path, params=query, content=body(), timeout=timeout,
                             headers={"Content-Type": "application/octet-stream",
                                      "Content-Length": str(size)})

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 params: dict[str, Any] | None = None, content: Iterator[bytes] | None = None,
                 headers: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        url = self.endpoint.url
        try:
            resp = self._http.request(
                method, path, params=params,
                content=orjson.dumps(body) if body is not None else content,
                headers={"Content-Type": "application/json"} if body is not None else headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.ConnectError:
            raise CliError(f"cannot reach vocloud at {url}: is `vocloud serve` running?") from None
        except httpx.TimeoutException:
            raise CliError(f"vocloud at {url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise CliError(f"cannot talk to vocloud at {url}: {exc}") from None
        if resp.status_code >= 400:
            raise self._error(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise CliError(f"{url} answered with something that is not JSON: is it vocloud?") from None

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
            message = f"HTTP {resp.status_code} from {self.endpoint.url}: {resp.text[:200]}"
        if resp.status_code == 401:
            hint = token_hint(self.endpoint)
            message = hint if self.endpoint.token is None else f"{message}; {hint}"
        return ApiError(resp.status_code, code, message, details)
