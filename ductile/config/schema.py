"""The typed configuration the rest of the gateway consumes.

`config.load` turns YAML into these dataclasses after include/merge, defaults and validation.
Durations are float seconds. Paths are absolute (resolved against the root config's directory).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ductile.config.accounts import AccountConf
from ductile.config.relay import RelayConfig
from ductile.config.state import StateConfig
# RetryConf is defined beside the relay config (a relay instance has one too, and relay.py cannot
# import this module, which imports it); re-exported here, beside the plugin config that uses it.
from ductile.config.relay import RetryConf as RetryConf
from ductile.config.tls import TlsConfig
from ductile.config.webhooks import WebhooksConfig

DEFAULT_TIMEOUTS: dict[str, float] = {"poll": 60.0, "handle": 120.0, "health": 10.0, "init": 30.0}
OTHER_COMMAND_TIMEOUT = 60.0


#: The plugin name of the synthetic job a `relay:` step runs as (router.dsl.RELAY_PLUGIN).
RELAY_JOB = "core.relay"


#: The default of `service.max_outstanding_jobs`: how many jobs (queued or running) may be
#: outstanding before ingress refuses new work (docs/operator.md, "Backpressure").
DEFAULT_MAX_OUTSTANDING_JOBS = 10_000


def default_max_workers() -> int:
    return max(1, (os.cpu_count() or 1) - 1)


@dataclass(frozen=True)
class BreakerConf:
    threshold: int = 3
    reset_after: float = 1800.0


@dataclass(frozen=True)
class ScheduleConf:
    """One `plugins.<name>.schedules[]` entry. Issue 6 deepens validation and firing; boot only
    needs the id and command to check them against the manifest."""

    id: str = "default"
    command: str = "poll"
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PluginConf:
    name: str
    enabled: bool = False
    uses: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    retry: RetryConf = field(default_factory=RetryConf)
    timeouts: dict[str, float] = field(default_factory=dict)
    circuit_breaker: BreakerConf = field(default_factory=BreakerConf)
    max_outstanding_polls: int = 1
    # None means "not set by the operator": unsafe plugins then run serially.
    parallelism: int | None = None
    # Ingress backpressure for this plugin alone (>= 1); None: only the global bound applies.
    max_outstanding_jobs: int | None = None
    notify_on_complete: bool = False
    schedules: tuple[ScheduleConf, ...] = ()
    # The vault principal whose granted secrets this plugin receives (default: its own name).
    vault_principal: str = ""
    # Fail the job closed when the vault cannot compose secrets for the principal.
    requires_vault: bool = False
    # The `accounts:` entry this plugin drops to ("": `default` when defined, else none).
    run_as: str = ""

    @property
    def principal(self) -> str:
        return self.vault_principal or self.name

    def timeout_for(self, command: str) -> float:
        """The operator's per-command timeout, else the documented default."""
        value = self.timeouts.get(command)
        if value:
            return value
        return DEFAULT_TIMEOUTS.get(command, OTHER_COMMAND_TIMEOUT)


@dataclass(frozen=True)
class ApiToken:
    """One `api.auth.tokens[]` entry. In the config, `token` is always empty (a literal token is
    refused at load: API secrets live in the vault); boot resolves `secret_ref` and hands the
    API a copy with `token` filled in, which never goes back into the Config or a snapshot."""

    token: str = ""
    scopes: tuple[str, ...] = ()
    name: str = ""
    secret_ref: str = ""


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = False
    listen: str = "127.0.0.1:8080"
    tokens: tuple[ApiToken, ...] = ()
    max_concurrent_sync: int = 10
    max_sync_timeout: float = 300.0
    allowed_origins: tuple[str, ...] = ()
    max_body_size: int = 1024 * 1024
    # The unix socket of the management-only posture; "" means beside the state database.
    management_socket: str = ""
    # `api.tls`: serve HTTPS with this certificate and key (absolute paths); None: plain HTTP.
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class SecretsConfig:
    """`secrets:` (root file only): where the vault and its key live, as written (interpolated,
    `~` expanded, not yet resolved; "" means the default ladder of docs/vault.md)."""

    vault_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class PipelineSource:
    """One raw entry of a `pipelines:` list and the config file that held it (pipelines are
    collected from every file, not merged, so refusals can name the file)."""

    file: str
    index: int
    raw: Any


@dataclass(frozen=True)
class AdmissionConfig:
    """`service.admission`: the switches that let boot refuse what an operator asked it to
    guard. All off by default; `service.strict_mode: true` (deprecated) turns all of them on
    when no `admission` block is given."""

    verify_integrity_on_boot: bool = False  # the `.checksums` seal must hold (gate integrity_verified)
    fail_on_drift: bool = False  # with the seal: a warning (an unsealed file, no seal) refuses
    validate_config_on_boot: bool = False  # the doctor and strict decode must pass
    require_api_auth: bool = False  # an enabled API needs a token (or the management posture)
    fail_on_sidedoor: bool = False  # privilege separation: an account's side door refuses

    @classmethod
    def all_on(cls) -> AdmissionConfig:
        return cls(True, True, True, True, True)


ADMISSION_SWITCHES = ("verify_integrity_on_boot", "fail_on_drift", "validate_config_on_boot",
                      "require_api_auth", "fail_on_sidedoor")


@dataclass(frozen=True)
class ServiceConfig:
    name: str = "ductile"
    tick_interval: float = 60.0
    log_level: str = "info"
    log_format: str = "json"
    dedupe_ttl: float = 86400.0
    job_log_retention: float = 30 * 86400.0
    job_queue_retention: float = 86400.0
    job_transitions_retention: float = 30 * 86400.0
    job_attempts_retention: float = 30 * 86400.0
    breaker_transitions_retention: float = 90 * 86400.0
    max_workers: int = field(default_factory=default_max_workers)
    hook_max_depth: int = 4
    # The ceiling on the route depth of a whole chain of pipelines that trigger each other;
    # each pipeline run also has its own budget (`max_depth`, else its longest path).
    max_route_depth: int = 32
    # Ingress backpressure: outstanding jobs (queued or running) beyond which new work from
    # outside is refused with a retryable answer (>= 1).
    max_outstanding_jobs: int = DEFAULT_MAX_OUTSTANDING_JOBS
    plugin_env_passthrough: tuple[str, ...] = ()
    strict_mode: bool = False
    allow_symlinks: bool = False
    unconfined: bool = False
    shutdown_grace: float = 30.0
    # The resolved admission switches (from `admission`, else `strict_mode`, else all off).
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)


@dataclass(frozen=True)
class SourceFile:
    """A YAML file that contributed to the config, with the exact bytes read.

    `display` is the short name messages use (`conf.d/x.yaml`), and `document` the file's own
    parsed document (after `${VAR}`), so a finding about a dotted key can name the file that
    holds it (`ductile/config/origin.py`). Neither takes part in equality.
    """

    path: str
    data: bytes
    display: str = field(default="", compare=False)
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Config:
    service: ServiceConfig
    state_path: str
    api: ApiConfig
    plugin_roots: tuple[str, ...]
    plugins: dict[str, PluginConf]
    config_path: str  # the root config file (absolute)
    config_dir: str  # its directory; relative paths resolve here
    source: str  # explicit | env:DUCTILE_CONFIG_DIR | auto-discovered
    source_files: tuple[SourceFile, ...] = ()
    secrets: SecretsConfig = field(default_factory=SecretsConfig)
    # `accounts:` (root file only): the OS accounts plugins drop to (config/accounts.py).
    accounts: dict[str, AccountConf] = field(default_factory=dict)
    pipelines: tuple[PipelineSource, ...] = ()
    webhooks: WebhooksConfig = field(default_factory=lambda: WebhooksConfig(None, ()))
    # `instances:` and `remote_ingress:` (config/relay.py), decoded after the merge.
    relay: RelayConfig = field(default_factory=RelayConfig)
    # `state:` beyond its path: the backend and, for PostgreSQL, the server and node settings.
    state: StateConfig = field(default_factory=StateConfig)
    # The merged document after interpolation, for snapshots and later issues (pipelines, ...).
    raw: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def plugin(self, name: str) -> PluginConf:
        """The operator config for `name`, or defaults for a discovered-but-unconfigured plugin.

        `core.relay`, the synthetic job of a pipeline's `relay:` step, is enqueued with as many
        attempts as the most patient enabled instance allows; the dispatcher then holds each
        job to its own instance's `retry` (attempts and backoff)."""
        found = self.plugins.get(name)
        if found is not None:
            return found
        if name == RELAY_JOB:
            attempts = [i.retry.max_attempts for i in self.relay.instances if i.enabled]
            if attempts:
                return PluginConf(name=name, retry=RetryConf(max_attempts=max(attempts)))
        return PluginConf(name=name)
