"""Reading template files for ``vm create``, ``template create`` and ``vnet create``.

Why the file name matters: the daemon parses the text and reports ``template:LINE:COL: ...``;
the user needs to see *their* file there, so a ParseError coming back is re-labelled with the
path they typed. The format is taken from the extension when it says one, else auto-detected
by the daemon (ONE syntax, JSON or TOML).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from vocloud.cli.errors import ApiError, CliError

_FORMATS = {".json": "json", ".toml": "toml", ".one": "one", ".tmpl": "one", ".tpl": "one"}
_DAEMON_SOURCES = ("template:", "network template:")


@dataclass(frozen=True)
class TemplateFile:
    text: str
    format: str
    source: str


def read_template(path: str) -> TemplateFile:
    """``-`` is stdin; anything unreadable is a one-line CliError."""
    if path == "-":
        try:
            return TemplateFile(sys.stdin.read(), "auto", "<stdin>")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the template from stdin: {exc}") from None
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"template file {path} does not exist") from None
    except IsADirectoryError:
        raise CliError(f"template file {path} is a directory") from None
    except PermissionError:
        raise CliError(f"template file {path} is not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise CliError(f"template file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"cannot read template file {path}: {exc.strerror}") from None
    return TemplateFile(text, _FORMATS.get(p.suffix.lower(), "auto"), path)


def relabel(exc: ApiError, source: str) -> ApiError:
    """``template:3:7: expected '='`` -> ``vm.tmpl:3:7: expected '='``."""
    if exc.code == "ParseError":
        for prefix in _DAEMON_SOURCES:
            if exc.message.startswith(prefix):
                return ApiError(exc.status, exc.code, source + ":" + exc.message[len(prefix):],
                                exc.details)
    return exc
