"""An EC2-compatible cloud for the bursting tests: ``moto_server`` on 127.0.0.1, and a small
fault-injecting forwarder in front of it.

moto answers EC2 calls the way AWS does but never throttles or runs out of capacity; the
forwarder answers chosen actions with AWS's own error document (``RequestLimitExceeded``,
``InsufficientInstanceCapacity``: the Query API's ``<Response><Errors>`` shape, HTTP 503/500)
and passes every other request to moto unchanged.
"""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.ports import free_port
from vocloud.devtools.localprocs import poll_until


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A ``moto_server`` process on a free loopback port; yields its URL; killed afterwards."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/moto-api/")
            return c.getresponse().status < 500
        except OSError:
            return False
    try:
        poll_until(up, 30, "moto_server answers", interval=0.2)
        yield url
    finally:
        proc.kill()
        proc.wait(10)


def reset(url: str) -> None:
    """Forget every resource moto holds (between tests of one module)."""
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=10)
    c.request("POST", "/moto-api/reset")
    c.getresponse().read()


_ERRORS = {
    "RequestLimitExceeded": (503, "Request limit exceeded."),
    "InsufficientInstanceCapacity": (500, "We currently do not have sufficient capacity in the "
                                          "Availability Zone you requested."),
}


class FaultyCloud:
    """Forwards to ``upstream``; ``fail[action] = code`` answers that action with the error."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.fail: dict[str, str] = {}
        self.seen: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
                outer.seen.append(action)
                code = outer.fail.get(action)
                if code:
                    status, msg = _ERRORS[code]
                    doc = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                           f"<Code>{code}</Code><Message>{msg}</Message></Error></Errors>"
                           f"<RequestID>fault-{len(outer.seen)}</RequestID></Response>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(doc)))
                    self.end_headers()
                    self.wfile.write(doc)
                    return
                c = http.client.HTTPConnection(outer.upstream.hostname or "127.0.0.1",
                                               outer.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = outer.upstream.netloc
                c.request("POST", self.path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server",
                                         "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyCloud:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
