"""Check the YAML blocks of the docs with the real config machinery (see support.docrun).

A config block is written into a copy of a directory made by `ductile config init`, as an
included file (or merged into the root `config.yaml` under `<!-- doc: config root -->`), and the
directory is judged by `check_config`, the code `ductile config check` runs. Errors fail, and so
do the warnings that mean the page shows something the gateway would ignore or distrust
(`FAILING_WARNINGS`: unknown keys, a root-only key in an include, ...). To make the example
judgeable as the page means it, and nothing more:

- every `secret_ref` the block names is minted in the directory's vault (the page says to mint
  them; `check_config` would otherwise refuse the unresolved references);
- `plugins=a,b` installs a stub plugin under each name (poll, handle, health) and enables it,
  for examples about plugins the reader would have; `root=PATH` says the example's own
  plugin root (`/opt/ductile/plugins`) is where they are, and stands for the stub root;
- `files` splits a block holding several files at `# NAME.yaml` comment lines; a name with a
  directory (`a/relay.yaml`) is a separate config directory (another gateway);
- `wrap=NAME` inserts a fragment (a pipeline step, a condition) into a declared template;
- `check=load` only loads and validates (for examples naming OS users this host lacks).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from support.docrun import DocBlock, ExampleFailed
from support.gateway import make_vault
from support.plugins import make_plugin

#: Warning categories that fail a config example: what the loader ignores or warns about
#: (`config`), pipeline warnings (dead steps) and the doctor's findings about the example
#: itself. `unused` (a bundled plugin the example does not mention) and `shadowed` are about
#: the scratch directory, not the example.
FAILING_WARNINGS = frozenset({"config", "pipeline", "token_scopes", "env_vars", "schedule",
                              "webhooks", "hook_cycles", "api", "service", "plugin_refs",
                              "vault", "plugin"})

_FILE_HEADER = re.compile(r"^# (?P<name>[\w./-]+\.ya?ml)\s*$")
_STUB = ('cat >/dev/null; printf \'{"status":"ok","result":"stub"}\\n\'')
FRAGMENT = "<<fragment>>"


def split_files(body: str) -> dict[str, str]:
    """`# a.yaml` / `# b/c.yaml` header lines -> {name: text}; text before the first header
    is an error (the block says which file it belongs to)."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in body.split("\n"):
        header = _FILE_HEADER.match(line)
        if header is not None:
            current = files.setdefault(header["name"], [])
        elif current is None:
            if line.strip():
                raise ExampleFailed(f"a `files` block starts with `# NAME.yaml`, not {line!r}")
        else:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in files.items()}


def wrap(fragment: str, template: str) -> str:
    """`template` with its `<<fragment>>` line replaced by `fragment`, at that indentation."""
    out = []
    for line in template.split("\n"):
        if line.strip() == FRAGMENT:
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + frag if frag.strip() else frag for frag in fragment.split("\n"))
        else:
            out.append(line)
    return "\n".join(out)


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge, lists append, anything else is replaced (how a reader adds a block to
    a root file they already have)."""
    for key, value in extra.items():
        old = base.get(key)
        if isinstance(old, dict) and isinstance(value, Mapping):
            deep_merge(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            old.extend(value)
        else:
            base[key] = value
    return base


def secret_refs(node: Any) -> set[str]:
    """Every `secret_ref` value in a parsed YAML tree."""
    found: set[str] = set()
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "secret_ref" and isinstance(value, str):
                found.add(value)
            found |= secret_refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= secret_refs(item)
    return found


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key repeated in one mapping: the gateway's loader keeps the
    last value, so an example showing two alternatives under one key checks only one."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping; show each alternative "
                "in its own block", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def check_config_block(block: DocBlock, template: Path, work: Path,
                       wrappers: Mapping[str, str]) -> None:
    """Judge one yaml block as described in the module docstring; ExampleFailed says why."""
    assert block.directive is None or block.directive.kind == "config"
    words = block.directive.words if block.directive else ()
    options = block.directive.options if block.directive else {}
    body = block.fence.body
    if "wrap" in options:
        if options["wrap"] not in wrappers:
            raise ExampleFailed(f"{block.where}: no wrapper named {options['wrap']!r}")
        body = wrap(body, wrappers[options["wrap"]])
    files = split_files(body) if "files" in words else {
        "config.yaml" if "root" in words else "doc-example.yaml": body}
    groups: dict[str, dict[str, str]] = {}
    for name, text in files.items():
        directory, _, base = name.rpartition("/")
        groups.setdefault(directory or ".", {})[base] = text
    stubs = [p for p in options.get("plugins", "").split(",") if p]
    for directory, group in groups.items():
        target = work / directory
        shutil.copytree(template, target)
        if "root" in options:
            group = {name: text.replace(options["root"], str(target / "doc-plugins"))
                     for name, text in group.items()}
        try:
            _write_group(target, group, stubs, listed="root" in options)
        except ExampleFailed as exc:
            raise ExampleFailed(f"{block.where}: {exc}") from None
        findings = _judge(target, options.get("check", "full"))
        if findings:
            raise ExampleFailed(f"{block.where}: the config example does not check cleanly "
                                f"(as {', '.join(group)} in {directory}):\n  "
                                + "\n  ".join(findings))


def _write_group(target: Path, group: Mapping[str, str], stubs: list[str], *,
                 listed: bool) -> None:
    root_path = target / "config.yaml"
    root = yaml.safe_load(root_path.read_text()) or {}
    refs: set[str] = set()
    if stubs:
        plugin_root = target / "doc-plugins"
        for name in stubs:
            make_plugin(plugin_root, name, _STUB)
        if not listed:
            root["plugin_roots"] = [*root.get("plugin_roots", []), str(plugin_root)]
        root.setdefault("plugins", {}).update({name: {"enabled": True} for name in stubs})
    for name, text in group.items():
        try:
            doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
        except yaml.YAMLError as exc:
            raise ExampleFailed(f"{name}: not YAML as a reader would paste it: {exc}") from None
        refs |= secret_refs(doc)
        if name == "config.yaml":
            deep_merge(root, doc or {})
            continue
        (target / name).write_text(text + "\n")
        if name not in root.get("include", []):
            root["include"] = [*root.get("include", []), name]
    root_path.write_text(yaml.safe_dump(root, sort_keys=False))
    for leftover in ("vault.key", "vault.nacl"):
        (target / leftover).unlink()
    minted = {ref: base64.b64encode(os.urandom(32)).decode() for ref in refs}
    make_vault(target, {"api-token": "doc-example-token", **minted})


def _judge(directory: Path, mode: str) -> list[str]:
    """The findings that fail: every error, and the warnings in FAILING_WARNINGS."""
    if mode == "load":
        from ductile.config.load import load_config
        from ductile.errors import ConfigError

        try:
            cfg = load_config(str(directory))
        except ConfigError as exc:
            return [f"ERROR {exc}"]
        return [f"WARN [config] {warning}" for warning in cfg.warnings]
    from ductile.cli.checks import check_config

    report = check_config(str(directory))
    out = [f"ERROR [{e['category']}] {_describe(e)}" for e in report["errors"]]
    out += [f"WARN [{w['category']}] {_describe(w)}" for w in report["warnings"]
            if w["category"] in FAILING_WARNINGS]
    return out


def _describe(finding: Mapping[str, str]) -> str:
    return "".join(f"{finding[k]}: " for k in ("file", "field") if finding.get(k)) \
        + finding["message"]


def check_manifest_block(block: DocBlock) -> None:
    """A manifest example must parse as a real manifest."""
    from ductile.errors import ManifestError
    from ductile.plugin.manifest import parse_manifest

    try:
        parse_manifest(block.fence.body, block.where)
    except ManifestError as exc:
        raise ExampleFailed(f"{block.where}: the manifest example is refused: {exc}") from None


def check_plugin_block(block: DocBlock, work: Path) -> None:
    """A plugin's source (`<!-- doc: plugin -->`): run as its entrypoint, it answers a real
    protocol v2 request for each command it is shown handling with one valid response."""
    import subprocess
    import uuid
    from datetime import datetime, timedelta, timezone

    from ductile.errors import ProtocolError
    from ductile.plugin.protocol import build_request, decode_response

    work.mkdir(parents=True, exist_ok=True)
    entrypoint = work / "run"
    entrypoint.write_text(block.fence.body + "\n")
    entrypoint.chmod(0o755)
    deadline = datetime.now(timezone.utc) + timedelta(seconds=30)
    for command in ("health", "poll", "handle"):
        event = {"type": "api.trigger", "payload": {"name": "Ada"}}
        request = build_request(job_id=str(uuid.uuid4()), command=command, config={}, state={},
                                payload={"name": "Ada"}, context={"ductile_plugin": "greet"},
                                event=event, deadline_at=deadline)
        done = subprocess.run([str(entrypoint)], input=request, capture_output=True,
                              timeout=30, cwd=work)
        try:
            decode_response(done.stdout)
        except ProtocolError as exc:
            raise ExampleFailed(f"{block.where}: the plugin's answer to {command} is not a "
                                f"protocol v2 response: {exc}\n{done.stderr.decode()}") from None
