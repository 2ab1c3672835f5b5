"""The exceptions Ductile raises, and when.

Every error a caller handles differently has its own class; each carries the file, key, plugin or
job it is about so the message can tell an operator what to fix.

    DuctileError
    ├── ConfigError                 config cannot be found, parsed or validated (file/key/line)
    │   └── ConfigNotFound          no config directory or file at any resolution step
    ├── ManifestError               a plugin's manifest.yaml is invalid
    ├── DiscoveryError              plugin roots / trust checks / aliases refuse the plugin set
    ├── ProtocolError               a plugin's stdout is not one valid protocol v2 response
    ├── PluginSpawnError            a plugin could not be started or waited for
    ├── StoreError                  the SQLite store refused an operation
    │   ├── StoreUnavailable        the database cannot be written now (disk full, I/O, locked)
    │   ├── InvalidTransition       a job status change that states/job.yaml does not allow
    │   ├── DedupeDropped           an enqueue was dropped by dedupe
    │   ├── SourceEventConflict     a routed event was already enqueued for that target
    │   └── SchemaMismatch          an existing database lacks tables/columns we need
    ├── LockError                   the PID lock is held by another instance
    ├── BootRefused                 a boot gate refused; carries the gate name (exit 78)
    └── ReloadRefused               a reload was refused; the old runtime keeps serving
"""

from __future__ import annotations


class DuctileError(Exception):
    """Base class of every error Ductile raises on purpose."""


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


class SchemaMismatch(StoreError):
    """An existing database lacks a table or column this version needs."""


class LockError(DuctileError):
    """The PID lock could not be taken: another instance may be running."""


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
