-- The ductile database: one SQLite file, WAL mode, written by one writer (ductile/store/db.py).
--
-- Applied only to an empty database, which then gets the newest schema version (recorded in
-- PRAGMA user_version). An older database is migrated at boot by the steps of
-- ductile/store/migrations.py, so a change here needs a new step there too (a test compares a
-- migrated database with this file); then every database is checked against the tables and
-- columns below.
--
-- JSON is stored as TEXT, never as a declared type `JSON`: SQLite gives that NUMERIC affinity,
-- which turns the JSON text `42` into the integer 42 and `1.50` into the real 1.5.
--
-- Every timestamp is a fixed-width UTC string `YYYY-MM-DDTHH:MM:SS.ffffffZ` so that SQL compares
-- them lexicographically in time order (`next_retry_at <= now`, retention cutoffs).

-- The queue. Only ductile/store/queue.py writes it; status changes follow states/job.yaml.
CREATE TABLE IF NOT EXISTS job_queue (
    id                          TEXT PRIMARY KEY,
    plugin                      TEXT NOT NULL,
    command                     TEXT NOT NULL,
    payload                     TEXT,
    status                      TEXT NOT NULL,
    attempt                     INTEGER NOT NULL DEFAULT 1,
    max_attempts                INTEGER NOT NULL DEFAULT 4,
    submitted_by                TEXT NOT NULL,
    dedupe_key                  TEXT,
    created_at                  TEXT NOT NULL,
    started_at                  TEXT,
    completed_at                TEXT,
    next_retry_at               TEXT,
    last_error                  TEXT,
    parent_job_id               TEXT,
    source_event_id             TEXT,
    event_context_id            TEXT,
    enqueued_config_snapshot_id TEXT,
    started_config_snapshot_id  TEXT,
    retry_of                    TEXT,   -- ductile job retry: the job this one runs again
    rerun_of                    TEXT    -- ductile pipeline rerun: the root of the run it repeats
);
CREATE INDEX IF NOT EXISTS job_queue_status_created_at_idx
    ON job_queue (status, created_at);
-- The claim looks at two kinds of queued rows separately so that a backlog of retries that are
-- not yet due never slows down claiming fresh work: fresh rows in FIFO order, and retries by due
-- time.
CREATE INDEX IF NOT EXISTS job_queue_fresh_idx
    ON job_queue (created_at) WHERE status = 'queued' AND next_retry_at IS NULL;
CREATE INDEX IF NOT EXISTS job_queue_retry_due_idx
    ON job_queue (next_retry_at) WHERE status = 'queued' AND next_retry_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS job_queue_plugin_command_status_idx
    ON job_queue (plugin, command, status);
CREATE INDEX IF NOT EXISTS job_queue_dedupe_status_completed_idx
    ON job_queue (dedupe_key, status, completed_at);
-- A routed event delivered twice to the same target must not create a second job.
CREATE UNIQUE INDEX IF NOT EXISTS job_queue_event_source_idx
    ON job_queue (parent_job_id, source_event_id, plugin, command)
    WHERE source_event_id IS NOT NULL;
-- The job tree (GET /job/{id}/tree, the sync pipeline wait) walks children by parent.
CREATE INDEX IF NOT EXISTS job_queue_parent_idx
    ON job_queue (parent_job_id) WHERE parent_job_id IS NOT NULL;
-- "retried as" / "rerun as": the jobs that started an old one again.
CREATE INDEX IF NOT EXISTS job_queue_retry_of_idx
    ON job_queue (retry_of) WHERE retry_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS job_queue_rerun_of_idx
    ON job_queue (rerun_of) WHERE rerun_of IS NOT NULL;

-- Append-only status history. No foreign key: history outlives pruned job rows.
CREATE TABLE IF NOT EXISTS job_transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_transitions_job_id_created_at_idx
    ON job_transitions (job_id, created_at);
CREATE INDEX IF NOT EXISTS job_transitions_created_at_idx
    ON job_transitions (created_at);

-- One row per attempt: the execution ledger (who ran, how long, how it ended).
CREATE TABLE IF NOT EXISTS job_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    duration_ms INTEGER,
    exit_code   INTEGER,
    outcome     TEXT,
    error       TEXT,
    stderr_tail TEXT,
    pid         INTEGER,
    UNIQUE (job_id, attempt)
);
CREATE INDEX IF NOT EXISTS job_attempts_job_id_created_at_idx
    ON job_attempts (job_id, created_at);
CREATE INDEX IF NOT EXISTS job_attempts_created_at_idx
    ON job_attempts (created_at);

-- The config that was live when a job was enqueued or started (`ductile job inspect` shows it).
CREATE TABLE IF NOT EXISTS config_snapshots (
    id                  TEXT PRIMARY KEY,
    config_hash         TEXT NOT NULL,
    source_hash         TEXT,
    source_path         TEXT,
    source              TEXT,
    reason              TEXT NOT NULL,
    loaded_at           TEXT NOT NULL,
    ductile_version     TEXT,
    binary_path         TEXT,
    snapshot_format     INTEGER NOT NULL DEFAULT 1,
    semantics           TEXT,
    plugin_fingerprints TEXT,
    sanitized_config    TEXT,
    secret_fingerprints TEXT
);

-- Per-plugin state object, shallow-merged from `state_updates` (1 MiB cap).
CREATE TABLE IF NOT EXISTS plugin_state (
    plugin_name TEXT PRIMARY KEY,
    state       TEXT NOT NULL DEFAULT '{}',
    updated_at  TEXT
);

-- Named counters allocated inside a write transaction (`plugin_facts`).
CREATE TABLE IF NOT EXISTS storage_sequences (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL DEFAULT 0
);

-- Append-only facts recorded from `state_updates` by manifest `fact_outputs` rules.
CREATE TABLE IF NOT EXISTS plugin_facts (
    id          TEXT PRIMARY KEY,
    seq         INTEGER,
    plugin_name TEXT NOT NULL,
    fact_type   TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    command     TEXT NOT NULL,
    fact_json   TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS plugin_facts_plugin_created_at_idx
    ON plugin_facts (plugin_name, created_at);
CREATE INDEX IF NOT EXISTS plugin_facts_plugin_type_created_at_idx
    ON plugin_facts (plugin_name, fact_type, created_at);
CREATE INDEX IF NOT EXISTS plugin_facts_plugin_seq_idx
    ON plugin_facts (plugin_name, seq);
CREATE INDEX IF NOT EXISTS plugin_facts_plugin_type_seq_idx
    ON plugin_facts (plugin_name, fact_type, seq);

-- Immutable baggage ledger: one row per routed hop.
CREATE TABLE IF NOT EXISTS event_context (
    id               TEXT PRIMARY KEY,
    parent_id        TEXT,
    pipeline_name    TEXT,
    step_id          TEXT,
    accumulated_json TEXT NOT NULL,
    created_at       TEXT NOT NULL
);

-- One row per terminal attempt, id `<job_id>-<attempt>`; outlives job_queue retention.
CREATE TABLE IF NOT EXISTS job_log (
    id                          TEXT PRIMARY KEY,
    job_id                      TEXT,
    plugin                      TEXT NOT NULL,
    command                     TEXT NOT NULL,
    status                      TEXT NOT NULL,
    result                      TEXT,
    attempt                     INTEGER NOT NULL,
    submitted_by                TEXT NOT NULL,
    created_at                  TEXT NOT NULL,
    completed_at                TEXT NOT NULL,
    last_error                  TEXT,
    stderr                      TEXT,
    parent_job_id               TEXT,
    source_event_id             TEXT,
    event_context_id            TEXT,
    enqueued_config_snapshot_id TEXT,
    started_config_snapshot_id  TEXT,
    exit_code                   INTEGER
);
CREATE INDEX IF NOT EXISTS job_log_job_id_attempt_idx
    ON job_log (job_id, attempt);
CREATE INDEX IF NOT EXISTS job_log_completed_at_idx
    ON job_log (completed_at);

-- Scheduler-side circuit breakers per (plugin, command); states follow states/breaker.yaml.
CREATE TABLE IF NOT EXISTS circuit_breakers (
    plugin          TEXT NOT NULL,
    command         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'closed',
    failure_count   INTEGER NOT NULL DEFAULT 0,
    opened_at       TEXT,
    last_failure_at TEXT,
    last_job_id     TEXT,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (plugin, command)
);

CREATE TABLE IF NOT EXISTS circuit_breaker_transitions (
    id            TEXT PRIMARY KEY,
    plugin        TEXT,
    command       TEXT,
    from_state    TEXT,
    to_state      TEXT NOT NULL,
    failure_count INTEGER NOT NULL DEFAULT 0,
    reason        TEXT NOT NULL,
    job_id        TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS circuit_breaker_transitions_target_created_at_idx
    ON circuit_breaker_transitions (plugin, command, created_at);
CREATE INDEX IF NOT EXISTS circuit_breaker_transitions_created_at_idx
    ON circuit_breaker_transitions (created_at);

-- Schedule bookkeeping; status is active, paused_manual, paused_invalid or exhausted.
CREATE TABLE IF NOT EXISTS schedule_entries (
    plugin              TEXT NOT NULL,
    schedule_id         TEXT NOT NULL,
    command             TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'active',
    reason              TEXT,
    last_fired_at       TEXT,
    last_success_job_id TEXT,
    last_success_at     TEXT,
    next_run_at         TEXT,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (plugin, schedule_id)
);

-- The vault audit trail (issue 5): one append-only row per vault operation, from the daemon's
-- /vault/* routes and from the offline CLI. Names and outcomes only: never a secret value.
CREATE TABLE IF NOT EXISTS vault_audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    actor      TEXT NOT NULL,
    op         TEXT NOT NULL,
    target     TEXT NOT NULL DEFAULT '',
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS vault_audit_target_idx ON vault_audit (target, id);
CREATE INDEX IF NOT EXISTS vault_audit_actor_idx ON vault_audit (actor, id);

-- Relay envelopes accepted from peers (replay protection): a signature seen within the clock
-- skew window is refused as a replay. Rows are pruned once the window has passed, after which
-- the envelope's timestamp alone refuses it.
CREATE TABLE IF NOT EXISTS relay_seen (
    peer             TEXT NOT NULL,
    signature        TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    seen_at          TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    PRIMARY KEY (peer, signature)
);
CREATE INDEX IF NOT EXISTS relay_seen_expires_idx ON relay_seen (expires_at);

-- The recent events of the event hub (GET /events), kept so a subscriber resumes with
-- Last-Event-ID without a gap, also after a restart; bounded (store/events.py).
CREATE TABLE IF NOT EXISTS events (
    id               INTEGER PRIMARY KEY,
    type             TEXT NOT NULL,
    at               TEXT NOT NULL,
    data             TEXT NOT NULL
);
