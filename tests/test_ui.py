"""The web ledger at /ui, in a real headless Chromium (Debian's `chromium`, driven by
Playwright) against a real gateway: login, the job page's pipeline tree and its live status,
markup in a payload shown as text, a refused token, every page rendered, and the token kept out
of URLs, cookies and the gateway's log.

A screenshot of each page is kept in the test's tmp dir; set DUCTILE_UI_SCREENSHOTS=DIR to also
write them to DIR (that is how docs/ui/*.png are made).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.gateway import BUNDLED_PLUGINS, READ_TOKEN, TOKEN, Gateway, free_port, write_config
from support.plugins import make_plugin

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Generous bound for the page to reach a state; a wait, never a timing assertion.
WAIT_MS = 20_000

# Holds its job until the test creates the gate file, so the page sees it unfinished first.
HOLD = ('cat >/dev/null\nwhile [ ! -e "{gate}" ]; do sleep 0.05; done\n'
        'printf \'{{"status":"ok","result":"released"}}\'')
# Answers with the payload it got, as its result text.
MIRROR = ("import json, sys\n"
          "request = json.load(sys.stdin)\n"
          "payload = (request.get('event') or {}).get('payload')\n"
          "print(json.dumps({'status': 'ok', 'result': json.dumps(payload)}))")
MARKUP = ('<script>alert(1)</script><script>window.__xss = 1</script>'
          '<img src=x onerror="window.__xss = 2">')


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gate") / "open"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, gate: Path) -> Iterator[Gateway]:
    base = tmp_path_factory.mktemp("ui")
    root = base / "plugins"
    make_plugin(root, "hold", HOLD.format(gate=gate))
    make_plugin(root, "mirror", MIRROR, shebang="#!/usr/bin/env python3")
    port = free_port()
    cfg = write_config(
        base / "cfg", port=port, plugin_roots=[str(BUNDLED_PLUGINS), str(root)],
        plugins={"echo": {"enabled": True, "config": {"message": "hi"},
                          "schedules": [{"id": "hourly", "every": "1h"}]},
                 "hold": {"enabled": True}, "mirror": {"enabled": True}},
        extra={"pipelines": [{"name": "held", "on": "held.start", "steps": [
            {"id": "wait", "uses": "hold"}, {"id": "after", "uses": "echo"}]}]},
    )
    gateway = Gateway(cfg, port=port).start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # --no-sandbox: the suite runs as root, where Chromium's sandbox refuses to start.
        chromium = pw.chromium.launch(executable_path=CHROMIUM,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-screenshots")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.requested = requested  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Any, shots: Path, name: str) -> None:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("DUCTILE_UI_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)


def login(page: Any, gw: Gateway, token: str = TOKEN) -> None:
    page.goto(gw.url + "/ui/login")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(gw.url + "/ui/jobs")


def streams_events(gw: Gateway, token: str = TOKEN) -> bool:
    """Whether this gateway serves GET /events to `token`."""
    with httpx.stream("GET", gw.url + "/events", headers=gw.headers(token),
                      timeout=10.0) as resp:
        return resp.status_code == 200 and resp.headers.get(
            "content-type", "").startswith("text/event-stream")


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.inner_text())


# -- login -----------------------------------------------------------------------------------


def test_a_refused_token_shows_a_clear_error_and_is_not_kept(
        gw: Gateway, page: Any, shots: Path) -> None:
    page.goto(gw.url + "/ui/jobs")
    page.wait_for_url(gw.url + "/ui/login")  # no token: every page sends you to the login
    page.fill("#token", "not-a-real-token")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    message = text(page, "#error")
    assert "401" in message and "invalid token" in message, message
    assert page.url == gw.url + "/ui/login"
    assert page.evaluate("sessionStorage.length") == 0
    screenshot(page, shots, "login")


# -- the job page: tree and live status ---------------------------------------------------------


def test_the_job_page_draws_the_tree_and_follows_the_status_live(
        gw: Gateway, page: Any, shots: Path, gate: Path) -> None:
    gate.unlink(missing_ok=True)
    login(page, gw)
    resp = gw.post("/pipeline/held", {"payload": {"order": 7}})
    assert resp.status_code == 202, resp.text
    root = resp.json()["job_id"]

    page.goto(f"{gw.url}/ui/job/{root}")
    page.wait_for_selector("#tree .node")
    # The page follows GET /events when the gateway has it, else polls every 2 s.
    expected = "stream" if streams_events(gw) else "poll"
    page.wait_for_selector(f"#live[data-mode={expected}]")
    assert text(page, "#job-status") in ("queued", "running")
    assert "wait" in text(page, "#tree")
    # A flag on the document: a reload would drop it, so it proves the update came live.
    page.evaluate("window.__sameDocument = true")

    gate.touch()
    page.wait_for_function(
        "() => document.querySelector('#job-status').textContent === 'succeeded' && "
        "document.querySelectorAll('#tree .node').length === 2 && "
        "[...document.querySelectorAll('#tree .status')]"
        "  .every(s => s.textContent === 'succeeded')")
    assert page.evaluate("window.__sameDocument") is True
    # The step routed from the root is drawn inside the root's box.
    assert page.locator("#tree .node .children .node").count() == 1
    assert "after" in text(page, "#tree .children")
    assert "released" in text(page, "#job-result")
    assert page.locator("#transitions tbody tr").count() >= 3  # queued, running, succeeded
    assert page.locator("#attempts tbody tr").count() == 1
    assert "cfg_" in text(page, "#job-summary")  # the config snapshot id
    screenshot(page, shots, "job")


def test_the_job_list_filters_and_updates_live(
        gw: Gateway, page: Any, shots: Path, gate: Path) -> None:
    gate.unlink(missing_ok=True)
    gw.post("/plugins/echo/run", {"payload": {}, "sync": True})
    login(page, gw)
    page.goto(gw.url + "/ui/jobs?plugin=hold")
    page.wait_for_selector("#jobs tbody tr")
    page.evaluate("window.__sameDocument = true")

    job = gw.post("/plugins/hold/run", {"payload": {}}).json()["job_id"]
    row = f"#jobs tbody tr[data-job-id='{job}'] .status"
    page.wait_for_selector(row)  # the new job appears without a reload
    assert text(page, row) in ("queued", "running")
    plugins = {c.inner_text() for c in page.locator("#jobs tbody td:nth-child(2)").all()}
    assert plugins == {"hold"}  # the filter holds: no echo job listed

    gate.touch()
    page.wait_for_function(
        f"() => document.querySelector(\"{row}\").textContent === 'succeeded'")
    assert page.evaluate("window.__sameDocument") is True
    page.select_option("#f-status", "succeeded")
    page.fill("#f-plugin", "")
    page.click("#filters button[type=submit]")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#jobs tbody td:nth-child(2)')]"
        "  .some(td => td.textContent === 'echo')")
    assert page.url.endswith("/ui/jobs?status=succeeded")
    screenshot(page, shots, "jobs")


# -- escaping --------------------------------------------------------------------------------


def test_markup_in_a_payload_is_shown_as_text_and_never_runs(
        gw: Gateway, page: Any, shots: Path) -> None:
    job = gw.post("/plugins/mirror/run",
                  {"payload": {"note": MARKUP}, "sync": True}).json()
    assert job["status"] == "succeeded", job
    login(page, gw)
    page.goto(f"{gw.url}/ui/job/{job['job_id']}")
    page.wait_for_function(
        "() => document.querySelector('#job-result').textContent.includes('<script>')")
    assert "<script>alert(1)</script>" in text(page, "#job-result")
    assert page.evaluate("window.__xss") is None
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert page.locator("main script, main img").count() == 0
    screenshot(page, shots, "job-markup")


# -- the other pages, and where the token goes -------------------------------------------------


def test_every_page_renders_and_the_token_stays_out_of_urls_cookies_and_logs(
        gw: Gateway, page: Any, shots: Path) -> None:
    login(page, gw)

    page.goto(gw.url + "/ui/schedules")
    page.wait_for_selector("#schedules tbody tr td")
    row = text(page, "#schedules tbody tr")
    assert "echo" in row and "hourly" in row and "T" in row  # next run, RFC 3339
    screenshot(page, shots, "schedules")

    page.goto(gw.url + "/ui/breakers")
    page.wait_for_function("() => document.querySelector('#breakers-open').textContent !== ''")
    assert text(page, "#breakers-open") == "0 open"
    screenshot(page, shots, "breakers")

    page.goto(gw.url + "/ui/boot")
    page.wait_for_function(
        "() => document.querySelector('#health').textContent.includes('gateway')")
    boot = text(page, "ol.boot")
    for gate_name in ("config_valid", "vault_opened", "database_opened", "api_has_tokens"):
        assert gate_name in boot
    screenshot(page, shots, "boot")

    requested = page.requested  # type: ignore[attr-defined]
    assert any("/scheduler/jobs" in url for url in requested)
    assert not [url for url in requested if TOKEN in url]
    assert page.context.cookies() == []
    assert TOKEN not in gw.stdout() and TOKEN not in gw.stderr()


def test_a_read_only_token_reads_every_page_and_polls_without_the_stream(
        gw: Gateway, page: Any) -> None:
    # plugin:ro and jobs:ro are all the pages need: the ledger is read-only. Without events:ro
    # the stream refuses this token, and the list follows the gateway by polling instead.
    login(page, gw, READ_TOKEN)
    page.wait_for_selector("#jobs tbody tr td")
    mode = "stream" if streams_events(gw, READ_TOKEN) else "poll"
    page.wait_for_selector(f"#live[data-mode={mode}]")
    page.evaluate("window.__sameDocument = true")
    job = gw.post("/plugins/echo/run", {"payload": {}, "sync": True}).json()["job_id"]
    page.wait_for_selector(f"#jobs tbody tr[data-job-id='{job}']")
    assert page.evaluate("window.__sameDocument") is True
    for path, ready in (("/ui/schedules", "#schedules tbody tr td"),
                        ("/ui/breakers", "#breakers tbody tr td"),
                        ("/ui/boot", "#health dd")):
        page.goto(gw.url + path)
        page.wait_for_selector(ready)
        assert page.locator("#error").is_hidden(), text(page, "#error")


# -- the JSON views the pages use --------------------------------------------------------------


def test_the_ui_json_views_take_the_api_tokens_and_answer_clearly(gw: Gateway) -> None:
    assert httpx.get(gw.url + "/ui/api/breakers").status_code == 401
    missing = gw.get("/ui/api/job/no-such-job/ledger")
    assert missing.status_code == 404 and missing.json() == {"error": "job not found"}
    job = gw.post("/plugins/echo/run", {"payload": {}, "sync": True}).json()["job_id"]
    ledger = gw.get(f"/ui/api/job/{job}/ledger", token=READ_TOKEN).json()
    assert [t["to_status"] for t in ledger["transitions"]] == ["queued", "running", "succeeded"]
    assert ledger["enqueued_config_snapshot_id"].startswith("cfg_")
    unknown = httpx.get(gw.url + "/ui/static/nope.js")
    assert unknown.status_code == 404 and "no route" in unknown.json()["error"]
    shell = httpx.get(gw.url + "/ui/job/%3Cb%3E")
    assert "&lt;b&gt;" in shell.text and "<b>" not in shell.text
    assert "script-src 'self'" in shell.headers["Content-Security-Policy"]


def test_the_templates_and_static_files_ship_as_package_data() -> None:
    # An installed (non-editable) gateway must have them: pyproject's package-data lists them.
    import ductile

    repo = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((repo / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["ductile"]
    package = Path(ductile.__file__).parent
    shipped = [f.relative_to(package).as_posix() for f in (package / "planes" / "ui").rglob("*")
               if f.is_file() and f.suffix not in (".py", ".pyc")]
    assert any(name.endswith(".html") for name in shipped)
    assert not [name for name in shipped
                if not any(fnmatch.fnmatch(name, p) for p in patterns)]
