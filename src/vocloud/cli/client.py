"""The CLI's view of the shared REST client (vocloud/client.py): the endpoint and token come
from the CLI's credential sources, and a refused token is explained with where it came from."""

from __future__ import annotations

from vocloud.cli.credentials import Endpoint, token_hint
from vocloud.client import API, TIMEOUT
from vocloud.client import Client as _Client

__all__ = ["API", "TIMEOUT", "Client"]


class Client(_Client):
    def __init__(self, endpoint: Endpoint, timeout: float = TIMEOUT) -> None:
        self.endpoint = endpoint
        super().__init__(endpoint.url, endpoint.token, timeout,
                         unauthorized_hint=lambda: token_hint(endpoint))
