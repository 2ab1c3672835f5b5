"""The config as `ductile config show` and `config get` present it: merged, with defaults, and
with every `${VAR}` shown as the reference, never as the value.

Why not just print `Config.raw`: it is the merged document *after* interpolation, so a value
read from the environment or an env file (`.env`) would be printed, and it has no defaults, so
`config get service.max_workers` would fail on a config that leaves the key out (the usual
case). This module builds the document from three things the loader keeps:

1. `Config.raw`, what the files say after include + merge (interpolated, `~` expanded);
2. `Config.source_files`, the exact bytes of every file read, in merge order. Each file is read
   again *without* interpolation and the documents merged by the same rules
   (`ductile.config.merge`), which says where each `${VAR}` ended up; that path then shows
   the reference (`url: http://${HOST}:8080`) in place of the value;
3. the typed dataclasses (`Config.service`, `.api`, `.plugins`, ...), whose values are what
   the gateway uses: a key the files leave out, or set to zero where zero means "default",
   shows the value in force. A key written in an equivalent form is shown as written (`30d`
   stays `30d`); durations filled in are printed the Go way (`720h0m0s`).

Pipelines are collected from every file (they are not merged), so `pipelines` lists all of
them in file order, as the router compiles them.

`redacted_view` is the same document for `GET /config/view`, with secret-like values replaced
(the API answers anyone holding `system:ro`, who need not see what a plugin's config holds).

Known limit: a `${VAR}` used as a map key (`${NAME}: ...`) is shown with its value; the loader
keeps no record of it. Secrets are never in the config (they are `secret_ref` names of vault
entries), so this only concerns values taken from the environment.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from ductile.config.dotpath import Path, holds, lookup
from ductile.config.durations import DurationError, format_duration, parse_duration
from ductile.config.interpolate import VAR_PATTERN
from ductile.config.merge import merge_config
from ductile.config.schema import DEFAULT_TIMEOUTS, Config, PluginConf
from ductile.config.sizes import SizeError, parse_byte_size
from ductile.config.yamledit import mask_variables
from ductile.errors import YamlProblem
from ductile.yamldoc import GoYamlLoader, load_yaml, yaml_bool_word

DEFAULT_STATE_PATH = "./data/state.db"  # the loader's default (ductile.config.load)


def config_view(cfg: Config, *, defaults: bool = True) -> dict[str, Any]:
    """The merged document with `${VAR}` references restored and, unless `defaults` is
    False, every typed default filled in."""
    doc = copy.deepcopy(cfg.raw)
    if cfg.pipelines:
        doc["pipelines"] = [copy.deepcopy(source.raw) for source in cfg.pipelines]
    _restore_references(doc, _unexpanded_merge(cfg))
    if defaults:
        _fill_defaults(doc, cfg)
    return doc


def unexpanded_document(data: bytes) -> dict[str, Any]:
    """One file's document as written: `${VAR}` left as the reference (also inside flow
    style, where `${` would not parse), YAML merges (`<<`) applied; {} for an empty file."""
    text = data.decode("utf-8-sig")
    loader = GoYamlLoader(mask_variables(text))
    try:
        node = loader.get_single_node()
        value = _construct(loader, node, text) if node is not None else {}
    except yaml.YAMLError as exc:
        raise YamlProblem(f"YAML error: {exc}") from exc
    finally:
        loader.dispose()
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- ${VAR} references


def _construct(loader: GoYamlLoader, node: yaml.Node, text: str) -> Any:
    """The value of `node`, with scalars whose text holds `${...}` read from the original text
    (the masked copy the tree was built from has placeholders there)."""
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        return {_construct(loader, key, text): _construct(loader, value, text)
                for key, value in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, text) for item in node.value]
    written = text[node.start_mark.index:node.end_mark.index]
    if "${" not in written:
        return loader.construct_object(node, deep=True)
    try:
        value = load_yaml(written)
    except YamlProblem:
        return written.strip()
    return value if isinstance(value, str) else written.strip()


def _unexpanded_merge(cfg: Config) -> dict[str, Any]:
    """Every source file read without interpolation, merged in the loader's order."""
    docs: list[dict[str, Any]] = []
    for source in cfg.source_files:
        try:
            docs.append(unexpanded_document(source.data))
        except (YamlProblem, UnicodeDecodeError):
            docs.append({})  # it loaded once; a file that changed since is shown interpolated
    if not docs:
        return {}
    merged = dict(docs[0])
    for doc in docs[1:]:
        merged = merge_config(merged, doc)
    pipelines = [entry for doc in docs if isinstance(doc.get("pipelines"), list)
                 for entry in doc["pipelines"]]
    if pipelines:
        merged["pipelines"] = pipelines
    return merged


def _restore_references(doc: dict[str, Any], unexpanded: Any) -> None:
    for path, written in _references(unexpanded, ()):
        if holds(doc, path) and _came_from(written, lookup(doc, path)):
            _assign(doc, path, written)


def _references(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        if VAR_PATTERN.search(value):
            yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                yield from _references(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _references(item, (*path, index))


def _came_from(written: str, value: Any) -> bool:
    """Whether `value` can be what `written` became after interpolation. A string must match
    the text around the references (else a merge rule took the value from another file);
    a number, list or map can only have come from the variable itself."""
    if not isinstance(value, str):
        return True
    parts = VAR_PATTERN.split(written)
    literal = [re.escape(part) for part in parts[::2]]
    if literal[0].startswith("~"):
        literal[0] = "(?:~|.*)" + literal[0][1:]  # `~` is expanded after interpolation
    return re.fullmatch(".*".join(literal), value, re.DOTALL) is not None


def _assign(doc: Any, path: Path, value: Any) -> None:
    target = lookup(doc, path[:-1])
    target[path[-1]] = value


# --------------------------------------------------------------------------- defaults


def _fill_defaults(doc: dict[str, Any], cfg: Config) -> None:
    service = _map(doc.get("service"))
    # `strict_mode` is a deprecated alias of `admission` (shown resolved): only as written.
    doc["service"] = _merged(service, cfg.service,
                             skip=() if "strict_mode" in service else ("strict_mode",))
    state, database = _map(doc.get("state")), _map(doc.get("database"))
    if not state.get("path") and not database.get("path"):
        doc["state"] = {**state, "path": DEFAULT_STATE_PATH}
    # `api.tls` paths are shown as written (like state.path), not resolved.
    doc["api"] = _merged(doc.get("api"), cfg.api, skip=("tokens", "management_socket", "tls"))
    plugins = _map(doc.get("plugins"))
    for name, plugin in cfg.plugins.items():
        plugins[name] = _plugin(plugins.get(name), plugin)
    if plugins:
        doc["plugins"] = plugins
    _fill_webhooks(doc, cfg)


def _plugin(raw: Any, plugin: PluginConf) -> dict[str, Any]:
    # `config` is the plugin's own data, shown as written (its numbers are not durations).
    stanza = _merged(raw, plugin, skip=("name", "config", "schedules", "timeouts"))
    stanza.setdefault("config", {})
    commands = dict.fromkeys([*DEFAULT_TIMEOUTS, *plugin.timeouts])
    stanza["timeouts"] = _merged(stanza.get("timeouts"),
                                 {command: plugin.timeout_for(command) for command in commands})
    schedules = stanza.get("schedules")
    if isinstance(schedules, list):
        stanza["schedules"] = [{"id": "default", "command": "poll", **entry}
                               if isinstance(entry, dict) else entry for entry in schedules]
    return stanza


def _fill_webhooks(doc: dict[str, Any], cfg: Config) -> None:
    raw = doc.get("webhooks")
    entries = raw if isinstance(raw, list) else _map(raw).get("endpoints")
    if not isinstance(entries, list) or len(entries) != len(cfg.webhooks.endpoints):
        return
    # `match` rules are shown as written: their typed form is compiled (regexes, split paths).
    filled = [_merged(entry, endpoint, skip=("match",))
              for entry, endpoint in zip(entries, cfg.webhooks.endpoints)]
    if isinstance(raw, list):
        doc["webhooks"] = filled
    else:
        doc["webhooks"] = {**_map(raw), "endpoints": filled}


def _merged(raw: Any, typed: Any, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """`raw` (a map from the files) with each field of `typed` (a dataclass or a dict) added
    when missing and replaced when the typed value in force differs from what is written."""
    result = dict(raw) if isinstance(raw, dict) else {}
    items = ((f.name, getattr(typed, f.name)) for f in dataclasses.fields(typed)) \
        if dataclasses.is_dataclass(typed) else typed.items()
    for name, value in items:
        if name in skip:
            continue
        if name not in result:
            if value is not None and value != "":
                result[name] = _plain(value)
        elif isinstance(result[name], dict) and (dataclasses.is_dataclass(value)
                                                 or isinstance(value, dict)):
            result[name] = _merged(result[name], value)
        elif not _shows(result[name], value):
            result[name] = _plain(value)
    return result


def _shows(written: Any, value: Any) -> bool:
    """Whether the written value says the same as the typed one (so it is shown as written)."""
    if isinstance(written, str) and VAR_PATTERN.search(written):
        return True  # the reference, never the value
    if isinstance(value, bool):
        return written is value or yaml_bool_word(written) is value
    if isinstance(value, float) and isinstance(written, str):
        try:
            return parse_duration(written) == value
        except DurationError:
            return False
    if isinstance(value, int) and isinstance(written, str):
        try:
            return parse_byte_size(written) == value
        except SizeError:
            return False
    if isinstance(value, tuple):
        return isinstance(written, list) and list(value) == written
    if value is None:
        return written is None or written == 0
    return type(written) is type(value) and bool(written == value)


def _plain(value: Any) -> Any:
    """A typed value as YAML would write it: durations as Go duration strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return format_duration(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _map(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- redaction

#: A key whose lower-case form contains one of these holds a secret (the Go original's list).
SECRET_WORDS = ("secret", "key", "token", "password", "api_key", "credential", "auth",
                "passwd")
REDACTED = "[REDACTED]"
#: Keys of this gateway's own config that contain a secret word but hold a name, a path or a
#: public value (outside plugin `config`, which is the plugin's and redacted by the rule
#: alone). A map or list under any key is walked, never dropped whole, except in plugin config.
_STRUCTURAL = frozenset({"secret_ref", "secrets", "key_file", "vault_file", "dedupe_key",
                         "dedupe_header", "signature_header", "public_key", "auth", "tokens",
                         "key_id", "tls"})
#: What an API token entry may show: which vault secret holds it and what it may do.
_TOKEN_FIELDS = ("name", "secret_ref", "scopes", "description")


def redacted_view(cfg: Config) -> dict[str, Any]:
    """`config_view` for `GET /config/view`: in plugin `config`, at any depth, the value of
    every key named like a secret is `[REDACTED]` (as the Go original does); elsewhere every
    text value under such a key is too, unless the key is one of ours that names a secret or a
    file (`secret_ref`, `key_file`, ...); API token entries keep only name, secret_ref, scopes
    and description. Secrets themselves are never in the config (they live in the vault), and
    `${VAR}` values are shown as the reference; this is the second fence."""
    doc = config_view(cfg)
    plugins = doc.get("plugins")
    if isinstance(plugins, dict):
        for stanza in plugins.values():
            if isinstance(stanza, dict) and "config" in stanza:
                stanza["config"] = redact_plugin_config(stanza["config"])
    auth = _map(doc.get("api")).get("auth")
    if isinstance(auth, dict) and isinstance(auth.get("tokens"), list):
        auth["tokens"] = [{k: v for k, v in entry.items() if k in _TOKEN_FIELDS}
                          if isinstance(entry, dict) else REDACTED for entry in auth["tokens"]]
    return {key: _redact_structural(key, value) for key, value in doc.items()}


def secret_like(key: Any) -> bool:
    return isinstance(key, str) and any(word in key.lower() for word in SECRET_WORDS)


def redact_plugin_config(value: Any) -> Any:
    """Plugin config with the value of every secret-like key replaced, at any depth."""
    if isinstance(value, dict):
        return {key: REDACTED if secret_like(key) else redact_plugin_config(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [redact_plugin_config(item) for item in value]
    return value


def _redact_structural(key: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact_structural(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_structural(key, item) for item in value]
    # Text only: outside plugin config a number or a boolean under such a key is a setting
    # (`admission.require_api_auth: true`), never a credential.
    if isinstance(value, str) and value and secret_like(key) and key not in _STRUCTURAL:
        return REDACTED
    return value
