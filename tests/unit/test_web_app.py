"""The dashboard's static app (``vocloud.web.app``): security headers, nothing served from outside
its directory, and the shipped files themselves (no inline script, no HTML sink, nothing remote,
every file in the package data). The page in a browser: tests/e2e/test_web_ui.py."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import Mount

from vocloud.web.app import CSP, STATIC, dashboard

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for p in STATIC.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(Starlette(routes=[Mount("/ui", dashboard())]), raise_server_exceptions=False)


def test_the_page_and_its_scripts_carry_the_policy(client: TestClient) -> None:
    for path, kind in (("/ui/", "text/html"), ("/ui/js/main.js", "javascript"),
                       ("/ui/app.css", "text/css")):
        r = client.get(path)
        assert r.status_code == 200 and kind in r.headers["content-type"], path
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"].endswith("/ui/")
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CSP and "*" not in CSP and "http" not in CSP and "data:" not in CSP


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/../pyproject.toml", "/ui/%2e%2e/app.py",
                                  "/ui/..%2fapp.py", "/ui/js/../../app.py", "/ui/static/index.html"])
def test_nothing_outside_the_static_directory(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.text[:200])
    assert "__all__" not in r.text


def test_no_inline_script_no_html_sink_nothing_remote() -> None:
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)  # every script is a file
    assert not re.search(r"\son[a-z]+\s*=|\sstyle\s*=", html, re.I)  # no handler, no inline style
    for f in SHIPPED:
        if f.suffix not in (".js", ".html", ".css", ".svg"):
            continue
        text = f.read_text().replace('"http://www.w3.org/2000/svg"', "")  # a namespace, not a fetch
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function", "setAttribute(\"on", "http://", "https://", "//cdn", "@import"):
            assert sink not in text, f"{sink} in {f.relative_to(STATIC)}"


def test_every_shipped_file_is_package_data() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = setuptools["package-data"]["vocloud"]
    base = ROOT / "src" / "vocloud"
    for f in SHIPPED:
        rel = f.relative_to(base).as_posix()
        assert any(fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs), rel
