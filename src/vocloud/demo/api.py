"""The shared REST client (vocloud/client.py) as the demos call it: ``api(method, path, json=...,
params=...)``, each refusal raised as the demo's own error type, naming the request."""

from __future__ import annotations

from typing import Any

from vocloud.client import Client, ClientError
from vocloud.errors import VocloudError


class Api:
    def __init__(self, client: Client, error: type[VocloudError]) -> None:
        self.client = client
        self.error = error

    def __call__(self, method: str, path: str, json: dict[str, Any] | None = None,
                 params: dict[str, Any] | None = None) -> Any:
        try:
            return self.client.request(method, path, body=json, params=params)
        except ClientError as exc:
            raise self.error(f"{method} {path}: {exc.message}") from None

    def as_user(self, token: str) -> Api:
        return Api(self.client.as_user(token), self.error)
