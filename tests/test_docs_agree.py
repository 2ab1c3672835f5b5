"""Places where an operator learning from the docs found the program saying something else.

Each test pins one agreement against the real program: the CLI as a subprocess, the real gateway
on loopback, real SQLite, real plugin processes. Where a page makes a checkable claim (a list
of gates, a config key's effect, an example plugin), the test reads the page itself, so the
page cannot drift back either.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ductile.boot.gates import GATES
from ductile.machines import load_machine
from ductile.planes.api.bodies import RUN_FIELDS
from support.gateway import (
    READ_TOKEN,
    Gateway,
    free_port,
    make_vault,
    run_cli,
    write_config,
)
from support.plugins import bundled_root, make_plugin

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The text of a markdown section, from its heading line to the next heading of any level
    outside a fenced block (a `# comment` in a shell example is not a heading)."""
    lines = text[text.index(heading):].splitlines(keepends=True)
    taken, fenced = [lines[0]], False
    for line in lines[1:]:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            break
        taken.append(line)
    return "".join(taken)


def _fence(text: str, lang: str) -> str:
    """The body of the first ```lang block in `text`."""
    found = re.search(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)
    assert found, f"no ```{lang} block"
    return found.group(1)


def _check(cfg: Path, home: Path) -> dict[str, Any]:
    result = run_cli("config", "check", "--config", str(cfg), "--json", env={"HOME": str(home)})
    report = json.loads(result.stdout)
    assert result.returncode == (0 if report["valid"] else 1), result.stderr
    return report


def _wait(check: Any, what: str, within: float = 20.0) -> Any:
    """Poll `check()` until it returns something truthy (a liveness bound, not a timing claim)."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


# -- 1. config check covers exactly the side-effect-free gates --------------------------------


@pytest.mark.parametrize(("pipeline", "names"), [
    ({"name": "notify", "on": "x.happened", "steps": [{"id": "mail", "uses": "mailr"}]},
     "unknown plugin 'mailr'"),
    ({"name": "notify", "on-hook": "job.failed", "form_plugin": "echo",
      "steps": [{"uses": "echo"}]}, "unknown key 'form_plugin'"),
])
def test_config_check_fails_what_boot_refuses_at_pipelines_compiled(
        tmp_path: Path, pipeline: dict[str, Any], names: str) -> None:
    cfg = write_config(tmp_path / "cfg", extra={"pipelines": [pipeline]})
    report = _check(cfg, tmp_path)
    refusals = [e for e in report["errors"] if e["category"] == "pipelines_compiled"]
    assert not report["valid"] and refusals and names in refusals[0]["message"], report
    human = run_cli("config", "check", "--config", str(cfg), env={"HOME": str(tmp_path)})
    assert human.returncode == 1 and "ERROR [pipelines_compiled]" in human.stdout
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    boot = subprocess.run([sys.executable, "-m", "ductile", "system", "start", "--config",
                           str(cfg)], capture_output=True, text=True,
                          env={**env, "HOME": str(tmp_path)}, timeout=60)
    assert boot.returncode == 78 and "(gate pipelines_compiled)" in boot.stderr, boot.stderr


def test_operator_page_lists_what_config_check_covers_and_what_it_cannot() -> None:
    page = _page("operator.md")
    covered = page[page.index("- **Covered:**"):page.index("- **Not covered**")]
    not_covered = page[page.index("- **Not covered**"):page.index("Where boot stops at the")]
    side_effect_free = set(load_machine("boot").side_effect_free)
    named = set(re.findall(r"`([a-z_]+)`", covered)) & set(GATES)
    assert named == side_effect_free
    assert set(re.findall(r"`([a-z_]+)`", not_covered)) & set(GATES) == \
        set(GATES) - side_effect_free


# -- 2. a vault that cannot be opened never cascades into "not found" -------------------------


def test_an_unreadable_vault_key_leaves_the_secret_gates_unchecked(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", port=free_port(), extra={"webhooks": {
        "listen": f"127.0.0.1:{free_port()}",
        "endpoints": [{"path": "/hooks/x", "plugin": "echo", "secret_ref": "api-token"}]}})
    assert _check(cfg, tmp_path)["valid"]
    os.chmod(cfg / "vault.key", 0o644)
    report = _check(cfg, tmp_path)
    assert [e["category"] for e in report["errors"]] == ["vault_opened"], report["errors"]
    assert "chmod 600" in report["errors"][0]["message"]
    unchecked = {w["category"] for w in report["warnings"]
                 if w["message"].startswith("not checked: the vault cannot be opened")}
    assert unchecked == {"secret_refs_resolved", "api_tokens_resolved"}
    assert "not found" not in json.dumps(report)


# -- 3. the config reference says what notify_on_complete, max_outstanding_polls and an
#       included `api.enabled: yes` do ---------------------------------------------------------


def test_the_config_reference_describes_keys_that_have_an_effect() -> None:
    page = _page("operator.md")
    rows = {row.split("|")[1].strip(): row for row in page.splitlines()
            if row.startswith("| `max_outstanding_polls`") or row.startswith("| `notify_on")}
    assert "if_running: queue" in rows["`max_outstanding_polls`"]
    assert "job.completed" in rows["`notify_on_complete`"]
    assert "no effect" not in "".join(rows.values())
    loading = _section(page, "### Loading rules")
    assert "`api.enabled: yes` in an included file turns\n  the API on" in loading
    assert "ignored by the merge" not in loading


# -- the documented gateway: one process for the checks below ----------------------------------


def _doc_plugin(root: Path) -> None:
    """docs/plugins.md's example plugin, installed as that page says: its manifest and its sh
    script, taken from the page, in a directory of a plugin root."""
    page = _page("plugins.md")
    manifest = yaml.safe_load(_fence(_section(page, "## The manifest"), "yaml"))
    script = _fence(_section(page, "## A complete plugin in sh"), "sh")
    plugin = root / manifest["name"]
    plugin.mkdir(parents=True)
    os.chmod(plugin, 0o755)
    (plugin / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    entry = plugin / manifest["entrypoint"]
    entry.write_text(script)
    os.chmod(entry, 0o755)


@pytest.fixture(scope="module")
def documented(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    base = tmp_path_factory.mktemp("documented")
    root = base / "plugins-extra"
    _doc_plugin(root)
    make_plugin(root, "capture", f'cat > "{base}/request-$$.json"\n'
                                 "printf '%s' '{\"status\":\"ok\",\"result\":\"captured\"}'")
    port = free_port()
    yearly = {"cron": "0 0 1 1 *"}  # never fires on its own during a test
    cfg = write_config(base / "cfg", port=port, plugin_roots=[str(bundled_root()), str(root)],
                       plugins={
        "echo": {"enabled": True, "notify_on_complete": True, "schedules": [
            {"id": "yearly", **yearly, "payload": {"from": "schedule"}}]},
        "hook_echo": {"uses": "echo", "enabled": True},
        "greet": {"enabled": True},
        "capture": {"enabled": True},
        "slow": {"uses": "echo", "enabled": True, "config": {"mode": "hang"},
                 "timeouts": {"poll": "5m"}, "schedules": [
                     {"id": "skipper", **yearly, "if_running": "skip"},
                     {"id": "canceller", **yearly, "if_running": "cancel"}]}},
        extra={"pipelines": [{"name": "after-echo", "on-hook": "job.completed",
                              "from_plugin": "echo", "steps": [{"uses": "hook_echo"}]}]})
    # The API is switched on only by an included file, with the boolean word `yes`.
    doc = yaml.safe_load((cfg / "config.yaml").read_text())
    doc["api"]["enabled"] = False
    doc["include"] = ["api-on.yaml"]
    (cfg / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (cfg / "api-on.yaml").write_text("api:\n  enabled: yes\n")
    gw = Gateway(cfg, port=port, env={"HOME": str(base)})
    gw.start()
    yield gw
    gw.stop()


def test_an_included_api_enabled_yes_turns_the_api_on(documented: Gateway) -> None:
    got = run_cli("config", "get", "api.enabled", "--config", str(documented.config_dir))
    assert got.stdout.strip() == "true", got.stderr
    assert documented.get("/healthz").json()["posture"] == "gateway"


def test_notify_on_complete_fires_the_hook_pipelines(documented: Gateway) -> None:
    ran = documented.post("/plugins/echo/run", {"command": "poll", "sync": True})
    assert ran.json()["status"] == "succeeded", ran.text
    hooked = _wait(lambda: documented.get("/jobs", params={"plugin": "hook_echo"}).json()["jobs"],
                   "a hook_echo job after an echo job ended")
    assert hooked[0]["command"] == "handle"


# -- 4. both run routes take one body and answer it alike ---------------------------------------


def test_both_run_routes_refuse_an_unknown_field_the_same_way(documented: Gateway) -> None:
    body = {"payload": {"a": 1}, "syncc": True}
    direct = documented.post("/plugin/echo/poll", body)
    run = documented.post("/plugins/echo/run", {**body, "command": "poll"})
    assert (direct.status_code, run.status_code) == (400, 400)
    assert direct.json() == run.json()
    assert direct.json()["error"].startswith("unknown field(s) in body: syncc; allowed: "
                                             + ", ".join(RUN_FIELDS))


def test_the_go_route_honours_sync_and_dedupe_key(documented: Gateway) -> None:
    waited = documented.post("/plugin/echo/poll", {"payload": {"n": 1}, "sync": True})
    assert waited.status_code == 200, waited.text
    assert waited.json()["status"] == "succeeded"
    assert waited.json()["result"]["events"][0]["payload"]["payload"] == {"n": 1}
    first = documented.post("/plugin/echo/poll", {"dedupe_key": "k-1", "sync": True})
    again = documented.post("/plugin/echo/poll", {"dedupe_key": "k-1"})
    assert again.status_code == 200 and again.json()["deduplicated"] is True
    assert again.json()["job_id"] == first.json()["job_id"]
    other = documented.post("/plugin/echo/poll", {"command": "handle"})
    assert other.status_code == 400 and "disagrees with the route's command" in other.text
    same = documented.post("/plugin/echo/poll", {"command": "poll"})
    assert same.status_code == 202, same.text


# -- 5. docs/plugins.md: the example plugin, the request's payload, installing ----------------


def test_the_example_plugin_runs_as_the_page_installs_it(documented: Gateway) -> None:
    page = _page("plugins.md")
    install = _section(page, "## Installing it")
    assert "plugin_roots:" in install and "enabled: true" in install
    for command, result in (("health", "healthy"), ("handle", "hello from sh")):
        resp = documented.post("/plugins/greet/run", {"command": command, "sync": True,
                                                      "payload": {"name": "Ada"}})
        assert resp.status_code == 200, resp.text
        assert resp.json()["result"]["result"] == result


def test_handle_receives_the_whole_event_as_its_payload(documented: Gateway) -> None:
    base = documented.config_dir.parent
    for command in ("handle", "poll"):
        resp = documented.post("/plugins/capture/run",
                               {"command": command, "sync": True, "payload": {"name": "Ada"}})
        assert resp.status_code == 200, resp.text
    requests = {r["command"]: r for r in (json.loads(p.read_text())
                                          for p in base.glob("request-*.json"))}
    handle, poll = requests["handle"], requests["poll"]
    assert handle["payload"] == handle["event"] == {"type": "api.trigger",
                                                     "payload": {"name": "Ada"}}
    assert poll["payload"] == {"name": "Ada"} and "event" not in poll
    row = next(r for r in _page("plugins.md").splitlines() if r.startswith("| `payload` |"))
    assert "the whole event" in row and "payload.payload" in row


# -- 11. /healthz: the details need a token, and `system status` sends one ----------------------


def test_healthz_without_a_token_says_status_posture_and_version_only(
        documented: Gateway) -> None:
    assert set(httpx.get(documented.url + "/healthz").json()) == {"status", "posture",
                                                                  "version"}
    detailed = documented.get("/healthz", token=READ_TOKEN).json()
    assert detailed["config_path"] == str(documented.config_dir / "config.yaml")
    assert documented.get("/healthz", token="nope").status_code == 401
    status = run_cli("system", "status", "--config", str(documented.config_dir), "--json",
                     env={"HOME": str(documented.config_dir.parent)})
    checks = {c["name"]: c for c in json.loads(status.stdout)["checks"]}
    assert checks["healthz"]["ok"] and "queue depth" in checks["healthz"]["detail"], checks
    assert "privsep" in checks


# -- 12. firing a schedule by hand -------------------------------------------------------------


def _schedule(gw: Gateway, plugin: str, schedule_id: str) -> dict[str, Any]:
    jobs = gw.get("/scheduler/jobs").json()["jobs"]
    return next(j for j in jobs if (j["plugin"], j["schedule_id"]) == (plugin, schedule_id))


def test_scheduler_run_fires_one_schedule_now_as_a_manual_fire(documented: Gateway) -> None:
    cfg = str(documented.config_dir)
    before = _schedule(documented, "echo", "yearly")
    run = run_cli("system", "scheduler", "run", "echo/yearly", "--config", cfg, "--json",
                  env={"HOME": str(documented.config_dir.parent)})
    assert run.returncode == 0, run.stderr
    fired = json.loads(run.stdout)
    assert (fired["command"], fired["submitted_by"]) == ("poll", "scheduler:manual")
    job = _wait(lambda: (lambda j: j if j["status"] == "succeeded" else None)(
        documented.get(f"/job/{fired['job_id']}").json()), "the manual job succeeded")
    assert job["submitted_by"] == "scheduler:manual"
    assert job["result"]["events"][0]["payload"]["payload"] == {"from": "schedule"}
    after = _schedule(documented, "echo", "yearly")
    assert after["next_run_at"] == before["next_run_at"]
    assert after.get("last_fired_at") == before.get("last_fired_at")
    records = [r for r in documented.log_records() if r.get("trigger") == "manual"]
    assert [r["job_id"] for r in records] == [fired["job_id"]]


def test_scheduler_run_applies_if_running(documented: Gateway) -> None:
    first = documented.post("/scheduler/run", {"target": "slow/skipper"})
    assert first.status_code == 202, first.text
    held = documented.post("/scheduler/run", {"target": "slow/skipper"})
    assert held.status_code == 409, held.text
    assert held.json()["skipped"] == "already_running"
    assert held.json()["outstanding"] == [first.json()["job_id"]]
    replaced = documented.post("/scheduler/run", {"target": "slow/canceller"})
    assert replaced.status_code == 202, replaced.text
    assert replaced.json()["cancelled"] == [first.json()["job_id"]]
    ended = _wait(lambda: (lambda j: j if j["status"] not in ("queued", "running") else None)(
        documented.get(f"/job/{first.json()['job_id']}").json()), "the cancelled job ended")
    assert "if_running=cancel" in (ended.get("last_error") or ""), ended


def test_scheduler_run_refuses_what_it_cannot_fire(documented: Gateway) -> None:
    unknown = documented.post("/scheduler/run", {"target": "echo/nope"})
    assert unknown.status_code == 404
    assert "known: echo/yearly, slow/skipper, slow/canceller" in unknown.json()["error"]
    for body in ({"target": "echo"}, {}, {"target": 3}, {"target": "echo/yearly", "x": 1}):
        bad = documented.post("/scheduler/run", body)
        assert bad.status_code == 400 and "known schedules: echo/yearly" in bad.text, bad.text
    assert documented.post("/scheduler/run", {"target": "echo/yearly"},
                           token=READ_TOKEN).status_code == 403


# -- 6. vault verbs find the gateway and the admin token from --config --------------------------


def test_vault_set_finds_a_serving_gateway_from_the_config(documented: Gateway) -> None:
    cfg = str(documented.config_dir)
    env = {"HOME": str(documented.config_dir.parent)}
    assert not (documented.config_dir / "admin-token").exists()  # the vault holds it
    done = run_cli("vault", "set", "--config", cfg, "--name", "doc-secret", input="s3cret",
                   env=env)
    assert done.returncode == 0 and "via the daemon" in done.stderr, done.stderr
    got = run_cli("vault", "get", "--config", cfg, "--name", "doc-secret", env=env)
    assert got.stdout.strip() == "s3cret"


def test_the_operator_snippet_activates_a_management_only_gateway(tmp_path: Path) -> None:
    """docs/operator.md, Postures: mint the first API token over the management socket with
    nothing but --config, reference it, reload, and the API answers to it. The CLI here cannot
    read the vault key (the gateway gets it by environment), so the admin token comes from the
    admin-token file beside the config."""
    cfg, keys = tmp_path / "cfg", tmp_path / "keys"
    admin = make_vault(keys, {})
    cfg.mkdir()
    os.rename(keys / "vault.nacl", cfg / "vault.nacl")
    (cfg / "admin-token").write_text(admin + "\n")
    port = free_port()
    write_config(cfg, extra={"api": {"enabled": True, "listen": f"127.0.0.1:{port}"}})
    snippet = [line for line in _fence(_section(_page("operator.md"), "## Postures"),
                                       "sh").splitlines()
               if line.strip() and not line.startswith("#")]
    assert not [line for line in snippet if "--api-url" in line or "--token" in line]
    key_env = {"DUCTILE_VAULT_KEY_FILE": str(keys / "vault.key")}
    gw = Gateway(cfg, port=port, env={"HOME": str(tmp_path), **key_env})
    gw.start(wait=False)
    try:
        _wait((cfg / "data" / "vault-admin.sock").exists, "the management socket")
        env = {"HOME": str(tmp_path)}

        def run(line: str) -> None:
            argv = shlex.split(line.split("|", 1)[-1].split("#", 1)[0]
                               .replace("/etc/ductile", str(cfg)))
            assert argv[0] == "ductile", line
            done = run_cli(*argv[1:], env=env, input="")
            assert done.returncode == 0, (line, done.stderr)

        mint, reload = snippet[:-1], snippet[-1]
        for line in mint:
            run(line)
        doc = yaml.safe_load((cfg / "config.yaml").read_text())
        doc["api"]["auth"] = {"tokens": [{"secret_ref": "api-token", "scopes": ["*"]}]}
        (cfg / "config.yaml").write_text(yaml.safe_dump(doc))
        run(reload)
        minted = run_cli("vault", "get", "--config", str(cfg), "--name", "api-token",
                         env={**env, **key_env}).stdout.strip()
        assert minted
        _wait(lambda: _answers(gw, minted), "the API to answer the minted token")
    finally:
        gw.stop()


def _answers(gw: Gateway, token: str) -> bool:
    try:
        return httpx.get(gw.url + "/jobs", headers={"Authorization": f"Bearer {token}"},
                         timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- 7. make run prints the real address; the tutorial makes its own scratch directories -------


def test_make_run_prints_the_listen_address_of_the_demo_config(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    write_config(demo, port=4567)
    dry = subprocess.run(["make", "-n", "run", f"DEMO={demo}"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "config get api.listen" in line)
    end = next(i for i, line in enumerate(lines) if "system start" in line)
    shown = subprocess.run(["sh", "-c", "\n".join(lines[start:end])], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "API: http://127.0.0.1:4567 " in shown.stdout
    assert "http://127.0.0.1:4567/plugins/echo/run" in shown.stdout
    assert "8080" not in shown.stdout


def test_the_tutorial_creates_every_scratch_directory_it_uses() -> None:
    page = _page("tutorial-boot.md")
    commands = [line[2:] for line in page.splitlines() if line.startswith("$ ")]
    created: set[str] = set()
    for command in commands:
        for made in re.findall(r"config init --dir (/tmp/[\w.-]+)", command):
            created.add(made)
        for used in re.findall(r"--config (/tmp/[\w.-]+)", command):
            assert used in created, f"{used} is used before any command creates it: {command}"
    assert {"/tmp/tutorial-demo", "/tmp/tutorial-bad"} <= created


def test_the_tutorial_names_every_field_the_run_route_accepts() -> None:
    page = _page("tutorial-boot.md")
    sentence = page[page.index("a field other than"):][:200]
    assert all(f"`{field}`" in sentence for field in RUN_FIELDS), sentence


# -- 8. config init's own vault writes are in the audit trail --------------------------------


def test_config_init_audits_the_vault_writes_it_makes(tmp_path: Path) -> None:
    cfg = tmp_path / "fresh"
    init = run_cli("config", "init", "--dir", str(cfg))
    assert init.returncode == 0, init.stderr
    assert sorted(os.listdir(cfg / "data")) == ["state.db"]  # closed cleanly: no -wal left
    audit = run_cli("system", "vault-audit", "--config", str(cfg), "--json")
    assert audit.returncode == 0, audit.stderr
    rows = json.loads(audit.stdout)["events"]
    assert [(r["op"], r["target"], r["outcome"]) for r in reversed(rows)] == [
        ("init", "core-admin-token", "ok"), ("set", "api-token", "ok"),
        ("roll", "api-token", "ok")]
    token = (cfg / "api-token").read_text().strip()
    assert token not in audit.stdout
