"""The exceptions Ductile raises, and when.

Every error a caller handles differently has its own class; each carries the file, key, plugin or
job it is about so the message can tell an operator what to fix.

    DuctileError
    ├── InputError (also ValueError)    a client's request is refused (4xx); message = the JSON
    │   │                               `error`. Each plane defines its own, beside its parser:
    │   ├── JsonInputError          a body is not JSON the gateway can carry (ductile/jsonbody)
    │   │   └── JsonSyntaxError     not one JSON document at all
    │   ├── BodyError               an API body or query parameter (planes/api/bodies)
    │   ├── EventFilterError        a GET /events query parameter or Last-Event-ID (events/filters)
    │   ├── AuthError               no valid token (401) or a missing scope (403)
    │   ├── ApiError                any other refusal of an API route, with its status
    │   ├── VaultBodyError          a /vault/* body (never echoes a value)
    │   ├── PayloadError            a signed webhook body the gateway cannot carry
    │   ├── UnsupportedContentType  a webhook body neither JSON nor a form (415)
    │   └── SignatureFormatError    a webhook signature header not in its scheme's format
    ├── ValueProblem (also ValueError)  one value in a file or a request is malformed
    │   ├── DurationError           not a duration (`30s`, `1h30m`, `7d`)
    │   ├── SizeError               not a byte size (`512KB`, `2MB`)
    │   ├── ScheduleError           a schedule entry is invalid or can never fire
    │   ├── GoTimeError             a Go state row's time is not RFC3339 (ductile/migrate)
    │   ├── PayloadEnvError         a payload value cannot be a DUCTILE_PAYLOAD_* variable
    │   └── YamlProblem             a YAML document does not load (carries line/column)
    ├── ConfigError                 config cannot be found, parsed or validated (file/key/line)
    │   ├── ConfigNotFound          no config directory or file at any resolution step
    │   ├── IntegrityError          the `.checksums` seal is missing, unreadable, writable by
    │   │                           others, unparsable or of another version (`kind` says which)
    │   ├── ConfigPathError         a dot path (`service.max_workers`) is malformed or names no key
    │   ├── TlsMaterialError        a listener's TLS certificate or key cannot be served (missing,
    │   │                           unreadable, readable by others, not PEM, not a pair)
    │   └── ConfigEditRefused       `config set` cannot edit the line safely, or the result fails
    ├── ManifestError               a plugin's manifest.yaml is invalid
    ├── DiscoveryError              plugin roots / trust checks / aliases refuse the plugin set
    ├── ProtocolError               a plugin's stdout is not one valid protocol v2 response
    ├── PluginSpawnError            a plugin could not be started or waited for
    │   └── AccountDropError        the kernel refused the drop to the plugin's account
    ├── StoreError                  the store (SQLite or PostgreSQL) refused an operation
    │   ├── StoreUnavailable        the database cannot be written now (disk full, I/O, locked)
    │   ├── InvalidTransition       a job status change that states/job.yaml does not allow
    │   ├── DedupeDropped           an enqueue was dropped by dedupe
    │   ├── SourceEventConflict     a routed event was already enqueued for that target
    │   ├── JobNotFound             an operator verb (cancel, retry, rerun) named no job
    │   ├── JobStateConflict        an operator verb does not apply to the job's status
    │   ├── NodeFenced              a peer declared this gateway's node life dead (PostgreSQL):
    │   │                           its claims and outcomes are refused; it must stop
    │   ├── LeadershipLost          the scheduler lease moved to another node: a stale
    │   │                           leader's fire or schedule write is refused
    │   ├── SchemaMismatch          an existing database lacks tables/columns we need
    │   │   ├── SchemaTooNew        its schema version is newer than this release knows
    │   │   └── SchemaOutdated      a reader met an older schema version (the gateway migrates)
    │   └── MigrationFailed         a schema migration step failed; the file was left unchanged
    ├── LockError                   the PID lock is held by another instance
    ├── Overloaded                  ingress backpressure: outstanding jobs are at a bound
    │                               (`service.max_outstanding_jobs` or a plugin's); retry later
    ├── MigrationRefused            `ductile migrate from-go` refused an input (wrong age
    │                               identity, damaged or unknown state database); nothing written
    ├── BackupError                 a backup archive cannot be written or read (exists, I/O)
    │   └── RestoreRefused          an archive is refused before anything is written: an unsafe
    │                               member (absolute, `..`, link), a file the seal or the
    │                               manifest does not vouch for, or files already in place
    ├── GatewayUnreachable          `system watch` got no API answer at all (refused, TLS, timeout)
    ├── RelaySendError              a relay envelope was not accepted; `retryable` says if a
    │                               later attempt may be (relay/sender)
    ├── BootRefused                 a boot gate refused; carries the gate name (exit 78)
    ├── ReloadRefused               a reload was refused; the old runtime keeps serving
    ├── SchedulerError              the scheduler or a circuit breaker refused an operation
    │   ├── InvalidBreakerChange    a breaker change that states/breaker.yaml does not allow
    │   └── UnknownSchedule         pause/resume named no configured schedule
    ├── RouterError                 a pipeline cannot be compiled or routed
    │   ├── PipelineCompileError    `pipelines:` refused at load (every problem listed)
    │   ├── ConditionError          an `if:` condition is malformed
    │   │   └── ConditionEvalError  a condition met a value of the wrong type at run time
    │   ├── TemplateError           a `with:` template is malformed or cannot be filled
    │   ├── BaggageError            a baggage claim cannot be satisfied
    │   │   └── ContextTooLarge     the accumulated context is over 1 MiB (also a StoreError)
    │   └── RoutingError            an event cannot be routed (no type, not an object, ...)
    └── VaultError                  the vault refused an operation
        ├── VaultKeyError           no usable key (missing, unreadable, readable by others)
        ├── VaultFileError          the vault file is damaged or not ours
        │   └── VaultWrongKey       the file is sealed to another key
        ├── VaultExists             init over an existing vault
        ├── VaultModifiedExternally the file changed on disk since it was loaded
        ├── VaultPolicyError        an operation the vault's rules forbid
        │   └── VaultReservedEntity `core` / `core-admin-token` are reserved
        └── VaultPrincipalUnavailable a principal cannot receive secrets (revoked, unknown)
"""

from __future__ import annotations


class DuctileError(Exception):
    """Base class of every error Ductile raises on purpose."""


class InputError(DuctileError, ValueError):
    """A client's request is refused: the message is the JSON `error` it gets, naming the field,
    parameter or header and what is allowed. The planes define the subclasses next to their
    parsers (see the tree above); this base is what a plane's boundary tells apart from a bug.
    """


class ValueProblem(DuctileError, ValueError):
    """One value is malformed: the message names the value and shows a valid one. Raised by the
    pure parsers (durations, sizes, schedules, YAML); the caller wraps it with the file and key
    it came from (usually as a ConfigError). Also a ValueError, as parsers' errors are."""


class DurationError(ValueProblem):
    """A string is not a duration; the message says what a valid one looks like."""


class SizeError(ValueProblem):
    """A value is not a byte size; the message names the value and shows valid ones."""


class ScheduleError(ValueProblem):
    """A schedule entry is invalid or has no reachable fire; the message names the field."""


class YamlProblem(ValueProblem):
    """A YAML document does not load: `problem` says why, `line`/`column` (1-based) where."""

    def __init__(self, problem: str, line: int | None = None, column: int | None = None):
        super().__init__(problem if line is None else f"{line}:{column}: {problem}")
        self.problem = problem
        self.line = line
        self.column = column


class ConfigError(DuctileError):
    """The configuration cannot be used.

    `path` names the file (when known), `key` the dotted config key, `line`/`column` the YAML
    position (1-based) for syntax errors.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.key = key
        self.line = line
        self.column = column


class ConfigNotFound(ConfigError):
    """No config was found at any resolution step (--config, env, ~/.config, /etc)."""


class IntegrityError(ConfigError):
    """The integrity seal (`<config dir>/.checksums`) cannot be used. `kind` is `missing`,
    `unreadable`, `permissions` (writable by group or others), `unparsable` or `version`, so a
    caller can tell an absent seal (maybe fine) from a broken one (never fine); `path` names
    the seal. A ConfigError because a scope file's seal is checked while the config loads."""

    def __init__(self, message: str, *, path: str, kind: str) -> None:
        super().__init__(message, path=path)
        self.kind = kind


class TlsMaterialError(ConfigError):
    """`api.tls` or `webhooks.tls` names files that cannot be served: `key` is the config key
    (`api.tls.key_file`) and `path` the file; the message says what to fix (gate
    tls_material_loadable)."""


class ConfigPathError(ConfigError):
    """A dot path (`plugins.echo.retry.max_attempts`) is malformed, or names a key the config
    does not have; the message names the first missing segment and the keys that exist there."""


class ConfigEditRefused(ConfigError):
    """`config set` will not write: the key sits in flow style, a multi-line value, an anchor
    or a YAML merge, or the edited config would not load, validate or take effect. The file is
    left exactly as it was."""


class ManifestError(DuctileError):
    """A manifest.yaml failed validation; `path` is the manifest file."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class DiscoveryError(DuctileError):
    """Plugin discovery cannot produce a trusted plugin set (missing root, bad alias, ...)."""


class ProtocolError(DuctileError):
    """A plugin's response is not exactly one valid protocol v2 JSON object."""


class PluginSpawnError(DuctileError):
    """A plugin process could not be started or waited for."""


class AccountDropError(PluginSpawnError):
    """The kernel refused to switch to the plugin's account (uid, gid or groups). Terminal: the
    same drop would be refused again, so the job is never retried."""


class StoreError(DuctileError):
    """The SQLite store refused an operation."""


class StoreUnavailable(StoreError):
    """The database cannot take the operation right now (disk full, I/O error, read-only,
    busy). Nothing was written; the same operation may succeed later."""


class InvalidTransition(StoreError):
    """A job status change that `states/job.yaml` does not allow."""

    def __init__(self, job_id: str, from_status: str | None, to_status: str) -> None:
        super().__init__(
            f"job {job_id}: status change {from_status or 'none'} -> {to_status} is not allowed"
        )
        self.job_id = job_id
        self.from_status = from_status
        self.to_status = to_status


class DedupeDropped(StoreError):
    """An enqueue was dropped because of its dedupe key; `reason` is `outstanding` or
    `recent_success`."""

    def __init__(self, dedupe_key: str, reason: str, existing_job_id: str | None = None) -> None:
        super().__init__(f"dedupe key {dedupe_key!r} dropped: {reason}")
        self.dedupe_key = dedupe_key
        self.reason = reason
        self.existing_job_id = existing_job_id


class LeadershipLost(StoreError):
    """A write the scheduler's leader makes (a fire, its schedule state) was refused because
    this node no longer holds the scheduler lease at the term it acted under: another node
    took over (state.backend postgresql). Nothing was written; the new leader decides."""


class SourceEventConflict(StoreError):
    """A routed enqueue repeats (parent job, source event, target) of a job already in the
    queue: an event redelivery, which the router logs and skips rather than failing the
    parent."""

    def __init__(
        self, parent_job_id: str, source_event_id: str, plugin: str, command: str
    ) -> None:
        super().__init__(
            f"job source-event conflict (parent {parent_job_id!r}, source_event "
            f"{source_event_id!r}, target {plugin}/{command})"
        )
        self.parent_job_id = parent_job_id
        self.source_event_id = source_event_id
        self.plugin = plugin
        self.command = command


class JobNotFound(StoreError):
    """An operator verb (cancel, retry, rerun) named a job the queue does not hold."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class JobStateConflict(StoreError):
    """An operator verb does not apply to the job as it stands: cancelling a finished job,
    retrying one that succeeded or was already retried, rerunning a step that is not the root
    of its run. `status` is the job's status; the message says what to do instead."""

    def __init__(self, job_id: str, status: str, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status


class NodeFenced(StoreError):
    """This gateway's node life (`node_id`, `incarnation`) is no longer the live one in the
    shared PostgreSQL store: a peer declared it dead and recovered its jobs, or the node was
    started again elsewhere. Every claim and outcome it writes is refused from then on; the
    gateway must stop its plugins and exit (store/pg/cluster.py, fencing)."""

    def __init__(self, node_id: str, incarnation: int, doing: str) -> None:
        super().__init__(
            f"node {node_id} (incarnation {incarnation}) is fenced: {doing} refused because "
            "this node life is no longer alive in the cluster (a peer declared it dead after "
            "missed heartbeats and recovered its jobs, or it was started again); stop this "
            "gateway and start it anew"
        )
        self.node_id = node_id
        self.incarnation = incarnation


class SchemaMismatch(StoreError):
    """An existing database lacks a table or column this version needs, or is at a schema
    version this code cannot use as it is."""


class SchemaTooNew(SchemaMismatch):
    """The database's schema version (`PRAGMA user_version`) is newer than this release knows:
    a newer ductile wrote it. Raised by the gateway at boot (gate `schema_migrated`) and by
    every CLI reader before anything reads or writes the file, because an older release cannot
    know what the newer schema means (and migrations only go forward)."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(self.describe(path, found, supported))
        self.path = path
        self.found = found
        self.supported = supported

    @staticmethod
    def describe(path: str, found: int, supported: int) -> str:
        """The refusal text, shared with the boot gate that judges the same facts."""
        elsewhere = ("state.dsn at another database" if path.startswith("postgresql://")
                     else "state.path at another file")
        return (
            f"state database {path} has schema version {found} but this ductile supports up "
            f"to {supported}: it was written by a newer release; upgrade ductile or point "
            f"{elsewhere}"
        )


class SchemaOutdated(SchemaMismatch):
    """A reader that must not write (the CLI's read-only connections, its offline writes beside
    a gateway) met a database at an older schema version. Only the gateway migrates, at boot
    and with a backup, so the reader refuses rather than misread the old columns."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"state database {path} has schema version {found} but this ductile needs version "
            f"{supported}: start the gateway once (ductile system start) to migrate it (it keeps "
            "a backup beside the file), then run this command again"
        )
        self.path = path
        self.found = found
        self.supported = supported


class MigrationFailed(StoreError):
    """A schema migration could not be completed at boot: the backup could not be written, a
    step failed, or another process wrote to the file meanwhile. Every step runs in one
    transaction that was rolled back, so the file is unchanged and still at `found`."""

    def __init__(self, message: str, *, path: str, found: int, target: int) -> None:
        super().__init__(message)
        self.path = path
        self.found = found
        self.target = target


class LockError(DuctileError):
    """The PID lock could not be taken: another instance may be running."""


class Overloaded(DuctileError):
    """Ingress backpressure: new work from outside (an API enqueue, a webhook delivery, a relay
    envelope, a scheduler fire) is refused because the outstanding jobs (queued or running)
    are at a bound. `plugin` names the plugin whose `plugins.<name>.max_outstanding_jobs` was
    hit, None for `service.max_outstanding_jobs`; `retry_after` is the seconds a sender should
    wait. Nothing was queued, so a sender that retries loses nothing."""

    def __init__(self, *, plugin: str | None, limit: int, outstanding: int,
                 retry_after: int) -> None:
        where = f"for plugin {plugin}" if plugin is not None else "in the gateway"
        super().__init__(f"too many outstanding jobs {where} (limit {limit}, outstanding "
                         f"{outstanding}); retry after {retry_after} s")
        self.plugin = plugin
        self.limit = limit
        self.outstanding = outstanding
        self.retry_after = retry_after

    @property
    def key(self) -> str:
        """The config key of the bound that was hit."""
        if self.plugin is None:
            return "service.max_outstanding_jobs"
        return f"plugins.{self.plugin}.max_outstanding_jobs"


class MigrationRefused(DuctileError):
    """`ductile migrate from-go` refused its input before writing anything: the age identity
    does not open the vault, the state database is damaged or of an unknown schema version, a
    target already exists. `path` names the file."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class BackupError(DuctileError):
    """`system backup` / `config backup` cannot write the archive (it exists and --force was
    not given, the database cannot be copied, an I/O error), or an archive cannot be read."""


class RestoreRefused(BackupError):
    """`config restore` refused the archive; nothing was written. The message names the member
    and why (unsafe path, a mismatch against `.checksums` or the manifest, an existing file)."""


class BootRefused(DuctileError):
    """A boot gate refused. `gate` names the gate; the process exits 78 (EX_CONFIG)."""

    def __init__(self, gate: str, reason: str) -> None:
        super().__init__(f"boot refused at gate {gate}: {reason}")
        self.gate = gate
        self.reason = reason


class ReloadRefused(DuctileError):
    """A reload was refused; the old runtime keeps serving. `gate` names the failing gate."""

    def __init__(self, reason: str, gate: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.gate = gate


# -- scheduler and circuit breakers (issue 6) ------------------------------------------------
#
#   DuctileError
#   └── SchedulerError              the scheduler or a breaker refused an operation
#       ├── InvalidBreakerChange    a breaker state change that states/breaker.yaml does not allow
#       └── UnknownSchedule         pause/resume named a plugin or schedule id that is not configured


class SchedulerError(DuctileError):
    """The scheduler, or one of its circuit breakers, refused an operation."""


class InvalidBreakerChange(SchedulerError):
    """A breaker state change that states/breaker.yaml does not allow (a bug, or a row changed
    behind our back)."""

    def __init__(self, plugin: str, command: str, from_state: str, to_state: str) -> None:
        super().__init__(
            f"circuit breaker {plugin}/{command}: {from_state} -> {to_state} is not a transition "
            "of states/breaker.yaml"
        )
        self.plugin = plugin
        self.command = command
        self.from_state = from_state
        self.to_state = to_state


class UnknownSchedule(SchedulerError):
    """`pause`/`resume`/`reset` named a plugin or schedule id the config does not schedule."""

    def __init__(self, target: str, known: list[str]) -> None:
        hint = ", ".join(known) if known else "none are configured"
        super().__init__(
            f"no scheduled plugin or schedule {target!r} in the config (plugins.<name>.schedules[]);"
            f" known: {hint}"
        )
        self.target = target
        self.known = known


# --- Pipelines and routing (ductile/router/) -------------------------------------------------
#
#   DuctileError
#   └── RouterError                 a pipeline cannot be compiled or an event cannot be routed
#       ├── PipelineCompileError    a `pipelines:` entry is refused at boot (file, pipeline, step)
#       ├── ConditionError          an `if:` is malformed (`at` names the spot, e.g. `if.all[0].op`)
#       │   └── ConditionEvalError  a valid `if:` cannot be evaluated on this input (type mismatch)
#       ├── TemplateError           a `with:` template is malformed or names a missing path
#       ├── BaggageError            a `baggage:` spec is malformed, a claim's source is missing, or a
#       │   │                       claim would change an inherited baggage path
#       │   └── ContextTooLarge     accumulated baggage would exceed 1 MiB (the API answers 413)
#       └── RoutingError            an emitted event cannot be routed at all (no type, bad payload)


class RouterError(DuctileError):
    """Base class of every pipeline compile and routing error."""


class PipelineCompileError(RouterError):
    """One or more `pipelines:` entries are refused. `problems` holds every refusal message, each
    naming the config file, the pipeline and the step; the exception text joins them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) if len(problems) < 2 else
                         f"{len(problems)} pipeline problems:\n  " + "\n  ".join(problems))
        self.problems = tuple(problems)


class ConditionError(RouterError):
    """An `if:` condition is invalid. `at` is the dotted spot (`if`, `if.any[1].path`)."""

    def __init__(self, at: str, message: str) -> None:
        super().__init__(f"{at}: {message}")
        self.at = at
        self.message = message


class ConditionEvalError(ConditionError):
    """A valid condition met a value it cannot compare (e.g. `gt` on a string, or on a path
    that is absent). The job evaluating it fails; guard optional fields with `exists`."""


class TemplateError(RouterError):
    """A `with:` template is malformed (compile time) or names a path that is absent (routing
    time). The message names the pipeline, step, key and path when known."""


class BaggageError(RouterError):
    """A `baggage:` spec is malformed, a claim's source path is absent, or a claim would change
    a value the context inherited (inherited baggage paths are immutable)."""


class ContextTooLarge(BaggageError, StoreError):
    """The accumulated context would exceed its size cap; `actual` and `limit` are bytes."""

    def __init__(self, actual: int, limit: int) -> None:
        super().__init__(f"accumulated context exceeds max size ({limit} bytes): {actual} bytes")
        self.actual = actual
        self.limit = limit


class RoutingError(RouterError):
    """An emitted event cannot be routed at all (missing `type`, payload not an object, unknown
    pipeline or step in the job's position). The emitting job fails."""


# --- The vault (ductile/vault/, issue 5) -----------------------------------------------------
#
#   DuctileError
#   └── VaultError                  the vault refused an operation or cannot be used
#       ├── VaultKeyError           a key file is missing (when named), unreadable, malformed, or
#       │                           readable by group/others
#       ├── VaultFileError          the vault file cannot be read: not a vault file, truncated,
#       │   │                       tampered, or its plaintext is not a vault model
#       │   └── VaultWrongKey       the file is sealed to a different key than the one resolved
#       ├── VaultExists             `vault init` refuses to overwrite an existing vault
#       ├── VaultModifiedExternally the file changed on disk since the daemon loaded or wrote it
#       ├── VaultPolicyError        a model operation is refused (name, reserved, revoked, ...);
#       │   └── VaultReservedEntity the data plane touched `core` or `core-admin-token`
#       └── VaultPrincipalUnavailable  compose for an unknown or revoked principal (fail closed)
#
# No message of this family ever contains a secret value.


class VaultError(DuctileError):
    """Base class of every vault error; `path` names the vault or key file when known."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class VaultKeyError(VaultError):
    """A key file named explicitly is missing, or a key file is unreadable, malformed or has
    group/other permission bits (the message carries the chmod to run)."""


class VaultFileError(VaultError):
    """The vault file cannot be loaded: unreadable, not a vault file, truncated, tampered or
    not a valid model. The gateway fails closed on it."""


class VaultWrongKey(VaultFileError):
    """The vault file is sealed to another public key than the resolved key file's."""


class VaultExists(VaultError):
    """`vault init` was pointed at a path that already exists."""


class VaultModifiedExternally(VaultError):
    """The vault file changed underneath the process that owns it; the write is refused."""


class VaultPolicyError(VaultError):
    """A model operation was refused by the rules of the vault (HTTP 400 with this text)."""


class VaultReservedEntity(VaultPolicyError):
    """The data plane tried to change the reserved `core` principal or `core-admin-token`."""


class VaultPrincipalUnavailable(VaultError):
    """Secrets were composed for a principal that is not registered or is revoked."""

    def __init__(self, principal: str, reason: str) -> None:
        super().__init__(f"vault principal {principal!r} is {reason}: no secrets are delivered "
                         f"(register it with ductile vault register-principal --name {principal})"
                         if reason == "not registered" else
                         f"vault principal {principal!r} is {reason}: no secrets are delivered")
        self.principal = principal
        self.reason = reason
