"""Where the CLI finds the daemon and the token, in the order OpenNebula users expect.

Endpoint: ``--url``, ``VOCLOUD_URL``, then the daemon's own settings (``vocloud.toml`` and
``VOCLOUD_*`` in the data directory), so ``vocloud serve`` and ``vocloud vm list`` on one machine
need no configuration. Token: ``--token``, ``VOCLOUD_TOKEN``, ``~/.config/vocloud/token`` (like
``~/.one/one_auth``), then ``<data_dir>/admin.token`` that the daemon writes on first start, so
the site administrator on the front-end is logged in out of the box.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vocloud.cli.errors import CliError

#: Same name as ``vocloud.app.daemon.TOKEN_FILE``; repeated here so the client does not import
#: the daemon (uvicorn, FastAPI, SQLAlchemy) just to find a file. A test keeps the two equal.
ADMIN_TOKEN_FILE = "admin.token"

_WILDCARD_HOSTS = {"0.0.0.0", "::", "[::]", ""}


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str | None
    token_source: str  # said in the 401 hint, so a user knows which token was wrong


def user_token_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vocloud" / "token"


def _read_token(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:  # missing or not ours (admin.token is 0600): simply not a source
        return None
    return text or None


def _settings_url_and_dir() -> tuple[str, Path]:
    from vocloud.config import load_settings
    from vocloud.errors import VocloudError

    try:
        settings = load_settings()
    except VocloudError as exc:
        raise CliError(exc.message) from None
    host = "127.0.0.1" if settings.host in _WILDCARD_HOSTS else settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}", settings.data_dir


def resolve(url: str | None, token: str | None) -> Endpoint:
    data_dir: Path | None = None
    url = url or os.environ.get("VOCLOUD_URL") or None
    if url is None:
        url, data_dir = _settings_url_and_dir()
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    if token:
        return Endpoint(url, token, "--token")
    env = os.environ.get("VOCLOUD_TOKEN")
    if env:
        return Endpoint(url, env.strip(), "VOCLOUD_TOKEN")
    path = user_token_file()
    found = _read_token(path)
    if found:
        return Endpoint(url, found, str(path))
    if data_dir is None:
        from vocloud.config import default_data_dir

        data_dir = default_data_dir()
    path = data_dir / ADMIN_TOKEN_FILE
    found = _read_token(path)
    if found:
        return Endpoint(url, found, str(path))
    return Endpoint(url, None, "nowhere")


def token_hint(endpoint: Endpoint) -> str:
    if endpoint.token is None:
        return ("no token found: pass --token, set VOCLOUD_TOKEN, or write it to "
                f"{user_token_file()}")
    return (f"the token from {endpoint.token_source} was refused: pass --token, set VOCLOUD_TOKEN, "
            f"or write a valid one to {user_token_file()}")
