"""The doctor: a whole-config review against the discovered plugins, as the Go gateway's.

The boot gates each refuse one thing at one moment; the doctor reads the finished picture (the
config, the plugin registry after aliases, the compiled pipelines, whether a vault is open) and
lists everything that looks wrong, as errors (the config cannot work as written) and warnings
(it works, but probably not as meant). Three callers share this one function so they cannot
disagree: the boot gate `config_doctor_passed` (which refuses on errors only under
`service.admission.validate_config_on_boot`), `ductile config check`, and `GET /system/doctor`.

Each finding names its category, the dotted key (`field`) and, when the loader knows it, the file
that holds the key, so an operator with a dozen included files knows where to edit. Messages
follow the Go doctor's wording where it has one. The checks, in its order: service, plugin
references (a `uses` pointing at itself, a plugin not discovered, a manifest's required config
key missing), `uses` cycles, api (an enabled API with no token is fine when a vault is open: that
is the management-only posture), token scopes, webhooks, pipelines and hook cycles, unused and
shadowed plugins, unresolved `${VAR}` in secret names, schedules.

Strict decode (`ignored_keys`) belongs with it: under the same switch, a key the loader did not
understand refuses the boot instead of being ignored.

Pure: no I/O, no logging. The pipelines are typed structurally (`PipelineSetLike`) because the
router sits above the config layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ductile.config.durations import DurationError, format_duration
from ductile.config.interpolate import unresolved_names
from ductile.config.origin import key_origin
from ductile.config.reader import UnknownKey
from ductile.config.schema import Config
from ductile.config.scopes import GRANTED, WILDCARD
from ductile.config.validate import MIN_TICK_INTERVAL, go_quote, parse_interval
from ductile.plugin.discovery import Plugin, Shadowed

RECOMMENDED_TICK_INTERVAL = 1.0
SHORT_SCHEDULE_INTERVAL = 60.0
# Scope prefixes of the Go gateway's low-level form (`read:echo`, `trigger:echo:poll`).
LOW_LEVEL_ACTIONS = frozenset({"read", "trigger", "admin"})
# Scope resources that name no plugin.
RESERVED_RESOURCES = frozenset({"jobs", "events", "healthz", "queue", "system", "plugin"})
SWITCH = "service.admission.validate_config_on_boot"


class NodeLike(Protocol):
    """A compiled pipeline step (router.dsl.Node), as far as the doctor reads it."""

    @property
    def kind(self) -> str: ...
    @property
    def plugin(self) -> str: ...
    @property
    def call(self) -> str | None: ...


class PipelineLike(Protocol):
    """A compiled pipeline (router.dsl.Pipeline), as far as the doctor reads it."""

    @property
    def name(self) -> str: ...
    @property
    def file(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def on_hook(self) -> str | None: ...
    @property
    def from_plugin(self) -> str | None: ...
    @property
    def nodes(self) -> Mapping[str, NodeLike]: ...


class PipelineSetLike(Protocol):
    """The compiled `pipelines:` (router.dsl.PipelineSet)."""

    @property
    def pipelines(self) -> Mapping[str, PipelineLike]: ...


@dataclass(frozen=True)
class Finding:
    """One problem: `category` is the check, `field` the dotted key (may be empty), `file` the
    config file holding that key when known."""

    category: str
    message: str
    field: str = ""
    file: str = ""

    def as_dict(self) -> dict[str, str]:
        """`{category, message, field?, file?}` (empty parts left out, as Go's omitempty)."""
        out = {"category": self.category, "message": self.message}
        if self.field:
            out["field"] = self.field
        if self.file:
            out["file"] = self.file
        return out

    def describe(self) -> str:
        """`plugins.yaml: plugins.x.config.url: message`, the way ConfigError names a key."""
        return "".join(f"{part}: " for part in (self.file, self.field) if part) + self.message


@dataclass(frozen=True)
class DoctorResult:
    """`valid` is true exactly when there is no error; warnings never make a config invalid."""

    valid: bool
    errors: tuple[Finding, ...] = ()
    warnings: tuple[Finding, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "errors": [f.as_dict() for f in self.errors],
                "warnings": [f.as_dict() for f in self.warnings]}


@dataclass(frozen=True)
class _Subject:
    """What the checks read."""

    config: Config
    plugins: Mapping[str, Plugin]
    pipelines: PipelineSetLike | None
    vault_present: bool
    shadowed: tuple[Shadowed, ...]


@dataclass
class _Report:
    """Collects findings, naming the file of each field from the config's source files."""

    config: Config
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    def error(self, category: str, key: str, message: str, *, file: str | None = None) -> None:
        self.errors.append(self._finding(category, key, message, file))

    def warning(self, category: str, key: str, message: str, *, file: str | None = None) -> None:
        self.warnings.append(self._finding(category, key, message, file))

    def _finding(self, category: str, key: str, message: str, file: str | None) -> Finding:
        if file is None:
            file = key_origin(self.config.source_files, key) if key else ""
        return Finding(category, message, key, file)

    def result(self) -> DoctorResult:
        return DoctorResult(not self.errors, tuple(self.errors), tuple(self.warnings))


def diagnose(
    config: Config,
    plugins: Mapping[str, Plugin],
    *,
    pipelines: PipelineSetLike | None = None,
    vault_present: bool = False,
    shadowed: Iterable[Shadowed] = (),
) -> DoctorResult:
    """Every check over `config` and the registry `plugins` (discovered, aliases applied).

    `pipelines` (compiled) enables the pipeline and hook-cycle checks; `vault_present` says an
    open vault can mint the API's first token; `shadowed` lists plugin names two roots provide.
    """
    subject = _Subject(config, plugins, pipelines, vault_present, tuple(shadowed))
    report = _Report(config)
    for check in _CHECKS:
        check(subject, report)
    return report.result()


def ignored_keys(config: Config) -> tuple[UnknownKey, ...]:
    """Strict decode: the keys the loader did not understand, which it otherwise ignores.
    Deprecations and `not supported yet` notes are not counted: those keys are understood."""
    return tuple(w for w in config.warnings if isinstance(w, UnknownKey))


def validation_refusal(result: DoctorResult | None, ignored: Sequence[str]) -> str | None:
    """Why `validate_config_on_boot` refuses this config, or None when it does not.
    `ignored` holds the strict-decode findings (`ignored_keys`)."""
    errors = result.errors if result is not None else ()
    parts = []
    if errors:
        parts.append(f"{len(errors)} doctor error(s): "
                     + "; ".join(error.describe() for error in errors))
    if ignored:
        parts.append(f"{len(ignored)} ignored config key(s): "
                     + "; ".join(_ignored_text(key) for key in ignored))
    if not parts:
        return None
    if not errors:
        advice = "fix or remove the keys"
    elif not ignored:
        advice = "fix them (ductile config check lists each finding with its file)"
    else:
        advice = "fix the findings and remove the keys"
    return f"configuration validation failed: {'; '.join(parts)}; {advice}, or disable {SWITCH}"


def _ignored_text(key: str) -> str:
    """`config.yaml: unknown key service.x`: the warning without `(ignored)`, which a refusal
    would contradict."""
    return f"{key.file}: unknown key {key.key}" if isinstance(key, UnknownKey) else key


# --------------------------------------------------------------------------------- the checks


def _check_service(s: _Subject, r: _Report) -> None:
    cfg = s.config
    if not cfg.plugin_roots:
        r.error("service", "plugin_roots", "plugin_roots is required")
    if not cfg.state_path:
        r.error("service", "state.path", "state.path is required")
    tick = cfg.service.tick_interval
    if tick <= 0:
        r.error("service", "service.tick_interval", "tick_interval must be positive")
    elif MIN_TICK_INTERVAL <= tick < RECOMMENDED_TICK_INTERVAL:
        r.warning("service", "service.tick_interval",
                  f"tick_interval {format_duration(tick)} is below recommended "
                  f"({format_duration(RECOMMENDED_TICK_INTERVAL)}); chatty service polls can "
                  "flood dispatch")


def _check_plugin_refs(s: _Subject, r: _Report) -> None:
    """Each enabled plugin (or the base its `uses` names) is discovered and given every config
    key its manifest requires."""
    for name, conf in sorted(s.config.plugins.items()):
        if not conf.enabled:
            continue
        uses = conf.uses.strip()
        if uses == name:
            r.error("plugin_refs", f"plugins.{name}.uses",
                    f"plugin {go_quote(name)}: uses must reference a different base plugin")
            continue
        target = uses or name
        plugin = s.plugins.get(target)
        if plugin is None:
            r.error("plugin_refs", f"plugins.{name}.uses" if uses else f"plugins.{name}",
                    f"plugin {go_quote(target)} in config but not found in configured plugin "
                    "roots")
            continue
        for key in plugin.manifest.config_keys.get("required", ()):
            if key not in conf.config:
                r.error("plugin_refs", f"plugins.{name}.config.{key}",
                        f"plugin {go_quote(target)} requires config key {go_quote(key)}")


def _check_uses_cycles(s: _Subject, r: _Report) -> None:
    """Aliases that lead back to themselves (a -> b -> a); `uses` naming itself is reported
    by the plugin references check instead."""
    graph = {name: [conf.uses.strip()] for name, conf in s.config.plugins.items()
             if conf.enabled and conf.uses.strip() not in ("", name)}
    cycle = find_cycle(graph)
    if cycle:
        r.error("plugin_refs", "plugins",
                f"circular uses dependency detected involving plugin {go_quote(min(cycle))}")


def _check_api(s: _Subject, r: _Report) -> None:
    """An enabled API needs a listen address and a token; with no token but an open vault the
    gateway boots management-only, which is how the first token gets minted."""
    api = s.config.api
    if not api.enabled:
        return
    if not api.listen:
        r.error("api", "api.listen", "api.listen is required when API is enabled")
    if not api.tokens and not s.vault_present:
        r.error("api", "api.auth.tokens", "api.auth.tokens must be configured when API is enabled")


def _check_token_scopes(s: _Subject, r: _Report) -> None:
    for i, token in enumerate(s.config.api.tokens):
        for j, scope in enumerate(token.scopes):
            _check_scope(s, r, scope, f"api.auth.tokens[{i}].scopes[{j}]")


def _check_scope(s: _Subject, r: _Report, scope: str, key: str) -> None:
    """The Go doctor's scope grammar, plus one note of ours: a scope that grammar accepts but
    this gateway grants nothing for is a warning, or a token would quietly get 403 everywhere."""
    if scope == WILDCARD or scope in GRANTED:
        return
    resource, colon, access = scope.partition(":")
    if not colon:
        r.error("token_scopes", key, f"invalid scope {go_quote(scope)} (expected format: "
                                     "resource:access or action:resource:command)")
        return
    plugin = s.plugins.get(resource)
    if resource in LOW_LEVEL_ACTIONS or (plugin is None and resource in RESERVED_RESOURCES):
        _warn_not_granted(r, scope, key)
        return
    if plugin is None:
        r.error("token_scopes", key,
                f"scope {go_quote(scope)} references unknown plugin {go_quote(resource)}")
        return
    _check_plugin_scope(r, plugin, scope, resource, access, key)


def _check_plugin_scope(r: _Report, plugin: Plugin, scope: str, name: str, access: str,
                        key: str) -> None:
    """`<plugin>:ro|rw|allow:<cmd>|deny:<cmd>`: a command the manifest does not declare is an
    error to allow and a no-op to deny."""
    verb, colon, command = access.partition(":")
    verb = verb if colon else ""  # `allow` alone is no verb: an invalid access type
    declared = command == WILDCARD or plugin.supports(command)
    if access in ("ro", "rw") or (verb in ("allow", "deny") and declared):
        _warn_not_granted(r, scope, key)
    elif verb == "allow":
        r.error("token_scopes", key, f"scope {go_quote(scope)}: plugin {go_quote(name)} has no "
                                     f"command {go_quote(command)}")
    elif verb == "deny":
        r.warning("token_scopes", key, f"scope {go_quote(scope)}: plugin {go_quote(name)} has "
                                       f"no command {go_quote(command)} (deny is a no-op)")
    else:
        r.error("token_scopes", key, f"scope {go_quote(scope)}: invalid access type "
                                     f"{go_quote(access)} (expected ro, rw, allow:cmd, or "
                                     "deny:cmd)")


def _warn_not_granted(r: _Report, scope: str, key: str) -> None:
    known = ", ".join(sorted(GRANTED))
    r.warning("token_scopes", key, f"scope {go_quote(scope)} grants nothing on this gateway; "
                                   f"it checks only {WILDCARD}, {known}")


def _check_webhooks(s: _Subject, r: _Report) -> None:
    seen: dict[str, int] = {}
    for i, endpoint in enumerate(s.config.webhooks.endpoints):
        key = f"webhooks.endpoints[{i}]"
        path = go_quote(endpoint.path)
        if endpoint.plugin not in s.plugins:
            r.error("webhooks", f"{key}.plugin", f"webhook {path} targets plugin "
                                                 f"{go_quote(endpoint.plugin)} which was not "
                                                 "discovered")
        normal = endpoint.path.rstrip("/")
        if normal in seen:
            r.error("webhooks", f"{key}.path",
                    f"webhook path {path} conflicts with webhooks.endpoints[{seen[normal]}]")
        seen[normal] = i
        if not endpoint.secret_ref:
            r.error("webhooks", key, f"webhook {path}: secret_ref is required")


def _check_pipelines(s: _Subject, r: _Report) -> None:
    """A hook pipeline fires only for plugins with `notify_on_complete: true`; one that waits
    for a plugin without it (or for any plugin, when none has it) can never run."""
    if s.pipelines is None:
        return
    notifying = _notifying(s.config)
    for pipeline in s.pipelines.pipelines.values():
        if not pipeline.on_hook:
            continue
        where = f"pipelines[{pipeline.index}]"
        label = f"hook pipeline {go_quote(pipeline.name)}"
        source = pipeline.from_plugin
        if source is not None and source not in notifying:
            r.warning("pipelines", where, f"{label} never fires: plugin {go_quote(source)} "
                                          "does not set notify_on_complete: true",
                      file=pipeline.file)
        elif source is None and not notifying:
            r.warning("pipelines", where, f"{label} never fires: no enabled plugin sets "
                                          "notify_on_complete: true", file=pipeline.file)


def _check_hook_cycles(s: _Subject, r: _Report) -> None:
    """Plugin A notifies a hook pipeline that runs plugin B, which notifies one that runs A
    (or A again). Only notifying plugins extend such a chain, so only they are graph nodes."""
    if s.pipelines is None:
        return
    notifying = _notifying(s.config)
    pipelines = s.pipelines.pipelines
    graph: dict[str, list[str]] = {}
    for source in sorted(notifying):
        for pipeline in pipelines.values():
            if not pipeline.on_hook or pipeline.from_plugin not in (None, source):
                continue
            targets = _plugins_run(pipeline, pipelines, frozenset())
            graph.setdefault(source, []).extend(sorted(targets & notifying))
    cycle = find_cycle(graph)
    if cycle:
        r.warning("hook_cycles", "", f"reciprocal notify_on_complete hook cycle detected "
                                     f"involving plugin {go_quote(min(cycle))}; review pipelines "
                                     "with on-hook triggers")


def _check_unused(s: _Subject, r: _Report) -> None:
    """A discovered plugin no stanza names (nor any alias builds on) can still be run through
    the API by a token with the scope: worth knowing."""
    referenced = set(s.config.plugins) | {c.uses.strip() for c in s.config.plugins.values()}
    for name in sorted(set(s.plugins) - referenced):
        r.warning("unused", "", f"plugin {go_quote(name)} discovered but not referenced in "
                                "config")


def _check_shadowed(s: _Subject, r: _Report) -> None:
    for item in s.shadowed:
        r.warning("shadowed", "plugin_roots",
                  f"plugin {go_quote(item.name)} is provided by more than one plugin root: "
                  f"{item.kept} is used and {item.ignored} is ignored")


def _check_env_vars(s: _Subject, r: _Report) -> None:
    """A `${VAR}` still in a secret name was not set when the config was read."""
    refs = [(f"api.auth.tokens[{i}].secret_ref", t.secret_ref)
            for i, t in enumerate(s.config.api.tokens)]
    refs += [(f"webhooks.endpoints[{i}].secret_ref", e.secret_ref)
             for i, e in enumerate(s.config.webhooks.endpoints)]
    refs += [(f"instances[{i}].secret_ref", instance.secret_ref)
             for i, instance in enumerate(s.config.relay.instances)]
    ingress = s.config.relay.ingress
    refs += [(f"remote_ingress.peers[{i}].secret_ref", peer.secret_ref)
             for i, peer in enumerate(ingress.peers if ingress is not None else ())]
    for key, ref in refs:
        for name in unresolved_names(ref):
            r.warning("env_vars", key, f"environment variable ${{{name}}} not set")


def _check_schedules(s: _Subject, r: _Report) -> None:
    """`every:` intervals of enabled plugins: unparsable is an error, under a minute suspicious.
    (`cron`, `at` and `after` schedules have their own gate, schedules_valid.)"""
    for name, conf in sorted(s.config.plugins.items()):
        if not conf.enabled:
            continue
        for i, schedule in enumerate(conf.schedules):
            every = schedule.raw.get("every")
            if not isinstance(every, str) or any(schedule.raw.get(k)
                                                 for k in ("cron", "at", "after")):
                continue
            key = f"plugins.{name}.schedules[{i}].every"
            try:
                seconds = parse_interval(every)
            except DurationError as exc:
                r.error("schedule", key, f"invalid schedule interval {go_quote(every)}: {exc}")
                continue
            if seconds < SHORT_SCHEDULE_INTERVAL:
                r.warning("schedule", key,
                          f"schedule interval {go_quote(every)} is very short (< 1m)")


_CHECKS = (_check_service, _check_plugin_refs, _check_uses_cycles, _check_api,
           _check_token_scopes, _check_webhooks, _check_pipelines, _check_hook_cycles,
           _check_unused, _check_shadowed, _check_env_vars, _check_schedules)


# --------------------------------------------------------------------------------- helpers


def _notifying(config: Config) -> frozenset[str]:
    return frozenset(name for name, conf in config.plugins.items()
                     if conf.enabled and conf.notify_on_complete)


def _plugins_run(pipeline: PipelineLike, pipelines: Mapping[str, PipelineLike],
                 seen: frozenset[str]) -> set[str]:
    """The plugins a pipeline's steps run, following `call` steps into their callees."""
    found: set[str] = set()
    for node in pipeline.nodes.values():
        if node.kind == "uses" and node.plugin:
            found.add(node.plugin)
        callee = pipelines.get(node.call or "") if node.kind == "call" else None
        if callee is not None and callee.name not in seen:
            found |= _plugins_run(callee, pipelines, seen | {pipeline.name})
    return found


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The nodes of one cycle of a directed graph (a self-loop counts), or None. Iterative, so
    a long alias chain cannot exhaust the stack; nodes are visited in sorted order so the same
    graph always reports the same cycle."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for start in sorted(graph):
        if start in state:
            continue
        path: list[str] = [start]
        state[start] = 1
        pending = [iter(graph.get(start, ()))]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                pending.append(iter(graph.get(nxt, ())))
    return None
