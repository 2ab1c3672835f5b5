"""The examples of README.md and docs/*.md, run against the real program.

Every console block is run (in a scenario, against real gateways) or marked skipped with a
reason; every yaml block is checked as a config file or a manifest, and every json block must
parse (see support.docrun and support.docconfig for the markers). A page that stops matching the program fails here, naming
the page and the line. What must differ in a test (ports, scratch paths) and what the pages
describe in prose (edit this file, start that) is declared below, in `SCENARIOS`.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.docconfig import check_config_block, check_manifest_block, check_plugin_block
from support.docrun import (
    DocBlock,
    DocFormatError,
    ExampleFailed,
    Scenario,
    ScenarioRun,
    order_blocks,
    read_blocks,
)
from support.gateway import ROOT_UNCONFINED, free_port, make_vault, run_cli
from support.plugins import bundled_root, make_plugin

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

# --------------------------------------------------------------------------- declarations

#: Templates for config fragments (`<!-- doc: config wrap=NAME -->`): a step's keys or a
#: relay step are only meaningful inside a pipeline.
WRAPPERS = {
    "step-keys": """\
pipelines:
  - name: doc-example
    on: doc.example
    steps:
      - uses: echo
        <<fragment>>
""",
    "relay-step": """\
instances:
  - {name: gw-b, base_url: "http://127.0.0.1:8082", secret_ref: relay-to-b}
pipelines:
  - name: doc-example
    on: doc.example
    steps:
      <<fragment>>
""",
}

_RELAY_EDITS = (
    "sed -i 's/^  name: ductile$/  name: gw-a/' a/config.yaml",
    "sed -i 's/^  name: ductile$/  name: gw-b/' b/config.yaml",
    "sed -i 's/^  - api.yaml$/  - api.yaml\\n  - relay.yaml/' a/config.yaml b/config.yaml",
    "sed -i 's/127.0.0.1:8080/127.0.0.1:{port0}/' a/api.yaml",
    "sed -i 's/127.0.0.1:8080/127.0.0.1:{port1}/' b/api.yaml",
)

_STUB = 'cat >/dev/null; printf \'{"status":"ok","result":"stub"}\\n\''


def _yaml(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _ductile(*args: str) -> None:
    done = run_cli(*args)
    if done.returncode != 0:
        raise ExampleFailed(f"setup: ductile {' '.join(args)} exited {done.returncode}:\n"
                            f"{done.stdout}{done.stderr}")


def _operator_setup(run: ScenarioRun) -> None:
    """docs/operator.md's /etc/ductile: echo and a github_handler behind a signed webhook, a
    conf.d/tools.yaml that forgets sys_exec's command, two keys the loader ignores, a seal
    that attested echo (changed since) and old_tool (no longer configured), and a draft
    plugins file with a bare number where a duration belongs."""
    etc, var, opt = (run.scratch / "etc/ductile", run.scratch / "var/lib/ductile",
                     run.scratch / "opt/plugins")
    for name in ("echo", "file_watch", "sys_exec"):
        shutil.copytree(bundled_root() / name, opt / name)
    for name in ("github_handler", "old_tool"):
        make_plugin(opt, name, _STUB)
    var.mkdir(parents=True)
    etc.mkdir(parents=True, mode=0o700)
    make_vault(etc, {"api-token": "operator-doc-token", "github_webhook": "operator-doc-hmac"})
    unconfined = "  unconfined: true\n" if ROOT_UNCONFINED else ""
    _yaml(etc / "config.yaml", f"""service:
  name: ductile
  max_workers: 3
{unconfined}state:
  path: {var}/state.db
plugin_roots: [{opt}]
routes:
  - {{from: a, to: b}}
foo: bar
webhooks:
  listen: 127.0.0.1:{run.ports[1]}
include: [plugins.yaml, api.yaml, webhooks.yaml, conf.d]
""")
    _yaml(etc / "api.yaml", f"""api:
  enabled: true
  listen: 127.0.0.1:{run.ports[0]}
  auth:
    tokens:
      - {{secret_ref: api-token, scopes: ["*"]}}
""")
    _yaml(etc / "webhooks.yaml", """webhooks:
  endpoints:
    - {path: /webhook/github, plugin: github_handler, secret_ref: github_webhook}
""")
    _yaml(etc / "conf.d/tools.yaml", "plugins:\n  sys_exec:\n    enabled: true\n")
    plugins = """plugins:
  echo:
    enabled: true
    retry:
      max_attempts: 3
  github_handler:
    enabled: true
"""
    _yaml(etc / "plugins.yaml", plugins + "  old_tool:\n    enabled: true\n")
    _ductile("config", "lock", "--config", str(etc))
    for name in ("echo", "old_tool"):
        _ductile("plugin", "lock", name, "--config", str(etc))
    _yaml(etc / "plugins.yaml", plugins)
    shutil.rmtree(opt / "old_tool")
    with (opt / "echo" / "run").open("a") as entrypoint:
        entrypoint.write("# a local change\n")
    _yaml(etc / "plugins.yaml.new", "plugins:\n  echo:\n    retry:\n      backoff_base: 30\n")
    (run.scratch / "srv/backup").mkdir(parents=True)


def _management_only(run: ScenarioRun) -> None:
    """docs' /etc/ductile whose API lists no token while the vault exists: the
    management-only posture, serving its socket."""
    etc = run.scratch / "etc/ductile"
    _ductile("config", "init", "--dir", str(etc))
    (etc / "api.yaml").write_text(f"api:\n  enabled: true\n  listen: 127.0.0.1:{run.ports[0]}\n")
    run.exec_hidden(f"ductile system start --config {etc}")


def _add_api_token(run: ScenarioRun) -> None:
    """What the page's comment says to do by hand: reference the minted token."""
    with (run.scratch / "etc/ductile/api.yaml").open("a") as api:
        api.write('  auth:\n    tokens:\n      - {secret_ref: api-token, scopes: ["*"]}\n')


def _serves_gateway(run: ScenarioRun) -> None:
    """The reload the page ends with moved the gateway from management-only to gateway, so
    the public listener answers."""
    log = run.scratch / "gateway-1.log"
    deadline = time.monotonic() + 15.0
    while '"previous_posture":"management-only"' not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise ExampleFailed("after `ductile system reload` the gateway did not leave the "
                                f"management-only posture:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    run.exec_hidden(f"curl -sf http://127.0.0.1:{run.ports[0]}/healthz >/dev/null")


def _scheduler_setup(run: ScenarioRun) -> None:
    """A gateway at ~/.config/ductile with a `backup` plugin and its `nightly` schedule."""
    home = run.scratch / "home/.config/ductile"
    _ductile("config", "init", "--dir", str(home))
    make_plugin(run.scratch / "plugins", "backup", _STUB)
    (home / "api.yaml").write_text((home / "api.yaml").read_text().replace(
        "127.0.0.1:8080", f"127.0.0.1:{run.ports[0]}"))
    with (home / "plugins.yaml").open("a") as plugins:
        plugins.write("  backup:\n    enabled: true\n    schedules:\n"
                      "      - {id: nightly, cron: \"30 1 * * *\"}\n")
    root = yaml.safe_load((home / "config.yaml").read_text())
    root["plugin_roots"].append(str(run.scratch / "plugins"))
    (home / "config.yaml").write_text(yaml.safe_dump(root, sort_keys=False))
    run.exec_hidden(f"ductile system start --config {home}")


def _pipelines_setup(run: ScenarioRun) -> None:
    """A config directory with the `shop` and `mailer` plugins the first example names."""
    cfg = run.scratch / "cfg"
    _ductile("config", "init", "--dir", str(cfg))
    for name in ("shop", "mailer"):
        make_plugin(run.scratch / "plugins", name, _STUB)
    (cfg / "api.yaml").write_text((cfg / "api.yaml").read_text().replace(
        "127.0.0.1:8080", f"127.0.0.1:{run.ports[0]}"))
    run.exec_hidden(f"export TOKEN=$(cat {cfg}/api-token)")


def _pipelines_start(run: ScenarioRun) -> None:
    """The pipelines file the page showed, included and served."""
    cfg = run.scratch / "cfg"
    root = yaml.safe_load((cfg / "config.yaml").read_text())
    root["plugin_roots"].append(str(run.scratch / "plugins"))
    root["include"].append("pipelines.yaml")
    root["plugins"] = {"shop": {"enabled": True}, "mailer": {"enabled": True}}
    (cfg / "config.yaml").write_text(yaml.safe_dump(root, sort_keys=False))
    run.exec_hidden(f"ductile system start --config {cfg}")


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    # README.md: the quick start, against `make run`'s demo directory.
    Scenario(
        "readme",
        cwd="{repo}",
        substitutions={".ductile-demo": "{scratch}/.ductile-demo",
                       "127.0.0.1:8080": "127.0.0.1:{port0}", ".venv/bin/": "{bin}/",
                       "<job_id>": "{last_uuid}"},
        setup=("ductile config init --dir {scratch}/.ductile-demo >/dev/null 2>&1",
               "sed -i 's/127.0.0.1:8080/127.0.0.1:{port0}/' {scratch}/.ductile-demo/api.yaml",
               "ductile system start --config {scratch}/.ductile-demo"),
    ),
    # docs/tutorial-boot.md: one gateway from config init to SIGTERM.
    Scenario(
        "tutorial",
        cwd="{repo}",
        substitutions={"/tmp": "{scratch}", "18089": "{port0}", "18090": "{port1}"},
    ),
    # docs/relay.md: two gateways, a/ sends to b/.
    Scenario(
        "relay",
        substitutions={"127.0.0.1:8081": "127.0.0.1:{port0}",
                       "127.0.0.1:8082": "127.0.0.1:{port1}"},
        setup=("export SEED=$(head -c 32 /dev/urandom | base64)",),
        after={"init": _RELAY_EDITS},
    ),
    # docs/operator.md: config check, the seal, config get/set, status, selfcheck, backups.
    Scenario(
        "operator",
        substitutions={"/etc/ductile": "{scratch}/etc/ductile",
                       "/var/lib/ductile": "{scratch}/var/lib/ductile",
                       "/opt/plugins": "{scratch}/opt/plugins",
                       "/srv/backup": "{scratch}/srv/backup",
                       "127.0.0.1:8080": "127.0.0.1:{port0}"},
        setup=(_operator_setup, "ductile system start --config {scratch}/etc/ductile"),
    ),
    # docs/operator.md, Postures: from management-only to gateway over the socket.
    Scenario(
        "postures",
        substitutions={"/etc/ductile": "{scratch}/etc/ductile"},
        setup=(_management_only,),
        after={"ductile vault roll": (_add_api_token,),
               "ductile system reload": (_serves_gateway,)},
    ),
    # docs/vault.md: a new key, and the management socket's activation.
    Scenario(
        "vault",
        substitutions={"/etc/ductile/vault.key": "{scratch}/keys/vault.key",
                       "/etc/ductile": "{scratch}/etc/ductile"},
        setup=("mkdir -p {scratch}/keys", _management_only),
        after={"ductile vault roll": (_add_api_token,),
               "ductile system reload": (_serves_gateway,)},
    ),
    # docs/pipelines.md: the first example's pipeline, started over the API.
    Scenario(
        "pipelines",
        substitutions={"127.0.0.1:8080": "127.0.0.1:{port0}"},
        setup=(_pipelines_setup,),
        after={"pipeline": (_pipelines_start,)},
    ),
    # docs/scheduler.md: pause, resume and run against a gateway with one schedule.
    Scenario(
        "scheduler",
        substitutions={"[PLUGIN[/ID]]": "backup/nightly", "PLUGIN/ID": "backup/nightly"},
        setup=(_scheduler_setup,),
    ),
)}

# --------------------------------------------------------------------------- collection


def _page_blocks() -> Iterator[tuple[Path, list[DocBlock] | DocFormatError]]:
    for page in PAGES:
        try:
            yield page, read_blocks(page, str(page.relative_to(REPO)))
        except DocFormatError as exc:
            yield page, exc


def _blocks() -> list[DocBlock]:
    return [b for _, blocks in _page_blocks() if not isinstance(blocks, Exception)
            for b in blocks]


def _config_blocks() -> list[DocBlock]:
    return [b for b in _blocks() if (b.kind == "yaml" and b.directive is None)
            or (b.directive is not None and b.directive.kind in ("config", "manifest", "plugin"))]


def _scenario_blocks(name: str) -> list[DocBlock]:
    return [b for b in _blocks() if b.directive is not None
            and b.directive.options.get("scenario") == name]


# --------------------------------------------------------------------------- coverage


def test_every_example_is_run_checked_or_skipped_with_a_reason() -> None:
    """A console block must be run or skipped; a yaml block is a config file unless marked;
    every marker parses and names a declared scenario; every declared scenario is used."""
    problems: list[str] = []
    used: set[str] = set()
    for _page, blocks in _page_blocks():
        if isinstance(blocks, DocFormatError):
            problems.append(str(blocks))
            continue
        for block in blocks:
            directive = block.directive
            kind = directive.kind if directive else None
            if block.kind == "console" and kind not in ("run", "plugin", "skip"):
                problems.append(f"{block.where}: a console block that is neither run nor "
                                "skipped: add <!-- doc: run scenario=NAME --> or "
                                "<!-- doc: skip (reason) --> on the line before it")
            elif block.kind == "yaml" and kind not in (None, "config", "manifest", "skip"):
                problems.append(f"{block.where}: a yaml block can be config, manifest or "
                                f"skip, not {kind}")
            elif block.kind == "json" and kind not in (None, "skip"):
                problems.append(f"{block.where}: a json block is parsed as JSON; it takes no "
                                f"marker but skip, not {kind}")
            elif block.kind == "other" and kind is not None:
                problems.append(f"{block.where}: a ```{block.fence.lang} block is not run; "
                                "remove its marker")
            if directive is not None and "scenario" in directive.options:
                name = directive.options["scenario"]
                used.add(name)
                if name not in SCENARIOS:
                    problems.append(f"{block.where}: scenario {name!r} is not declared in "
                                    "tests/test_docs_examples.py")
                if block.kind == "yaml" and "file" not in directive.options:
                    problems.append(f"{block.where}: a config block in a scenario names the "
                                    "file it is written to (file=PATH)")
            if not block.fence.closed:
                problems.append(f"{block.where}: the fence is never closed")
    problems += [f"scenario {name!r} is declared but no block uses it"
                 for name in SCENARIOS if name not in used]
    for name in SCENARIOS:
        pages = {b.page for b in _scenario_blocks(name)}
        if len(pages) > 1:
            problems.append(f"scenario {name!r} spans pages {sorted(pages)}: keep one per page")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# --------------------------------------------------------------------------- config blocks


@pytest.fixture(scope="module")
def config_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `ductile config init` directory, copied for every config example."""
    target = tmp_path_factory.mktemp("doc-template") / "cfg"
    done = run_cli("config", "init", "--dir", str(target))
    assert done.returncode == 0, done.stderr
    return target


@pytest.mark.parametrize("block", _config_blocks(), ids=lambda b: b.where)
def test_config_example(block: DocBlock, config_template: Path, tmp_path: Path) -> None:
    failure = None
    try:
        if block.directive is not None and block.directive.kind == "manifest":
            check_manifest_block(block)
        elif block.directive is not None and block.directive.kind == "plugin":
            check_plugin_block(block, tmp_path / "plugin")
        else:
            check_config_block(block, config_template, tmp_path / "check", WRAPPERS)
    except ExampleFailed as exc:
        failure = str(exc)
    if failure is not None:
        pytest.fail(failure, pytrace=False)


@pytest.mark.parametrize("block", [b for b in _blocks() if b.kind == "json"
                                   and b.directive is None], ids=lambda b: b.where)
def test_json_example_is_json(block: DocBlock) -> None:
    """What a page shows as JSON (a request body, a response) is JSON a reader can paste."""
    try:
        json.loads(block.fence.body)
    except ValueError as exc:
        pytest.fail(f"{block.where}: not JSON: {exc}", pytrace=False)


# --------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name: str, tmp_path: Path) -> None:
    blocks = order_blocks(_scenario_blocks(name))
    assert blocks, f"no block runs scenario {name!r}"
    scratch = tmp_path / "s"
    scratch.mkdir()
    run = ScenarioRun(SCENARIOS[name], scratch=scratch, repo=REPO, bin_dir=BIN,
                      ports=[free_port() for _ in range(3)])
    failure = None
    try:
        with run:
            for block in blocks:
                run.run_block(block)
    except ExampleFailed as exc:
        failure = f"scenario {name!r}: {exc}"
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------- the runner itself


def _run_page(tmp_path: Path, text: str) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)
    page = tmp_path / "page.md"
    page.write_text(text)
    scratch = tmp_path / "s"
    scratch.mkdir()
    with ScenarioRun(Scenario("self"), scratch=scratch, repo=REPO, bin_dir=BIN,
                     ports=[]) as run:
        for block in read_blocks(page, "page.md"):
            run.run_block(block)


def test_the_runner_fails_on_output_or_status_the_page_does_not_show(tmp_path: Path) -> None:
    with pytest.raises(ExampleFailed, match=r"page\.md:4: the output of `echo hello`"):
        _run_page(tmp_path / "a", "<!-- doc: run scenario=self -->\n```console\n"
                                  "$ true\n$ echo hello\ngoodbye\n```\n")
    with pytest.raises(ExampleFailed, match=r"page\.md:3: `false` exited 1 \(expected 0\)"):
        _run_page(tmp_path / "b", "<!-- doc: run scenario=self -->\n```sh\nfalse\n```\n")


def test_ids_and_statuses_shown_by_the_page_are_kept_for_later_commands(tmp_path: Path) -> None:
    """A page's id binds to the real one (and later commands get it), `...` stands for any
    lines, and a command may end with the status the page states."""
    _run_page(tmp_path, """<!-- doc: run scenario=self -->
```console
$ python3 -c 'import uuid; print("first"); print(uuid.uuid4()); print("last")' | tee out
first
1f6f300c-9859-4cf4-937e-ae22ea893637
...
$ test "$(sed -n 2p out)" = 1f6f300c-9859-4cf4-937e-ae22ea893637
$ (exit 3)      # exits 3
$ (exit 4)
$ echo $?
4
```
""")
