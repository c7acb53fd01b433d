"""The web dashboard (``/ui/``) in headless Chromium, driven by Playwright, against a real daemon.

One daemon (SQLite, sim hosts, the sim batch system) and one browser for the module: log in, see
hosts, VMs and pools, terminate a VM from the page and see it go DONE, a VO user sees only their
VO, a VM whose name (put in the store directly) is an HTML tag renders as text, the accounting
and audit pages degrade to a notice on a daemon without those routes (and render a served
document), no console error on any page. Screenshots go to ``$VOCLOUD_ARTIFACTS`` (or the
pytest tmp dir). The REST API's own rules are tested on both databases elsewhere; this module
tests the page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.support.daemon import Daemon
from tests.support.ports import free_port
from vocloud.batch.sim import SimBatch
from vocloud.store.db import Database
from vocloud.store.schema import VM

REQUIRE = os.environ.get("VOCLOUD_REQUIRE_CHROMIUM", "") not in ("", "0")
if REQUIRE:
    import playwright.sync_api as sync_api  # a missing install step fails, not skips
else:
    sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path(os.environ.get("VOCLOUD_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.exists():
    if REQUIRE:
        raise RuntimeError(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow

XSS_NAME = '<img src=x onerror="window.__xss=1">'


@dataclass
class Site:
    daemon: Daemon
    base: str
    admin: str
    atlas: str  # token of a member of VO atlas
    cms: str    # token of a member of VO cms
    atlas_vm: int
    xss_vm: int
    cms_vm: int
    artifacts: Path


def _wait(cond: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("ui")
    env = {"VOCLOUD_BATCH_SYSTEM": "sim", "VOCLOUD_POOL_INTERVAL": "0.5"}
    d = Daemon(root, f"sqlite:///{root / 'vocloud.db'}", free_port(), env)
    d.start()
    art = Path(os.environ["VOCLOUD_ARTIFACTS"]) if os.environ.get("VOCLOUD_ARTIFACTS") \
        else tmp_path_factory.mktemp("ui-artifacts")
    art.mkdir(parents=True, exist_ok=True)
    try:
        with d.client() as c:
            for h in ("h1", "h2"):
                c.post("/hosts", json={"name": h, "cpu": 8, "memory": 16384}).raise_for_status()
            tokens = {}
            for vo in ("atlas", "cms"):
                c.post("/groups", json={"name": vo}).raise_for_status()
                r = c.post("/users", json={"name": f"{vo}-user", "group": vo})
                r.raise_for_status()
                tokens[vo] = r.json()["token"]
            c.post("/templates", json={"template": "CPU=1\nMEMORY=256\n", "name": "std-worker",
                                       "public": True}).raise_for_status()
            c.post("/pools", json={"vo": "atlas", "template": "std-worker", "cores": 1,
                                   "memory": 256, "max": 2}).raise_for_status()
        batch = SimBatch(path=root / "batch-sim.json")  # the daemon's sim batch system
        for _ in range(3):
            batch.submit("atlas", cores=1, runtime=3600)
        with d.client(tokens["atlas"]) as a, d.client(tokens["cms"]) as m:
            atlas_vm = a.post("/vms", json={"template": "CPU=1\nMEMORY=64\n",
                                            "name": "atlas-vm"}).json()["ids"][0]
            # The service refuses such a name (NAME is letters, digits, '.', '_', '-'); the page
            # must not rely on that: the name is put in the store directly, before the VM boots,
            # so that its (sim) console echoes it as well.
            assert a.post("/vms", json={"template": "CPU=1\nMEMORY=64\n",
                                        "name": "x<img>"}).status_code == 400
            xss_vm = a.post("/vms", json={"template": "CPU=1\nMEMORY=64\n", "name": "xss",
                                          "hold": True}).json()["ids"][0]
            db = Database(d.db_url)
            with db.write() as s:
                s.execute(update(VM).where(VM.id == xss_vm).values(name=XSS_NAME))
            db.dispose()
            a.post(f"/vms/{xss_vm}/action", json={"action": "release"}).raise_for_status()
            cms_vm = m.post("/vms", json={"template": "CPU=1\nMEMORY=64\n",
                                          "name": "cms-secret-vm"}).json()["ids"][0]
            _wait(lambda: all(a.get(f"/vms/{i}").json()["state"] == "RUNNING" for i in (atlas_vm, xss_vm)),
                  what="the atlas VMs RUNNING")
        yield Site(d, f"http://127.0.0.1:{d.port}", d.token, tokens["atlas"], tokens["cms"],
                   atlas_vm, xss_vm, cms_vm, art)
    finally:
        d.stop()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


class Page:
    """One browser context (its own sessionStorage) and page, recording console errors."""

    def __init__(self, browser: Any, site: Site) -> None:
        self.site = site
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 860})
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def login(self, token: str) -> None:
        self.page.goto(self.site.base + "/ui/")
        self.page.fill("#token", token)
        self.page.click("#login-form button[type=submit]")
        self.page.wait_for_selector("#top:not([hidden])")

    def go(self, name: str) -> None:
        self.page.click(f"#nav a[data-page={name}]")
        self.page.wait_for_selector(f"#nav a.active[data-page={name}]")

    def shot(self, name: str) -> Path:
        path = self.site.artifacts / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def ui(browser: Any, site: Site) -> Iterator[Page]:
    p = Page(browser, site)
    yield p
    p.close()
    assert p.errors == [], p.errors  # no console error on any page the test visited


def _row(p: Page, table: str, vm_id: int) -> Any:
    return p.page.locator(f"#{table} tbody tr[data-id='{vm_id}']")


def test_login_hosts_vms_and_pools(ui: Page, site: Site) -> None:
    ui.login(site.admin)
    assert ui.page.locator("#whoami").inner_text().startswith("admin")
    ui.page.wait_for_selector("#hosts-table tbody tr")
    names = ui.page.locator("#hosts-table tbody td:nth-child(2)").all_inner_texts()
    assert sorted(names) == ["h1", "h2"]
    # capacity bars: the allocated share of each host, as text and as a bar width class
    ui.page.wait_for_function(
        "() => [...document.querySelectorAll('#hosts-table .bar .label')]"
        ".some(l => !l.textContent.startsWith('0 /'))")
    assert ui.page.locator("#hosts-table .bar .fill").count() == 4
    ui.shot("hosts")

    ui.go("vms")
    for vm in (site.atlas_vm, site.xss_vm, site.cms_vm):  # the administrator sees every VO's VMs
        _row(ui, "vms-table", vm).wait_for()
    ui.page.fill("#vm-filter", "cms-secret")
    _wait(lambda: ui.page.locator("#vms-table tbody tr").count() == 1, what="the filter")
    ui.page.fill("#vm-filter", "")
    ui.page.click("#vms-table th[data-key=id]")  # sort by id ascending
    ids = [int(x) for x in ui.page.locator("#vms-table tbody td:first-child").all_inner_texts()]
    assert ids == sorted(ids) and len(ids) >= 3
    ui.shot("vms")

    ui.go("pools")
    card = ui.page.locator("#pool-cards .card[data-vo=atlas]")
    card.wait_for()
    # the controller saw the 3 pending jobs and booted workers (max 2): the chart has samples
    ui.page.wait_for_selector("#pool-chart polyline[data-series='pending jobs']", state="attached")
    ui.page.wait_for_function(
        "() => (document.querySelector(\"#pool-chart polyline[data-series^='workers']\")"
        "?.getAttribute('points') || '').split(' ').length >= 2", timeout=20_000)
    ui.page.wait_for_selector("#pool-events tbody tr")
    reasons = ui.page.locator("#pool-events td.reason").all_inner_texts()
    assert any(r.strip() for r in reasons), reasons
    ui.shot("pools")


def test_a_vm_name_that_looks_like_html_renders_as_text(ui: Page, site: Site) -> None:
    ui.login(site.atlas)
    ui.go("vms")
    cell = _row(ui, "vms-table", site.xss_vm).locator("td.vm-name")
    cell.wait_for()
    assert cell.inner_text() == XSS_NAME
    assert ui.page.locator("#vms-table img").count() == 0
    # its console: read through the REST API, shown as text
    _row(ui, "vms-table", site.xss_vm).locator("button.vm-log").click()
    ui.page.wait_for_selector("#console-log")
    assert ui.page.locator("#console-panel h2 .muted").inner_text() == XSS_NAME
    assert ui.page.locator("#console-panel img").count() == 0
    assert ui.page.evaluate("() => window.__xss") is None
    ui.shot("console")


def test_terminate_a_vm_from_the_page(ui: Page, site: Site) -> None:
    ui.login(site.atlas)
    ui.go("vms")
    row = _row(ui, "vms-table", site.atlas_vm)
    row.wait_for()
    row.locator("select.vm-action").select_option("terminate")
    row.locator("button.vm-run").click()  # arms: a destructive action asks for a second click
    assert row.locator("button.vm-run").inner_text() == "Confirm terminate"
    row.locator("button.vm-run").click()
    ui.page.check("#vm-done")
    _wait(lambda: _row(ui, "vms-table", site.atlas_vm).locator(".state").inner_text() == "DONE",
          what="the VM DONE on the page")
    with site.daemon.client() as c:
        assert c.get(f"/vms/{site.atlas_vm}").json()["state"] == "DONE"
    ui.shot("vm-terminated")


def test_a_vo_user_sees_only_their_vo(ui: Page, site: Site) -> None:
    ui.login(site.cms)
    assert "group cms" in ui.page.locator("#whoami").inner_text()
    ui.go("vms")
    _row(ui, "vms-table", site.cms_vm).wait_for()
    ui.page.check("#vm-done")
    time.sleep(0.5)
    ids = {int(x) for x in ui.page.locator("#vms-table tbody td:first-child").all_inner_texts()}
    assert ids == {site.cms_vm}
    assert "atlas" not in ui.page.locator("#vms-table").inner_text()
    ui.go("pools")
    ui.page.wait_for_selector("#pool-cards", state="attached")
    _wait(lambda: ui.page.locator("main .notice").is_visible(), what="the no-pool notice")
    assert ui.page.locator("#pool-cards .card").count() == 0  # atlas' pool is not cms'
    ui.shot("vo-user-vms")


def test_accounting_and_audit_say_when_the_daemon_lacks_them(ui: Page, site: Site) -> None:
    # the first /openapi.json builds the document (0.5-0.7 s on a quiet machine); httpx's 5 s
    # default timed out once in CI under load. This test is about the pages, not that latency.
    served = {p for p in httpx.get(site.base + "/openapi.json", timeout=30).json()["paths"]}
    ui.login(site.admin)
    for page, route in (("accounting", "/api/v1/accounting"), ("audit", "/api/v1/audit")):
        ui.go(page)
        if route in served:  # the operations work is merged: the page shows its numbers
            if page == "accounting":
                ui.page.wait_for_selector("#acct-chart svg")
                keys = ui.page.locator("#acct-table tbody td:first-child").all_inner_texts()
                assert {"atlas", "cms"} <= set(keys), keys
            else:
                ui.page.wait_for_selector("#audit-table tbody tr")
                assert "vms.create" in ui.page.locator("#audit-table").inner_text()
        else:
            assert "not available on this daemon" in ui.page.locator("#unavailable").inner_text()
        ui.shot(page)


def test_accounting_and_audit_render_what_the_api_serves(ui: Page, site: Site) -> None:
    """The documents of GET /api/v1/accounting and /audit (as the operations work serves them),
    fulfilled by the browser so that this test does not depend on that work being merged."""
    doc = httpx.get(site.base + "/openapi.json", timeout=30).json()
    doc["paths"].setdefault("/api/v1/accounting", {"get": {}})
    doc["paths"].setdefault("/api/v1/audit", {"get": {}})
    usage = {"from": 0, "to": 86400, "from_iso": "1970-01-01T00:00:00Z", "to_iso": "1970-01-02T00:00:00Z",
             "by": "vo", "prices": {"cpu_hour": 0.01, "gib_hour": 0.002},
             "rows": [{"key": "atlas", "id": 2, "vms": 3, "vm_hours": 30.0, "cpu_hours": 60.0,
                       "gib_hours": 15.0, "cost": 0.63},
                      {"key": XSS_NAME, "id": 3, "vms": 1, "vm_hours": 10.0, "cpu_hours": 10.0,
                       "gib_hours": 5.0, "cost": 0.11}],
             "total": {"vms": 4, "vm_hours": 40.0, "cpu_hours": 70.0, "gib_hours": 20.0, "cost": 0.74}}
    audit = [{"id": 1, "time": 1.0e9, "user": "admin", "user_id": 1, "group_id": 1, "frontend": "rest",
              "action": "vm.action", "object": "vm 7", "result": "ok", "message": XSS_NAME}]

    def fulfil(body: Any) -> Callable[[Any], None]:
        return lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    ui.page.route("**/openapi.json", fulfil(doc))
    ui.page.route(re.compile(r".*/api/v1/accounting(\?.*)?$"), fulfil(usage))
    ui.page.route(re.compile(r".*/api/v1/audit(\?.*)?$"), fulfil(audit))
    ui.login(site.admin)
    ui.go("accounting")
    ui.page.wait_for_selector("#acct-table tbody tr")
    keys = ui.page.locator("#acct-table tbody td:first-child").all_inner_texts()
    assert keys == ["atlas", XSS_NAME]  # sorted by core-hours, the name as text
    assert ui.page.locator("#acct-chart rect.barv").count() == 2
    assert ui.page.locator("#accounting img").count() == 0
    ui.go("audit")
    ui.page.wait_for_selector("#audit-table tbody tr")
    assert XSS_NAME in ui.page.locator("#audit-table").inner_text()
    assert ui.page.locator("#audit-table img").count() == 0
    assert ui.page.evaluate("() => window.__xss") is None


def test_a_refused_token_and_logging_out(ui: Page, site: Site) -> None:
    ui.page.goto(site.base + "/ui/")
    ui.page.fill("#token", "vc_not-a-token")
    ui.page.click("#login-form button[type=submit]")
    ui.page.wait_for_function("() => document.querySelector('#login-error').textContent.includes('refused')")
    # the browser itself logs the 401 of that one request; nothing else may
    assert all("401" in e for e in ui.errors), ui.errors
    ui.errors.clear()
    ui.login(site.admin)
    assert ui.page.evaluate("() => sessionStorage.getItem('vocloud.token')") == site.admin
    assert ui.page.evaluate("() => document.cookie") == ""
    ui.page.click("#logout")
    ui.page.wait_for_selector("#login:not([hidden])")
    assert ui.page.evaluate("() => sessionStorage.getItem('vocloud.token')") is None


def test_the_page_is_served_with_a_strict_policy(site: Site) -> None:
    r = httpx.get(site.base + "/ui/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    js = httpx.get(site.base + "/ui/js/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert httpx.get(site.base + "/ui/js/nope.js").status_code == 404
    assert httpx.get(site.base + "/ui/../admin.token").status_code == 404
    # the shipped files themselves (nothing inline, no HTML sink): tests/unit/test_web_app.py


def test_screenshots_for_the_docs(site: Site) -> None:
    """With VOCLOUD_UPDATE_DOC_IMAGES=1, copy the screenshots docs/operations-ui.md shows."""
    if not os.environ.get("VOCLOUD_UPDATE_DOC_IMAGES"):
        pytest.skip("set VOCLOUD_UPDATE_DOC_IMAGES=1 to refresh docs/img/")
    docs = Path(__file__).resolve().parents[2] / "docs" / "img"
    docs.mkdir(exist_ok=True)
    for name in ("hosts", "vms", "pools"):
        shutil.copy(site.artifacts / f"{name}.png", docs / f"ui-{name}.png")
