"""Load a config: read, env files, `${VAR}`, YAML, `include:` + merge, `~`, defaults, typed values.

Long (about 650 lines): the include session and the per-file typed decoding share the file each
value came from, which every error message names; the YAML rules themselves live in
`ductile/yamldoc.py`.

Order: for each file, read its bytes, load its `environment_vars.include` files,
interpolate `${VAR}` over the whole text, parse YAML; the root document is the base and each
include is merged in depth-first (a file's own includes right after it, so they override it).
Then `~` expansion, defaults, `state.path` and `plugin_roots` made absolute against the root
file's directory, and conversion into the dataclasses of `schema.py`.

Types are checked strictly *per file*, before merging, so an error names the file that holds the
bad value (`plugins.yaml: plugins.echo.retry.max_attempts: expected an integer, got "two"`).
Unknown keys do not fail the load; they become `Config.warnings` (Go's strict decode).
Nothing here mutates `os.environ` or any module state: a load is a function of files + environ.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ductile.config.accounts import AccountConf, decode_accounts
from ductile.config.envfile import expand_home, load_env_includes
from ductile.config.interpolate import interpolate
from ductile.config.merge import ignored_include_keys, merge_config
from ductile.config.resolve import SOURCE_EXPLICIT, config_file_for
from ductile.config.schema import (
    ADMISSION_SWITCHES,
    DEFAULT_MAX_OUTSTANDING_JOBS,
    DEFAULT_TIMEOUTS,
    AdmissionConfig,
    ApiConfig,
    ApiToken,
    BreakerConf,
    Config,
    PipelineSource,
    PluginConf,
    RetryConf,
    ScheduleConf,
    SecretsConfig,
    ServiceConfig,
    SourceFile,
)
from ductile.config.validate import validate_config
from ductile.config.seal import check_scope_file
from ductile.config.reader import ConfigFile as _File
from ductile.config.reader import Reader as _Reader
from ductile.config.relay import RelayConfig, decode_relay
from ductile.config.state import STATE_KEYS, StateConfig, decode_state
from ductile.config.tls import TlsConfig, decode_tls
from ductile.config.webhooks import WebhooksConfig, decode_webhooks
from ductile.config.describe import describe as _describe
from ductile.errors import ConfigError
from ductile.yamldoc import YamlProblem, load_yaml

DEFAULT_STATE_PATH = "./data/state.db"

# Keys a section understands. DEFERRED keys are Ductile keys whose feature is not built yet:
# they are kept in Config.raw (merged) but reported, so nobody thinks they are in effect.
TOP_KEYS = frozenset({"include", "environment_vars", "service", "state", "database", "api",
                      "plugin_roots", "plugins", "secrets", "pipelines", "webhooks", "accounts",
                      "instances", "remote_ingress"})
TOP_DEFERRED = frozenset({"tcc_paths", "routes"})
SERVICE_DURATIONS = ("tick_interval", "dedupe_ttl", "job_log_retention", "job_queue_retention",
                     "job_transitions_retention", "job_attempts_retention",
                     "breaker_transitions_retention", "shutdown_grace")
SERVICE_STRINGS = ("name", "log_level", "log_format")
SERVICE_INTS = ("max_workers", "hook_max_depth", "max_route_depth")
SERVICE_BOOLS = ("strict_mode", "allow_symlinks", "unconfined")
SERVICE_KEYS = frozenset({*SERVICE_DURATIONS, *SERVICE_STRINGS, *SERVICE_INTS, *SERVICE_BOOLS,
                          "plugin_env_passthrough", "admission", "max_outstanding_jobs"})
SERVICE_DEFERRED: frozenset[str] = frozenset()
API_KEYS = frozenset({"enabled", "listen", "auth", "max_concurrent_sync", "max_sync_timeout",
                      "allowed_origins", "max_body_size", "management_socket", "tls"})
SECRETS_KEYS = frozenset({"vault_file", "key_file"})
TOKEN_KEYS = frozenset({"token", "scopes", "name", "secret_ref"})
PLUGIN_KEYS = frozenset({"enabled", "uses", "config", "retry", "timeouts", "circuit_breaker",
                         "max_outstanding_polls", "parallelism", "notify_on_complete",
                         "schedules", "schedule", "vault_principal", "requires_vault",
                         "run_as", "max_outstanding_jobs"})
PLUGIN_DEFERRED: frozenset[str] = frozenset()
SCHEDULE_STRINGS = ("id", "command", "every", "cron", "at", "after", "catch_up", "if_running",
                    "only_between", "timezone")
SCHEDULE_KEYS = frozenset({*SCHEDULE_STRINGS, "jitter", "payload", "not_on",
                           "preferred_window"})



def load_config(
    path: str, *, source: str = SOURCE_EXPLICIT, environ: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate: the Config boot uses, or ConfigError naming file, key and reason."""
    cfg = parse_config(path, source=source, environ=environ)
    validate_config(cfg)
    return cfg


def parse_config(
    path: str, *, source: str = SOURCE_EXPLICIT, environ: Mapping[str, str] | None = None,
    verify_scope_seals: bool = True, overrides: Mapping[str, bytes] | None = None,
) -> Config:
    """Everything but structural validation (boot reports load and validation as two gates).

    `path` is the root config file or its directory; `environ` defaults to the process
    environment and is only read. `verify_scope_seals=False` is for `config lock` alone: it
    must load the config whose changed scope files it is about to seal. `overrides` maps a
    file's real path to the bytes to read instead of it: `config set` validates an edit with
    the files around it before anything is written.
    """
    root = config_file_for(path)
    session = _Session(
        config_dir=os.path.dirname(root), env=dict(os.environ if environ is None else environ),
        verify_scope_seals=verify_scope_seals,
        overrides={os.path.realpath(k): v for k, v in (overrides or {}).items()},
    )
    try:
        merged = session.load_tree(root)
        return session.build(merged, root=root, source=source)
    except RecursionError as exc:
        raise ConfigError(
            f"{session.display(root)}: the config is nested too deeply to load", path=root
        ) from exc


# --------------------------------------------------------------------------- reading files


@dataclass
class _Session:
    """The state of one load call: env gathered so far, files seen, warnings."""

    config_dir: str
    env: dict[str, str]
    visited: set[str] = field(default_factory=set)
    sources: list[SourceFile] = field(default_factory=list)
    pipelines: list[PipelineSource] = field(default_factory=list)
    webhook_files: list[str] = field(default_factory=list)
    relay_files: list[str] = field(default_factory=list)  # files with instances/remote_ingress
    warnings: list[str] = field(default_factory=list)
    verify_scope_seals: bool = True  # an included webhooks.yaml/tokens.yaml must match its seal
    overrides: dict[str, bytes] = field(default_factory=dict)  # real path -> bytes to read

    def display(self, path: str) -> str:
        """`config.yaml`, `conf.d/x.yaml` inside the config dir; the absolute path outside it."""
        try:
            inside = os.path.commonpath([self.config_dir, path]) == self.config_dir
        except ValueError:
            inside = False
        return os.path.relpath(path, self.config_dir) if inside else path

    def load_tree(self, root: str) -> dict[str, Any]:
        """The root document with every include merged in, depth-first."""
        self.visited.add(os.path.realpath(root))
        file, doc = self.read_document(root, is_root=True)
        return self._merge_includes(file, doc, dict(doc))

    def read_document(self, path: str, *, is_root: bool) -> tuple[_File, dict[str, Any]]:
        """Read, env-include, interpolate, parse and type-check one file."""
        file = _File(path, self.display(path))
        data = self.overrides.get(os.path.realpath(path))
        if data is None:
            data = _read_bytes(file)
        if not is_root and self.verify_scope_seals:
            check_scope_file(path, data, display=file.display)
        text = _decode_text(file, data)
        self._load_env_files(file, self._env_declarations(text, file))
        expanded = interpolate(text, self.env)
        doc = _parse_yaml(expanded, file, interpolated=expanded != text)
        self.sources.append(SourceFile(path=path, data=data, display=file.display, document=doc))
        reader = _Reader(file, self.warnings)
        _decode(reader, doc)
        for index, entry in enumerate(reader.sequence(doc.get("pipelines"), "pipelines")):
            self.pipelines.append(PipelineSource(file=file.display, index=index, raw=entry))
        if doc.get("webhooks") is not None:
            self.webhook_files.append(file.display)
        if doc.get("instances") is not None or doc.get("remote_ingress") is not None:
            self.relay_files.append(file.display)
            # Per file, so a wrong type or unknown key names the file that holds it.
            decode_relay(doc.get("instances"), doc.get("remote_ingress"), file=file.display,
                         warnings=self.warnings)
        if not is_root:
            self._warn_root_only(file, doc)
        return file, doc

    def _env_declarations(self, text: str, file: _File) -> Mapping[str, Any]:
        """The document as far as `environment_vars` is concerned, before interpolation.

        Env files must load before `${VAR}` is expanded, so the file is parsed once for them:
        as written if that parses (`{a: ${X}}` does not: `${` opens a flow map), else after
        interpolating with the variables known so far. A file that parses neither way reports
        its syntax error from the final parse.
        """
        if "environment_vars" not in text:
            return {}
        for candidate in (text, interpolate(text, self.env)):
            try:
                return _parse_yaml(candidate, file, interpolated=False)
            except ConfigError:
                continue
        return {}

    def _load_env_files(self, file: _File, raw_doc: Mapping[str, Any]) -> None:
        section = _Reader(file, []).section(raw_doc.get("environment_vars"), "environment_vars",
                                            frozenset({"include"}))
        entries = _Reader(file, []).str_list(section.get("include"), "environment_vars.include")
        if not entries:
            return
        try:
            self.env = load_env_includes(entries, base_dir=os.path.dirname(file.path),
                                         environ=self.env)
        except ConfigError as exc:
            if exc.key is None:
                raise
            raise ConfigError(f"{file.display}: {exc.message}", path=exc.path,
                              key=exc.key) from exc

    def _warn_root_only(self, file: _File, doc: Mapping[str, Any]) -> None:
        for key in ignored_include_keys(doc):
            if key.rpartition(".")[2] in TOP_DEFERRED | SERVICE_DEFERRED:
                continue  # already reported as not supported
            if key == "pipelines":
                continue  # collected from every file, see read_document
            self.warnings.append(
                f"{file.display}: {key} is read only from the root config file (ignored)"
            )

    def _merge_includes(
        self, file: _File, doc: Mapping[str, Any], merged: dict[str, Any]
    ) -> dict[str, Any]:
        entries = _Reader(file, []).str_list(doc.get("include"), "include")
        for index, entry in enumerate(entries):
            for target in _include_targets(file, index, entry):
                real = os.path.realpath(target)
                if real in self.visited:
                    raise file.error(f"include[{index}]",
                                     f"circular dependency detected: {target}")
                self.visited.add(real)
                child_file, child = self.read_document(target, is_root=False)
                merged = merge_config(merged, child)
                merged = self._merge_includes(child_file, child, merged)
        return merged

    def build(self, merged: dict[str, Any], *, root: str, source: str) -> Config:
        """Tilde expansion, defaults, absolute paths and the typed Config."""
        merged = _expand_tilde(merged, self.env.get("HOME"))
        decoded = _decode(_Reader(_File(root, self.display(root)), []), merged)
        deprecated = admission_warning(merged.get("service"))
        if deprecated is not None:
            self.warnings.append(f"{self.display(root)}: {deprecated}")
        for switch in ADMISSION_SWITCHES:
            if getattr(decoded.service.admission, switch) and switch not in ADMISSION_ENFORCED:
                self.warnings.append(f"{self.display(root)}: service.admission.{switch} is not "
                                     "enforced yet (the gate that would refuse is not built)")
        state = decoded.state_path or decoded.database_path or DEFAULT_STATE_PATH
        return Config(
            service=decoded.service,
            state_path=_absolute(self.config_dir, state),
            state=decoded.state,
            api=_api_paths(decoded.api, self.config_dir),
            plugin_roots=_plugin_roots(decoded.plugin_roots, self.config_dir),
            plugins=decoded.plugins,
            config_path=root,
            config_dir=self.config_dir,
            source=source,
            source_files=tuple(self.sources),
            secrets=decoded.secrets,
            accounts=decoded.accounts,
            pipelines=tuple(self.pipelines),
            webhooks=self._webhooks(merged),
            relay=self._relay(merged),
            raw=merged,
            warnings=tuple(self.warnings),
        )


    def _webhooks(self, merged: Mapping[str, Any]) -> WebhooksConfig:
        """Decoded after the merge, so `listen` in one file and endpoints in another meet;
        errors name the file(s) that hold a `webhooks:` section."""
        label = "+".join(self.webhook_files) or "config"
        decoded = decode_webhooks(merged.get("webhooks"), file=label, warnings=self.warnings)
        return replace(decoded, tls=_tls_paths(decoded.tls, self.config_dir))

    def _relay(self, merged: Mapping[str, Any]) -> RelayConfig:
        """Decoded after the merge, so instances (appended) and peers from every file meet.
        Each file was already decoded on its own (read_document), which reported its unknown
        keys and refused its wrong types; warnings here would repeat those."""
        label = "+".join(self.relay_files) or "config"
        return decode_relay(merged.get("instances"), merged.get("remote_ingress"), file=label,
                            warnings=[])


def _read_bytes(file: _File) -> bytes:
    try:
        with open(file.path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise file.error("", f"failed to read {file.path}: {exc.strerror or exc}") from exc


def _decode_text(file: _File, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise file.error("", f"not valid UTF-8 text (byte offset {exc.start})") from exc


def _parse_yaml(text: str, file: _File, *, interpolated: bool) -> dict[str, Any]:
    """The document as a dict; an empty file is `{}`."""
    note = " (after ${VAR} interpolation)" if interpolated else ""
    try:
        doc = load_yaml(text)
    except YamlProblem as exc:
        if exc.line is None:
            raise file.error("", f"{exc.problem}{note}") from exc
        raise ConfigError(f"{file.display}:{exc.line}:{exc.column}: {exc.problem}{note}",
                          path=file.path, line=exc.line, column=exc.column) from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise file.error("", f"expected a map of config keys at the top level, "
                             f"got {_describe(doc)}")
    return doc


def _include_targets(file: _File, index: int, entry: str) -> list[str]:
    """The files an include entry names: itself, or a directory's `*.yaml` sorted by name."""
    key = f"include[{index}]"
    base = os.path.dirname(file.path)
    target = os.path.normpath(os.path.join(base, entry))
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise file.error(key, f"file not found: {target}\nReferenced from: {base}\n"
                              "Hint: Check the path is correct and the file exists") from exc
    except OSError as exc:
        raise file.error(key, f"failed to access file {target}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        return _directory_yaml_files(file, key, entry, target)
    if not stat.S_ISREG(mode):
        raise file.error(key, f"not a regular file or directory: {target}")
    return [target]


def _directory_yaml_files(file: _File, key: str, entry: str, directory: str) -> list[str]:
    """Non-recursive, `.yaml` only (not `.yml`), sorted by name, as Go ductile does."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ConfigError(
            f"{file.display}: {key} ({entry}): failed to read directory: {exc.strerror or exc}",
            path=file.path, key=key,
        ) from exc
    paths = (os.path.join(directory, name) for name in names if name.endswith(".yaml"))
    return [path for path in paths if os.path.isfile(path)]


def _expand_tilde(merged: dict[str, Any], home: str | None) -> dict[str, Any]:
    """`~/` in the path fields Go expands, after the merge and before defaults."""
    result = dict(merged)
    for section, key in (("state", "path"), ("database", "path"), ("secrets", "key_file"),
                         ("secrets", "vault_file"), ("api", "management_socket")):
        block = result.get(section)
        if isinstance(block, Mapping) and isinstance(block.get(key), str):
            result[section] = {**block, key: expand_home(block[key], home)}
    for key in ("plugin_roots", "tcc_paths"):
        items = result.get(key)
        if isinstance(items, list):
            result[key] = [expand_home(v, home) if isinstance(v, str) else v for v in items]
    for section in ("api", "webhooks"):  # api.tls and webhooks.tls: {cert_file, key_file}
        block = result.get(section)
        tls = block.get("tls") if isinstance(block, Mapping) else None
        if isinstance(block, Mapping) and isinstance(tls, Mapping):
            result[section] = {**block, "tls": {
                key: expand_home(value, home) if isinstance(value, str) else value
                for key, value in tls.items()}}
    return result


def _api_paths(api: ApiConfig, config_dir: str) -> ApiConfig:
    """A relative `api.management_socket` or `api.tls` file resolves against the config dir,
    like state.path."""
    socket = _absolute(config_dir, api.management_socket) if api.management_socket else ""
    return replace(api, management_socket=socket, tls=_tls_paths(api.tls, config_dir))


def _tls_paths(tls: TlsConfig | None, config_dir: str) -> TlsConfig | None:
    if tls is None:
        return None
    return TlsConfig(cert_file=_absolute(config_dir, tls.cert_file),
                     key_file=_absolute(config_dir, tls.key_file))


def _absolute(config_dir: str, path: str) -> str:
    return os.path.normpath(os.path.join(config_dir, path))


def _plugin_roots(roots: Iterable[str], config_dir: str) -> tuple[str, ...]:
    """Trimmed, blank entries dropped, absolute, de-duplicated in order."""
    seen: dict[str, None] = {}
    for root in roots:
        if root.strip():
            seen.setdefault(_absolute(config_dir, root.strip()), None)
    return tuple(seen)


# --------------------------------------------------------------------------- typed decoding


@dataclass(frozen=True)
class _Decoded:
    """A document's supported sections, typed, with service/api/plugin defaults applied."""

    service: ServiceConfig
    api: ApiConfig
    plugins: dict[str, PluginConf]
    plugin_roots: tuple[str, ...]
    state_path: str
    state: StateConfig
    database_path: str
    secrets: SecretsConfig
    accounts: dict[str, AccountConf]


def _decode(r: _Reader, doc: dict[str, Any]) -> _Decoded:
    r.section(doc, "", TOP_KEYS, TOP_DEFERRED)
    r.str_list(doc.get("include"), "include")
    env = r.section(doc.get("environment_vars"), "environment_vars", frozenset({"include"}))
    r.str_list(env.get("include"), "environment_vars.include")
    state = r.section(doc.get("state"), "state", STATE_KEYS)
    database = r.section(doc.get("database"), "database", frozenset({"path"}))
    return _Decoded(
        service=_decode_service(r, doc.get("service")),
        api=_decode_api(r, doc.get("api")),
        plugins=_decode_plugins(r, doc.get("plugins")),
        plugin_roots=r.str_list(doc.get("plugin_roots"), "plugin_roots"),
        state_path=r.string(state.get("path"), "state.path") or "",
        state=decode_state(r, state),
        database_path=r.string(database.get("path"), "database.path") or "",
        secrets=_decode_secrets(r, doc.get("secrets")),
        accounts=decode_accounts(r, doc.get("accounts")),
    )


def _decode_secrets(r: _Reader, value: Any) -> SecretsConfig:
    m = r.section(value, "secrets", SECRETS_KEYS)
    if "age_key_file" in m:
        r.warnings.append(
            f"{r.file.display}: secrets.age_key_file names an age identity; this gateway's vault "
            "uses a pynacl key: set secrets.key_file (see docs/vault.md)"
        )
    return SecretsConfig(
        vault_file=r.string(m.get("vault_file"), "secrets.vault_file") or "",
        key_file=r.string(m.get("key_file"), "secrets.key_file") or "",
    )


def _decode_service(r: _Reader, value: Any) -> ServiceConfig:
    """Zero or absent values take the default, as Go's applyDefaults does."""
    m = r.section(value, "service", SERVICE_KEYS, SERVICE_DEFERRED)
    values: dict[str, Any] = {}
    for name in SERVICE_STRINGS:
        values[name] = r.string(m.get(name), f"service.{name}")
    for name in SERVICE_DURATIONS:
        values[name] = r.duration(m.get(name), f"service.{name}")
    for name in SERVICE_INTS:
        values[name] = r.integer(m.get(name), f"service.{name}")
    for name in SERVICE_BOOLS:
        values[name] = r.boolean(m.get(name), f"service.{name}")
    values["plugin_env_passthrough"] = r.str_list(m.get("plugin_env_passthrough"),
                                                  "service.plugin_env_passthrough")
    values["admission"] = _decode_admission(r, m, bool(values["strict_mode"]))
    # Not "zero means default": 0 would read as "no bound" or "refuse everything", so it is
    # refused (absent takes the default).
    values["max_outstanding_jobs"] = outstanding_bound(
        r, m.get("max_outstanding_jobs"), "service.max_outstanding_jobs",
        absent=f"leave it out for the default {DEFAULT_MAX_OUTSTANDING_JOBS}")
    return ServiceConfig(**{name: v for name, v in values.items() if v})


#: The admission switches some gate enforces. A switch set but not listed here is warned at every
#: load, so no operator believes a protection is on that is not. `require_api_auth` is always in
#: force: the gate api_has_tokens refuses an enabled API without a token whatever the switch says.
ADMISSION_ENFORCED: frozenset[str] = frozenset({
    "require_api_auth", "validate_config_on_boot", "verify_integrity_on_boot", "fail_on_drift",
    "fail_on_sidedoor"})
ADMISSION_STRICT_DEPRECATED = ("service.strict_mode is deprecated; replace it with an explicit "
                               "service.admission block")
ADMISSION_STRICT_IGNORED = ("service.strict_mode is deprecated and ignored because "
                            "service.admission is set; remove strict_mode")


def admission_warning(service: Any) -> str | None:
    """The deprecation warning a use of `service.strict_mode` earns, if any."""
    if not isinstance(service, dict) or service.get("strict_mode") not in (True, "true", "yes",
                                                                            "on", "True"):
        return None
    return ADMISSION_STRICT_IGNORED if "admission" in service else ADMISSION_STRICT_DEPRECATED


def _decode_admission(r: _Reader, service: dict[str, Any], strict_mode: bool) -> AdmissionConfig:
    """`service.admission` when present (authoritative); else `strict_mode: true` turns every
    switch on; else all off. Either use of strict_mode is warned (the Go original's wording)."""
    if "admission" not in service:
        return AdmissionConfig.all_on() if strict_mode else AdmissionConfig()
    m = r.section(service.get("admission"), "service.admission", frozenset(ADMISSION_SWITCHES))
    return AdmissionConfig(**{name: bool(r.boolean(m.get(name), f"service.admission.{name}"))
                              for name in ADMISSION_SWITCHES})


def _decode_api(r: _Reader, value: Any) -> ApiConfig:
    m = r.section(value, "api", API_KEYS)
    auth = r.section(m.get("auth"), "api.auth", frozenset({"tokens"}))
    entries = r.sequence(auth.get("tokens"), "api.auth.tokens")
    defaults = ApiConfig()
    return ApiConfig(
        enabled=bool(r.boolean(m.get("enabled"), "api.enabled")),
        listen=r.string(m.get("listen"), "api.listen") or defaults.listen,
        tokens=tuple(_decode_token(r, entry, f"api.auth.tokens[{i}]")
                     for i, entry in enumerate(entries)),
        max_concurrent_sync=(r.integer(m.get("max_concurrent_sync"), "api.max_concurrent_sync")
                             or defaults.max_concurrent_sync),
        max_sync_timeout=(r.duration(m.get("max_sync_timeout"), "api.max_sync_timeout")
                          or defaults.max_sync_timeout),
        allowed_origins=r.str_list(m.get("allowed_origins"), "api.allowed_origins"),
        max_body_size=(r.integer(m.get("max_body_size"), "api.max_body_size")
                       or defaults.max_body_size),
        management_socket=r.string(m.get("management_socket"), "api.management_socket") or "",
        tls=decode_tls(r, m.get("tls"), "api.tls"),
    )


def _decode_token(r: _Reader, value: Any, key: str) -> ApiToken:
    """API tokens are vault-only: a literal `token:` is refused here, in the file that holds it,
    so a secret never sits in a config file (or in a snapshot of one)."""
    if not isinstance(value, dict):
        raise r.fail(key, 'a map such as {secret_ref: api-token, scopes: ["*"]}', value)
    m = r.section(value, key, TOKEN_KEYS)
    if m.get("token") not in (None, ""):
        raise r.file.error(
            key, "a literal token value is not allowed: API secrets live in the vault; "
            "mint one (ductile vault set --name api-token ...) and use secret_ref: api-token "
            "(see docs/vault.md, the credential ladder)")
    ref = r.string(m.get("secret_ref"), f"{key}.secret_ref") or ""
    if not ref.strip():
        raise r.file.error(key, "secret_ref is required (API tokens are vault-only; "
                                "see docs/vault.md)")
    return ApiToken(
        scopes=r.str_list(m.get("scopes"), f"{key}.scopes"),
        name=r.string(m.get("name"), f"{key}.name") or "",
        secret_ref=ref.strip(),
    )


def _decode_plugins(r: _Reader, value: Any) -> dict[str, PluginConf]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise r.fail("plugins", "a map of plugin name to settings", value)
    plugins: dict[str, PluginConf] = {}
    for name, stanza in value.items():
        if not isinstance(name, str) or not name:
            raise r.fail("plugins", "plugin names to be non-empty strings", name)
        plugins[name] = _decode_plugin(r, name, stanza)
    return plugins


def _decode_plugin(r: _Reader, name: str, value: Any) -> PluginConf:
    key = f"plugins.{name}"
    m = r.section(value, key, PLUGIN_KEYS, PLUGIN_DEFERRED)
    return PluginConf(
        name=name,
        enabled=bool(r.boolean(m.get("enabled"), f"{key}.enabled")),
        uses=r.string(m.get("uses"), f"{key}.uses") or "",
        config=r.json_map(m.get("config"), f"{key}.config"),
        retry=_decode_retry(r, m.get("retry"), f"{key}.retry"),
        timeouts=_decode_timeouts(r, m.get("timeouts"), f"{key}.timeouts"),
        circuit_breaker=_decode_breaker(r, m.get("circuit_breaker"), f"{key}.circuit_breaker"),
        max_outstanding_polls=(r.integer(m.get("max_outstanding_polls"),
                                     f"{key}.max_outstanding_polls") or 1),
        # 0 means "not set" in Go too; None lets the dispatcher tell unset from chosen.
        parallelism=r.integer(m.get("parallelism"), f"{key}.parallelism") or None,
        max_outstanding_jobs=outstanding_bound(
            r, m.get("max_outstanding_jobs"), f"{key}.max_outstanding_jobs",
            absent="leave it out to bound this plugin by service.max_outstanding_jobs only"),
        notify_on_complete=bool(r.boolean(m.get("notify_on_complete"),
                                       f"{key}.notify_on_complete")),
        vault_principal=r.string(m.get("vault_principal"), f"{key}.vault_principal") or "",
        requires_vault=bool(r.boolean(m.get("requires_vault"), f"{key}.requires_vault")),
        run_as=(r.string(m.get("run_as"), f"{key}.run_as") or "").strip(),
        schedules=tuple(_decode_schedule(r, entry, f"{key}.schedules[{i}]")
                        for i, entry in enumerate(r.sequence(m.get("schedules"),
                                                         f"{key}.schedules"))),
    )


def outstanding_bound(r: _Reader, value: Any, key: str, *, absent: str) -> int | None:
    """A `max_outstanding_jobs` value: an integer >= 1, or None when absent (`absent` says
    what leaving it out means, for the refusal)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise r.error(key, f"expected an integer of 1 or more (the most jobs queued or running "
                           f"at once before new work is refused), got {_describe(value)}; "
                           f"{absent}")
    return value


def _decode_retry(r: _Reader, value: Any, key: str) -> RetryConf:
    """An absent block is the default block; a missing field in a given block is its default."""
    m = r.section(value, key, frozenset({"max_attempts", "backoff_base"}))
    attempts = r.integer(m.get("max_attempts"), f"{key}.max_attempts")
    backoff = r.duration(m.get("backoff_base"), f"{key}.backoff_base")
    defaults = RetryConf()
    return RetryConf(
        max_attempts=defaults.max_attempts if attempts is None else attempts,
        backoff_base=defaults.backoff_base if backoff is None else backoff,
    )


def _decode_breaker(r: _Reader, value: Any, key: str) -> BreakerConf:
    m = r.section(value, key, frozenset({"threshold", "reset_after"}))
    threshold = r.integer(m.get("threshold"), f"{key}.threshold")
    reset_after = r.duration(m.get("reset_after"), f"{key}.reset_after")
    defaults = BreakerConf()
    return BreakerConf(
        threshold=defaults.threshold if threshold is None else threshold,
        reset_after=defaults.reset_after if reset_after is None else reset_after,
    )


def _decode_timeouts(r: _Reader, value: Any, key: str) -> dict[str, float]:
    """Absent: the default block. Given: per-command keys (any command name); commands left
    out fall back to the defaults in `PluginConf.timeout_for`."""
    if value is None:
        return dict(DEFAULT_TIMEOUTS)
    if not isinstance(value, dict):
        raise r.fail(key, "a map of command name to duration", value)
    timeouts: dict[str, float] = {}
    for command, raw in value.items():
        if not isinstance(command, str) or not command:
            raise r.fail(key, "command names as keys", command)
        seconds = r.duration(raw, f"{key}.{command}")
        if seconds is not None:
            timeouts[command] = seconds
    return timeouts


def _decode_schedule(r: _Reader, value: Any, key: str) -> ScheduleConf:
    """Types only; the rules between fields are validation's (and the scheduler's) business."""
    if not isinstance(value, dict):
        raise r.fail(key, "a map such as {every: 5m}", value)
    m = r.section(value, key, SCHEDULE_KEYS)
    for name in SCHEDULE_STRINGS:
        r.string(m.get(name), f"{key}.{name}")
    r.duration(m.get("jitter"), f"{key}.jitter")
    r.sequence(m.get("not_on"), f"{key}.not_on")
    payload = r.json_map(m.get("payload"), f"{key}.payload")
    raw = dict(m)
    if "payload" in raw:
        raw["payload"] = payload
    return ScheduleConf(id=m.get("id") or "default", command=m.get("command") or "poll", raw=raw)
