"""The JSON Schemas the API's route declarations share (bodies and answers).

Only what the handlers really guarantee is `required`; a field that is sometimes absent is
listed in `properties` alone, and every answer object stays open to new fields (clients must
ignore what they do not know), except the request bodies, which refuse unknown fields as the
handlers do.
"""

from __future__ import annotations

from typing import Any

from ductile.machines import job_statuses
from ductile.planes.api.openapi import (
    BOOLEAN,
    INTEGER,
    NULLABLE_STRING,
    STRING,
    Param,
    array,
    obj,
    run_body,
)

ANY: dict[str, Any] = {}
NULLABLE_INTEGER: dict[str, Any] = {"type": ["integer", "null"]}
NON_BLANK: dict[str, Any] = {"type": "string", "pattern": r"\S"}

# --- answers ----------------------------------------------------------------------------------

INDEX = obj(("name", "description", "version", "discovery"), name=STRING, description=STRING,
            version=STRING, uptime_seconds=INTEGER, discovery=obj())
HEALTH = obj(("status", "posture", "version"), status=STRING, posture=STRING, version=STRING,
             uptime_seconds=INTEGER, queue_depth=INTEGER, plugins_loaded=INTEGER,
             plugins_circuit_open=INTEGER, privsep=obj(), config_path=STRING,
             binary_path=STRING, generation=INTEGER, snapshot_id=NULLABLE_STRING,
             backpressure=obj(("max_outstanding_jobs", "outstanding", "refused_total"),
                              max_outstanding_jobs=INTEGER, outstanding=INTEGER,
                              refused_total=INTEGER,
                              plugins={"type": "object", "additionalProperties": obj(
                                  ("max_outstanding_jobs", "outstanding"),
                                  max_outstanding_jobs=INTEGER, outstanding=INTEGER)}),
             cluster=obj(("backend", "node_id", "incarnation", "peers_alive",
                          "leader_node_id"),
                         backend=STRING, node_id=STRING, incarnation=INTEGER,
                         peers_alive=INTEGER, leader_node_id=NULLABLE_STRING))
NUMBER: dict[str, Any] = {"type": "number"}
CLUSTER_NODE = obj(("node_id", "incarnation", "status", "hostname", "pid", "version",
                    "started_at", "heartbeat_at", "heartbeat_age_s"),
                   node_id=STRING, incarnation=INTEGER,
                   status={"type": "string", "enum": ["alive", "stopped", "dead"]},
                   hostname=STRING, pid=INTEGER, version=STRING, started_at=STRING,
                   heartbeat_at=STRING, heartbeat_age_s=NUMBER)
NODES = obj(("backend", "node", "leader", "nodes"),
            backend={"type": "string", "enum": ["sqlite", "postgresql"]},
            node={**obj(("node_id", "incarnation"), node_id=STRING, incarnation=INTEGER),
                  "type": ["object", "null"]},
            leader={**obj(("node_id", "incarnation", "term", "expires_in_s"),
                          node_id=STRING, incarnation=INTEGER, term=INTEGER,
                          expires_in_s=NUMBER),
                    "type": ["object", "null"]},
            nodes=array(CLUSTER_NODE))
RELOADED = obj(("status", "message"), status=STRING, message=STRING,
               reloaded_at=NULLABLE_STRING, snapshot_id=NULLABLE_STRING)
RELOAD_REFUSED = obj(("error",), error=STRING, gate=NULLABLE_STRING)
CHECK = obj(("name", "ok", "severity"), name=STRING, ok=BOOLEAN, severity=STRING,
            detail=STRING)
REPORT = obj(("ok", "captured_at", "checks"), ok=BOOLEAN, captured_at=STRING,
             checks=array(CHECK))

PLUGIN_LIST = obj(("plugins",), plugins=array(obj(
    ("name", "version", "commands"), name=STRING, version=STRING, description=STRING,
    commands=array(STRING))))
PLUGIN_DETAIL = obj(("name", "version", "protocol", "commands"), name=STRING, version=STRING,
                    description=STRING, protocol=INTEGER, commands=array(obj(
                        ("name", "type"), name=STRING, type=STRING, description=STRING,
                        input_schema={"type": ["object", "null"]},
                        output_schema={"type": ["object", "null"]})))

#: A job as `GET /job/{id}` shows it (also the answer of a sync run and of cancel).
JOB = obj(("job_id", "status", "plugin", "command"), job_id=STRING, status=STRING,
          plugin=STRING, command=STRING, result=ANY, started_at=NULLABLE_STRING,
          completed_at=NULLABLE_STRING, attempt=INTEGER, max_attempts=INTEGER,
          submitted_by=STRING, created_at=STRING, last_error=NULLABLE_STRING,
          retry_of=STRING, retried_as=STRING, rerun_of=STRING, rerun_as=array(STRING),
          deduplicated=BOOLEAN, timeout_exceeded=BOOLEAN, message=STRING)
JOB_LIST = obj(("jobs", "total"), jobs=array(obj(
    ("job_id", "plugin", "command", "status", "created_at", "attempt"), job_id=STRING,
    plugin=STRING, command=STRING, status=STRING, created_at=STRING, attempt=INTEGER,
    started_at=STRING, completed_at=STRING)), total=INTEGER)
TREE_NODE = obj(("job_id", "plugin", "command", "status"), job_id=STRING,
                parent_job_id=NULLABLE_STRING, plugin=STRING, command=STRING, status=STRING)
TREE = array(TREE_NODE)
LOGS = obj(("logs", "total"), logs=array(obj(
    ("job_id", "log_id", "plugin", "command", "status", "attempt"), job_id=STRING,
    plugin=STRING, command=STRING, status=STRING, attempt=INTEGER,
    exit_code=NULLABLE_INTEGER, last_error=STRING, stderr=STRING)), total=INTEGER)
#: A pipeline run started (202), or a rerun of one.
RUN_STARTED = obj(("job_id", "run_id", "status", "plugin", "command"), job_id=STRING,
                  run_id=STRING, status=STRING, plugin=STRING, command=STRING,
                  job_ids=array(STRING), rerun_of=STRING)
RUN_DONE = obj(("job_id", "run_id", "status", "tree"), job_id=STRING, run_id=STRING,
               status=STRING, duration_ms=INTEGER, result=ANY, tree=TREE)

SCHEDULES = obj(("jobs",), jobs=array(obj(("plugin", "schedule_id", "command", "paused"),
                                          plugin=STRING, schedule_id=STRING, command=STRING,
                                          paused=BOOLEAN)))
SCHEDULE_CHANGED = {"type": "object", "minProperties": 1, "maxProperties": 1,
                    "properties": {"paused": array(obj()), "resumed": array(obj())},
                    "additionalProperties": False}

VAULT_DONE = obj(("name",), name=STRING, status=STRING, rolled=array(STRING),
                 skipped=array(STRING))
RELAY_ACCEPTED = obj(("status", "peer", "event_type", "receiver_event_id"), status=STRING,
                     peer=STRING, event_type=STRING, receiver_event_id=STRING, job_id=STRING)

#: `text/event-stream`: the schema of one event (`id:`, `event:`, `data:` lines, then a blank
#: line), as OpenAPI tools read a stream: each event an object of its fields' text.
EVENT_STREAM_TEXT = obj(id=STRING, event=STRING, data=STRING, retry=INTEGER)

# --- request bodies ---------------------------------------------------------------------------

RUN = run_body()
PIPELINE_RUN = obj(closed=True, payload={"type": ["object", "null"]},
                   baggage={"type": ["object", "null"]})
CANCEL = obj(closed=True, reason={**NON_BLANK, "maxLength": 500})
NO_FIELDS = obj(closed=True)
SCHEDULE_TARGET = obj(closed=True, target={"type": ["string", "null"]})
SCHEDULE_RUN = obj(("target",), closed=True,
                   target={"type": "string", "pattern": r"^\s*[^/\s][^/]*/[^/]+$"})

# --- query parameters -------------------------------------------------------------------------

LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 200},
              "at most this many (default 50)")
STATUS = Param("status", {"type": "string",
                          "enum": sorted(job_statuses().all) + ["error", "ok", "pending"]},
               "a job status, or pending (queued), ok (succeeded), error (failed)")
JOB_QUERY = (Param("plugin"), Param("command"), STATUS, LIMIT)
WHEN = {"type": "string", "description": "RFC 3339, or a duration ago such as 1h"}
LOG_QUERY = (Param("job_id"), Param("plugin"), Param("command"), STATUS,
             Param("submitted_by"), Param("query", STRING, "text in error, stderr or result"),
             Param("from", WHEN), Param("to", WHEN), Param("since", WHEN), Param("until", WHEN),
             LIMIT, Param("include_result", STRING,
                          "true: include each attempt's result (any other value: leave it out)"))
