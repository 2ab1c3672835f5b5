-- The ductile database on PostgreSQL (state.backend: postgresql; ductile/store/pg/db.py).
--
-- The same tables, columns and meaning as ductile/store/schema.sql, in PostgreSQL types, so the
-- record dataclasses of ductile/store/jobs.py read rows of either store. Applied only to an
-- empty database, under an advisory lock, in one transaction, with its version recorded in
-- schema_version (ductile/store/pg/migrations.py); a change here needs a step there too.
--
-- Types, and why:
--   TEXT COLLATE "C"  every text column: byte order, as SQLite's BINARY collation, whatever the
--                     database's default collation; fixed-width UTC timestamps
--                     (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, ductile.store.jobs.format_time) then sort
--                     in time order and ids sort as on SQLite.
--   TEXT for JSON     never json/jsonb: stored JSON text must read back byte for byte.
--   BIGINT            SQLite's INTEGER is 64-bit.
--   seq BIGSERIAL     PostgreSQL has no rowid: where the SQLite code breaks ties (FIFO order,
--                     newest first) by rowid, the table has `seq`, increasing in insert order.
--                     Tables whose SQLite id is `INTEGER PRIMARY KEY AUTOINCREMENT` (the rowid)
--                     have `id BIGSERIAL` instead.

-- The schema versions applied, one row each (migrations.py reads max(version)).
CREATE TABLE IF NOT EXISTS schema_version (
    version     BIGINT PRIMARY KEY,
    applied_at  TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL
);

-- The queue. Only ductile/store/queue.py writes it; status changes follow states/job.yaml.
CREATE TABLE IF NOT EXISTS job_queue (
    seq                         BIGSERIAL NOT NULL UNIQUE,   -- SQLite's rowid: FIFO tie-break
    id                          TEXT COLLATE "C" PRIMARY KEY,
    plugin                      TEXT COLLATE "C" NOT NULL,
    command                     TEXT COLLATE "C" NOT NULL,
    payload                     TEXT COLLATE "C",
    status                      TEXT COLLATE "C" NOT NULL,
    attempt                     BIGINT NOT NULL DEFAULT 1,
    max_attempts                BIGINT NOT NULL DEFAULT 4,
    submitted_by                TEXT COLLATE "C" NOT NULL,
    dedupe_key                  TEXT COLLATE "C",
    created_at                  TEXT COLLATE "C" NOT NULL,
    started_at                  TEXT COLLATE "C",
    completed_at                TEXT COLLATE "C",
    next_retry_at               TEXT COLLATE "C",
    last_error                  TEXT COLLATE "C",
    parent_job_id               TEXT COLLATE "C",
    source_event_id             TEXT COLLATE "C",
    event_context_id            TEXT COLLATE "C",
    enqueued_config_snapshot_id TEXT COLLATE "C",
    started_config_snapshot_id  TEXT COLLATE "C",
    retry_of                    TEXT COLLATE "C",   -- ductile job retry: the job this one runs again
    rerun_of                    TEXT COLLATE "C",   -- ductile pipeline rerun: the root of the run it repeats
    -- PostgreSQL only (several gateways, store/pg/cluster.py): the node life that claimed the
    -- latest attempt, set in the claiming transaction (NULL for a gateway without a node
    -- identity). Recovery takes only the rows of lives that are over (boot: this node's earlier
    -- incarnations; a peer: the nodes it declares dead), and an outcome from a life that no
    -- longer owns the row is refused (fencing). Kept after the job ends: who ran it last.
    claimed_by                  TEXT COLLATE "C",
    claimed_incarnation         BIGINT
);
CREATE INDEX IF NOT EXISTS job_queue_status_created_at_idx
    ON job_queue (status, created_at);
-- The claim looks at two kinds of queued rows separately so that a backlog of retries that are
-- not yet due never slows down claiming fresh work: fresh rows in FIFO order, and retries by due
-- time.
CREATE INDEX IF NOT EXISTS job_queue_fresh_idx
    ON job_queue (created_at, seq) WHERE status = 'queued' AND next_retry_at IS NULL;
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
-- Recovery finds a node life's running rows (boot, and a peer declaring it dead).
CREATE INDEX IF NOT EXISTS job_queue_claimed_running_idx
    ON job_queue (claimed_by, claimed_incarnation) WHERE status = 'running';
-- A claim under a cluster-wide cap counts the plugin's running rows (pg/writes.py claim).
CREATE INDEX IF NOT EXISTS job_queue_running_plugin_idx
    ON job_queue (plugin) WHERE status = 'running';
-- "retried as" / "rerun as": the jobs that started an old one again.
CREATE INDEX IF NOT EXISTS job_queue_retry_of_idx
    ON job_queue (retry_of) WHERE retry_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS job_queue_rerun_of_idx
    ON job_queue (rerun_of) WHERE rerun_of IS NOT NULL;

-- Append-only status history. No foreign key: history outlives pruned job rows.
CREATE TABLE IF NOT EXISTS job_transitions (
    id          BIGSERIAL PRIMARY KEY,
    job_id      TEXT COLLATE "C" NOT NULL,
    from_status TEXT COLLATE "C",
    to_status   TEXT COLLATE "C" NOT NULL,
    reason      TEXT COLLATE "C",
    created_at  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS job_transitions_job_id_created_at_idx
    ON job_transitions (job_id, created_at);
CREATE INDEX IF NOT EXISTS job_transitions_created_at_idx
    ON job_transitions (created_at);

-- One row per attempt: the execution ledger (who ran, how long, how it ended).
CREATE TABLE IF NOT EXISTS job_attempts (
    id          BIGSERIAL PRIMARY KEY,
    job_id      TEXT COLLATE "C" NOT NULL,
    attempt     BIGINT NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    started_at  TEXT COLLATE "C",
    finished_at TEXT COLLATE "C",
    duration_ms BIGINT,
    exit_code   BIGINT,
    outcome     TEXT COLLATE "C",
    error       TEXT COLLATE "C",
    stderr_tail TEXT COLLATE "C",
    pid         BIGINT,
    UNIQUE (job_id, attempt)
);
CREATE INDEX IF NOT EXISTS job_attempts_job_id_created_at_idx
    ON job_attempts (job_id, created_at);
CREATE INDEX IF NOT EXISTS job_attempts_created_at_idx
    ON job_attempts (created_at);

-- The config that was live when a job was enqueued or started (`ductile job inspect` shows it).
CREATE TABLE IF NOT EXISTS config_snapshots (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    config_hash         TEXT COLLATE "C" NOT NULL,
    source_hash         TEXT COLLATE "C",
    source_path         TEXT COLLATE "C",
    source              TEXT COLLATE "C",
    reason              TEXT COLLATE "C" NOT NULL,
    loaded_at           TEXT COLLATE "C" NOT NULL,
    ductile_version     TEXT COLLATE "C",
    binary_path         TEXT COLLATE "C",
    snapshot_format     BIGINT NOT NULL DEFAULT 1,
    semantics           TEXT COLLATE "C",
    plugin_fingerprints TEXT COLLATE "C",
    sanitized_config    TEXT COLLATE "C",
    secret_fingerprints TEXT COLLATE "C"
);

-- Per-plugin state object, shallow-merged from `state_updates` (1 MiB cap).
CREATE TABLE IF NOT EXISTS plugin_state (
    plugin_name TEXT COLLATE "C" PRIMARY KEY,
    state       TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    updated_at  TEXT COLLATE "C"
);

-- Named counters allocated inside a write transaction (`plugin_facts`).
CREATE TABLE IF NOT EXISTS storage_sequences (
    name  TEXT COLLATE "C" PRIMARY KEY,
    value BIGINT NOT NULL DEFAULT 0
);

-- Append-only facts recorded from `state_updates` by manifest `fact_outputs` rules.
CREATE TABLE IF NOT EXISTS plugin_facts (
    id          TEXT COLLATE "C" PRIMARY KEY,
    seq         BIGINT,
    plugin_name TEXT COLLATE "C" NOT NULL,
    fact_type   TEXT COLLATE "C" NOT NULL,
    job_id      TEXT COLLATE "C" NOT NULL,
    command     TEXT COLLATE "C" NOT NULL,
    fact_json   TEXT COLLATE "C" NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL
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
    id               TEXT COLLATE "C" PRIMARY KEY,
    parent_id        TEXT COLLATE "C",
    pipeline_name    TEXT COLLATE "C",
    step_id          TEXT COLLATE "C",
    accumulated_json TEXT COLLATE "C" NOT NULL,
    created_at       TEXT COLLATE "C" NOT NULL
);

-- One row per terminal attempt, id `<job_id>-<attempt>`; outlives job_queue retention.
CREATE TABLE IF NOT EXISTS job_log (
    seq                         BIGSERIAL NOT NULL UNIQUE,   -- SQLite's rowid
    id                          TEXT COLLATE "C" PRIMARY KEY,
    job_id                      TEXT COLLATE "C",
    plugin                      TEXT COLLATE "C" NOT NULL,
    command                     TEXT COLLATE "C" NOT NULL,
    status                      TEXT COLLATE "C" NOT NULL,
    result                      TEXT COLLATE "C",
    attempt                     BIGINT NOT NULL,
    submitted_by                TEXT COLLATE "C" NOT NULL,
    created_at                  TEXT COLLATE "C" NOT NULL,
    completed_at                TEXT COLLATE "C" NOT NULL,
    last_error                  TEXT COLLATE "C",
    stderr                      TEXT COLLATE "C",
    parent_job_id               TEXT COLLATE "C",
    source_event_id             TEXT COLLATE "C",
    event_context_id            TEXT COLLATE "C",
    enqueued_config_snapshot_id TEXT COLLATE "C",
    started_config_snapshot_id  TEXT COLLATE "C",
    exit_code                   BIGINT
);
CREATE INDEX IF NOT EXISTS job_log_job_id_attempt_idx
    ON job_log (job_id, attempt);
CREATE INDEX IF NOT EXISTS job_log_completed_at_idx
    ON job_log (completed_at);

-- Scheduler-side circuit breakers per (plugin, command); states follow states/breaker.yaml.
CREATE TABLE IF NOT EXISTS circuit_breakers (
    plugin          TEXT COLLATE "C" NOT NULL,
    command         TEXT COLLATE "C" NOT NULL,
    state           TEXT COLLATE "C" NOT NULL DEFAULT 'closed',
    failure_count   BIGINT NOT NULL DEFAULT 0,
    opened_at       TEXT COLLATE "C",
    last_failure_at TEXT COLLATE "C",
    last_job_id     TEXT COLLATE "C",
    updated_at      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (plugin, command)
);

CREATE TABLE IF NOT EXISTS circuit_breaker_transitions (
    seq           BIGSERIAL NOT NULL UNIQUE,   -- SQLite's rowid
    id            TEXT COLLATE "C" PRIMARY KEY,
    plugin        TEXT COLLATE "C",
    command       TEXT COLLATE "C",
    from_state    TEXT COLLATE "C",
    to_state      TEXT COLLATE "C" NOT NULL,
    failure_count BIGINT NOT NULL DEFAULT 0,
    reason        TEXT COLLATE "C" NOT NULL,
    job_id        TEXT COLLATE "C",
    created_at    TEXT COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS circuit_breaker_transitions_target_created_at_idx
    ON circuit_breaker_transitions (plugin, command, created_at);
CREATE INDEX IF NOT EXISTS circuit_breaker_transitions_created_at_idx
    ON circuit_breaker_transitions (created_at);

-- Schedule bookkeeping; status is active, paused_manual, paused_invalid or exhausted.
CREATE TABLE IF NOT EXISTS schedule_entries (
    plugin              TEXT COLLATE "C" NOT NULL,
    schedule_id         TEXT COLLATE "C" NOT NULL,
    command             TEXT COLLATE "C" NOT NULL,
    status              TEXT COLLATE "C" NOT NULL DEFAULT 'active',
    reason              TEXT COLLATE "C",
    last_fired_at       TEXT COLLATE "C",
    last_success_job_id TEXT COLLATE "C",
    last_success_at     TEXT COLLATE "C",
    next_run_at         TEXT COLLATE "C",
    updated_at          TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (plugin, schedule_id)
);

-- The vault audit trail (issue 5): one append-only row per vault operation, from the daemon's
-- /vault/* routes and from the offline CLI. Names and outcomes only: never a secret value.
CREATE TABLE IF NOT EXISTS vault_audit (
    id         BIGSERIAL PRIMARY KEY,
    created_at TEXT COLLATE "C" NOT NULL,
    actor      TEXT COLLATE "C" NOT NULL,
    op         TEXT COLLATE "C" NOT NULL,
    target     TEXT COLLATE "C" NOT NULL DEFAULT '',
    outcome    TEXT COLLATE "C" NOT NULL,
    detail     TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS vault_audit_target_idx ON vault_audit (target, id);
CREATE INDEX IF NOT EXISTS vault_audit_actor_idx ON vault_audit (actor, id);

-- Relay envelopes accepted from peers (replay protection): a signature seen within the clock
-- skew window is refused as a replay. Rows are pruned once the window has passed, after which
-- the envelope's timestamp alone refuses it.
CREATE TABLE IF NOT EXISTS relay_seen (
    peer             TEXT COLLATE "C" NOT NULL,
    signature        TEXT COLLATE "C" NOT NULL,
    event_id         TEXT COLLATE "C" NOT NULL,
    seen_at          TEXT COLLATE "C" NOT NULL,
    expires_at       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (peer, signature)
);
CREATE INDEX IF NOT EXISTS relay_seen_expires_idx ON relay_seen (expires_at);

-- The recent events of the event hub (GET /events), kept so a subscriber resumes with
-- Last-Event-ID without a gap, also after a restart; bounded (store/events.py). Each node has
-- its own hub and its own id sequence, so its events are kept apart by `node` ('' for a lone
-- gateway): a node resumes its own stream, never a peer's.
CREATE TABLE IF NOT EXISTS events (
    node             TEXT COLLATE "C" NOT NULL DEFAULT '',
    id               BIGINT NOT NULL,
    type             TEXT COLLATE "C" NOT NULL,
    at               TEXT COLLATE "C" NOT NULL,
    data             TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (node, id)
);

-- Several gateways on one database (store/pg/cluster.py). Times here are the database's own
-- (timestamptz, now()): liveness and lease expiry are judged by one clock, whatever the nodes'
-- clocks say.
-- Each node's current life: a new incarnation at every start; `dead` once a peer saw it silent
-- for too long and recovered its jobs (a fenced node finds no live row and exits).
CREATE TABLE IF NOT EXISTS cluster_nodes (
    node_id          TEXT COLLATE "C" PRIMARY KEY,
    incarnation      BIGINT NOT NULL,
    status           TEXT COLLATE "C" NOT NULL CHECK (status IN ('alive', 'stopped', 'dead')),
    hostname         TEXT COLLATE "C" NOT NULL DEFAULT '',
    pid              INTEGER NOT NULL DEFAULT 0,
    version          TEXT COLLATE "C" NOT NULL DEFAULT '',
    started_at       TIMESTAMPTZ NOT NULL,
    heartbeat_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS cluster_nodes_alive_idx ON cluster_nodes (status, heartbeat_at);

-- Leases (the scheduler's leader): holder, a term that grows at every change of holder, and
-- an expiry by the database's clock.
CREATE TABLE IF NOT EXISTS cluster_leases (
    name             TEXT COLLATE "C" PRIMARY KEY,
    node_id          TEXT COLLATE "C",
    incarnation      BIGINT,
    term             BIGINT NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL
);

-- Each (schedule, instant) fired, once across the cluster, with the leader and term that fired it.
CREATE TABLE IF NOT EXISTS cluster_fires (
    schedule         TEXT COLLATE "C" NOT NULL,
    instant          TEXT COLLATE "C" NOT NULL,
    node_id          TEXT COLLATE "C" NOT NULL,
    incarnation      BIGINT NOT NULL,
    term             BIGINT NOT NULL,
    fired_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (schedule, instant)
);
