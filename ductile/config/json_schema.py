"""A JSON Schema (draft 2020-12) of the config, generated from the typed config model.

`ductile config schema` prints it so editors can check YAML as it is typed, and
`ductile config validate FILE` checks a file against it (`ductile.config.filecheck`).

Generated, not written by hand, so it cannot drift from the code: every field of every config
dataclass (`ductile/config/schema.py`, the webhook and relay dataclasses) becomes a property,
typed from its annotation, and every section's property names must equal the key set the loader
reads (`SERVICE_KEYS`, `API_KEYS`, `PLUGIN_KEYS`, ... in `ductile/config/load.py`, the webhook
and relay key sets). A field that is neither a YAML key nor declared below as derived, a field
type this module does not know how to express, or a key set that disagrees with the fields
raises `TypeError`, so the tests fail the day someone adds a field and forgets a side.

The mapping from annotations: `bool` is a boolean (the YAML 1.1 words `yes`/`no`/`on`/`off`
that the loader also accepts in boolean fields are allowed); `int` an integer; `float` a
duration string (the dataclasses keep durations as float seconds) with the pattern of
`ductile.config.durations`; `str` a string; `tuple[str, ...]` a list of non-empty strings;
`dict[str, Any]` a free-form map; another dataclass a `$ref` to its definition.

Enumerations come from the constants the code checks against (`LOG_LEVELS`, webhook `SCHEMES`);
the scheduler's, which live in a layer above config, are passed in by the caller.

Null: the loader treats `key: null` (or `key:` with nothing) as an absent key; the schema does
not list null among the types, so an editor flags such lines as the smell they usually are, and
`config validate` (which follows the loader) does not.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from ductile.config.accounts import ACCOUNT_KEYS, AccountConf
from ductile.config import load, relay, tls, webhook_match, webhooks
from ductile.config.durations import DURATION_PATTERN
from ductile.config.state import BACKENDS, STATE_KEYS, StateConfig
from ductile.config.schema import (
    ADMISSION_SWITCHES,
    AdmissionConfig,
    ApiConfig,
    ApiToken,
    BreakerConf,
    Config,
    PluginConf,
    RetryConf,
    ScheduleConf,
    SecretsConfig,
    ServiceConfig,
)
from ductile.config.sizes import SIZE_PATTERN
from ductile.config.validate import LOG_LEVELS, SCHEDULE_KINDS
from ductile.yamldoc import YAML11_FALSE, YAML11_TRUE

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://github.com/mattjoyce/ductile/schemas/config.json"
#: Every keyword the generated schema uses; `ductile.config.filecheck` implements exactly these.
KEYWORDS = frozenset({"$schema", "$id", "$defs", "$ref", "title", "description", "type",
                      "properties", "additionalProperties", "required", "items", "enum",
                      "pattern", "minLength", "maxLength", "minimum", "anyOf", "oneOf",
                      "deprecated"})

Schema = dict[str, Any]

DURATION: Schema = {"type": "string", "pattern": DURATION_PATTERN,
                    "description": "a duration: ns, us, ms, s, m, h, d, w (30s, 1h30m, 7d)"}
BOOLEAN: Schema = {"anyOf": [{"type": "boolean"},
                             {"enum": sorted(YAML11_TRUE | YAML11_FALSE)}],
                   "description": "true or false (yes/no/on/off are accepted; prefer true/false)"}
STRINGS: Schema = {"type": "array", "items": {"type": "string", "minLength": 1}}
FREE_MAP: Schema = {"type": "object"}
SIZE: Schema = {"anyOf": [{"type": "integer", "minimum": 1},
                          {"type": "string", "pattern": SIZE_PATTERN,
                           "description": "a size such as 512KB, 2MB or 1GiB"}],
                "description": "bytes, or 512KB, 2MB, 1GiB"}
OUTSTANDING_BOUND: Schema = {"type": "integer", "minimum": 1,
                             "description": "the most jobs queued or running at once before "
                                            "ingress refuses new work (429/503, retried)"}
NOT_SUPPORTED: Schema = {"deprecated": True,
                         "description": "not supported yet: read, warned about and ignored"}


@dataclasses.dataclass(frozen=True)
class Shape:
    """How one dataclass appears in YAML.

    `keys`: the key set the loader reads for this section (the generated property names must
    equal it, plus `extra` and `deferred`). `derived`: fields that are not YAML keys (the
    map key, resolved paths, ...), with the reason. `moved`: fields written under another
    key. `override`: fields whose YAML form is not the annotation's. `extra`: YAML keys with
    no field. `required`: keys the loader refuses to do without.
    """

    keys: frozenset[str]
    derived: Mapping[str, str] = dataclasses.field(default_factory=dict)
    moved: Mapping[str, str] = dataclasses.field(default_factory=dict)
    override: Mapping[str, Schema] = dataclasses.field(default_factory=dict)
    extra: Mapping[str, Schema] = dataclasses.field(default_factory=dict)
    deferred: frozenset[str] = frozenset()
    required: tuple[str, ...] = ()
    description: str = ""


def config_schema(*, choices: Mapping[str, Sequence[str]] | None = None) -> Schema:
    """The whole schema. `choices` adds enumerations for schedule entry keys owned by higher
    layers (`{"catch_up": CATCH_UP, "if_running": IF_RUNNING}` from ductile.schedule)."""
    known = shapes(choices or {})
    builder = SchemaBuilder(known)
    top = builder.definition(Config)
    for cls in known:  # overrides refer to definitions by name: make sure each exists
        if cls is not Config:
            builder.ref(cls)
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "ductile config",
        "description": "A ductile config file or include fragment (config.yaml, plugins.yaml, "
                       "...). Generated by `ductile config schema` from the typed config model."
                       " `${VAR}` is interpolated before YAML is read; a key set to null counts"
                       " as absent.",
        **{k: v for k, v in top.items() if k != "title"},
        "$defs": builder.defs,
    }


# --------------------------------------------------------------------------- the shapes


def shapes(choices: Mapping[str, Sequence[str]]) -> dict[type, Shape]:
    """How each config dataclass appears in YAML (see `Shape`)."""
    schedule_keys: dict[str, Schema] = {name: {"type": "string"}
                                        for name in load.SCHEDULE_STRINGS}
    for name, values in choices.items():
        if name not in schedule_keys:
            raise TypeError(f"schedule choices for unknown key {name!r}")
        schedule_keys[name] = {"enum": list(values)}
    schedule_keys.update({
        "jitter": DURATION, "payload": FREE_MAP,
        "not_on": {"type": "array", "description": "weekday names or numbers"},
        "preferred_window": {"description": "accepted; no effect yet"},
    })
    schedule_id, schedule_command = schedule_keys.pop("id"), schedule_keys.pop("command")
    return {
        Config: Shape(
            keys=load.TOP_KEYS, deferred=load.TOP_DEFERRED,
            derived={"config_path": "where it was loaded from", "config_dir": "ditto",
                     "source": "how it was found", "source_files": "the files read",
                     "raw": "the merged document", "warnings": "load warnings",
                     "relay": "written as the instances and remote_ingress sections",
                     "state_path": "written as state.path"},
            override={
                "plugins": {"type": "object",
                            "additionalProperties": {"$ref": "#/$defs/PluginConf"},
                            "description": "plugin name -> settings"},
                "pipelines": {"type": "array", "items": {"type": "object"},
                              "description": "see docs/pipelines.md"},
                "accounts": {"type": "object",
                             "additionalProperties": {"$ref": "#/$defs/AccountConf"},
                             "description": "account name -> the OS identity plugins drop to "
                                            "(root file only; docs/operator.md)"},
                "webhooks": {"anyOf": [{"$ref": "#/$defs/WebhooksConfig"},
                                       {"type": "array",
                                        "items": {"$ref": "#/$defs/WebhookEndpoint"}}],
                             "description": "{listen, endpoints}, or the legacy list of "
                                            "endpoints"},
            },
            extra={
                "include": {**STRINGS, "description": "files or directories merged after this"
                                                      " file"},
                "environment_vars": _object({"include": STRINGS}),
                "instances": {"type": "array", "items": {"$ref": "#/$defs/RelayInstance"},
                              "description": "relay: the peers this gateway sends events to"},
                "remote_ingress": {"$ref": "#/$defs/RemoteIngress",
                                   "description": "relay: the peers this gateway accepts "
                                                  "signed events from"},
                "database": _object({"path": {"type": "string"}},
                                    "accepted when state.path is absent (root file only)"),
            }),
        ServiceConfig: Shape(keys=load.SERVICE_KEYS, deferred=load.SERVICE_DEFERRED,
                             override={"log_level": {"enum": list(LOG_LEVELS)},
                                       "max_outstanding_jobs": OUTSTANDING_BOUND,
                                       "strict_mode": {
                                           "anyOf": BOOLEAN["anyOf"], "deprecated": True,
                                           "description": "deprecated: replace it with an "
                                                          "explicit service.admission block"}}),
        AdmissionConfig: Shape(keys=frozenset(ADMISSION_SWITCHES)),
        StateConfig: Shape(
            keys=STATE_KEYS,
            extra={"path": {"type": "string", "minLength": 1,
                            "description": "the SQLite file; on PostgreSQL the local data "
                                           "location (pid lock, management socket)"}},
            override={"backend": {"enum": list(BACKENDS)},
                      "dsn": {"type": "string",
                              "description": "postgresql:// URI or key=value pairs, without "
                                             "a password (state.backend postgresql)"},
                      "secret_ref": {"type": "string",
                                     "description": "the vault secret holding the database "
                                                    "password"},
                      "pool_size": {"type": "integer", "minimum": 1,
                                    "description": "connections per gateway, at most 100"}},
            description="where the store lives: SQLite (default) or PostgreSQL"),
        ApiConfig: Shape(keys=load.API_KEYS, moved={"tokens": "auth"},
                         override={"tokens": _object({"tokens": {
                             "type": "array", "items": {"$ref": "#/$defs/ApiToken"}}})}),
        ApiToken: Shape(keys=load.TOKEN_KEYS, required=("secret_ref",),
                        override={"token": {"type": "string", "maxLength": 0,
                                            "description": "refused: API tokens live in the "
                                                           "vault; use secret_ref"},
                                  "secret_ref": {"type": "string", "minLength": 1}}),
        SecretsConfig: Shape(keys=load.SECRETS_KEYS),
        tls.TlsConfig: Shape(
            keys=tls.TLS_KEYS, required=("cert_file", "key_file"),
            override={"cert_file": {"type": "string", "minLength": 1,
                                    "description": "the PEM certificate chain, leaf first; "
                                                   "relative to the root config's directory"},
                      "key_file": {"type": "string", "minLength": 1,
                                   "description": "its PEM private key, unencrypted and not "
                                                  "readable by others (chmod 600 or 640)"}},
            description="serve HTTPS on this listener; both files are read again on reload"),
        PluginConf: Shape(keys=load.PLUGIN_KEYS, deferred=load.PLUGIN_DEFERRED,
                          derived={"name": "the key under plugins:"},
                          override={"max_outstanding_jobs": OUTSTANDING_BOUND,
                                    "timeouts": {"type": "object",
                                                 "additionalProperties": DURATION,
                                                 "description": "command name -> duration"}},
                          extra={"schedule": {"deprecated": True,
                                              "description": "refused for an enabled plugin: "
                                                             "use schedules[]"}}),
        AccountConf: Shape(keys=ACCOUNT_KEYS, derived={"name": "the key under accounts:"},
                           override={"groups": {"type": "array",
                                                "items": {"type": ["string", "integer"]},
                                                "description": "group names or gids (default: "
                                                               "the user's own groups)"}}),
        RetryConf: Shape(keys=relay.RETRY_KEYS),
        BreakerConf: Shape(keys=frozenset({"threshold", "reset_after"})),
        ScheduleConf: Shape(
            keys=load.SCHEDULE_KEYS, derived={"raw": "the entry as written"},
            override={"id": schedule_id, "command": schedule_command},
            extra=schedule_keys,
            description="exactly one of " + ", ".join(SCHEDULE_KINDS)),
        webhooks.WebhooksConfig: Shape(keys=webhooks.SECTION_KEYS),
        webhooks.WebhookEndpoint: Shape(
            keys=webhooks.ENDPOINT_KEYS, required=("path", "plugin", "secret_ref"),
            override={"path": {"type": "string", "pattern": r"^/[^\s?#]*$",
                               "description": "a path starting with / (no spaces, ? or #)"},
                      "scheme": {"enum": list(webhooks.SCHEMES)},
                      "secret_ref": {"type": "string", "minLength": 1},
                      "max_body_size": SIZE,
                      "match": {"type": "array", "items": {"$ref": "#/$defs/MatchRule"},
                                "description": "trigger rules: every item must hold, or the "
                                               "delivery is refused with refuse_status"},
                      "refuse_status": {"type": "integer", "minimum": 200,
                                        "description": "202 (default), 200 or a 4xx"},
                      "respond": {"enum": list(webhooks.RESPOND_MODES)}}),
        **_match_shapes(),
        **_relay_shapes(),
    }


def _match_shapes() -> dict[type, Shape]:
    """A `match:` item of a webhook endpoint (ductile/config/webhook_match.py). In YAML a rule
    and a group are one kind of map (the loader refuses mixing their keys), so both dataclasses
    are described by the one `MatchRule` definition that `match` refers to."""
    compiled = {"where": "its position, for refusal reasons", "source": "header or payload",
                "name": "the header or dot path", "test": "equals, in or regex",
                "path": "the dot path split", "values": "equals or in",
                "pattern": "the compiled regex"}
    scalar: Schema = {"type": ["string", "number", "boolean"]}
    items: Schema = {"type": "array", "items": {"$ref": "#/$defs/MatchRule"}}
    return {
        webhook_match.MatchRule: Shape(
            keys=webhook_match.RULE_KEYS, derived=compiled,
            extra={"header": {"type": "string", "pattern": f"^{webhook_match.HEADER_NAME.pattern}$",
                              "description": "a request header name"},
                   "payload": {"type": "string", "minLength": 1,
                               "description": "a dot path into the JSON body (a.b.0.c)"},
                   "equals": scalar,
                   "in": {"type": "array", "items": scalar},
                   "regex": {"type": "string", "minLength": 1,
                             "description": "a Python regular expression, searched"},
                   "any": {**items, "description": "a group: one item must hold"},
                   "all": {**items, "description": "a group: every item must hold"}},
            description="a test (header or payload, with equals, in or regex) or a group "
                        "(any or all)"),
        webhook_match.MatchGroup: Shape(
            keys=frozenset(webhook_match.GROUPS),
            derived={"where": "its position", "mode": "any or all", "items": "the rules"},
            extra={"any": items, "all": items}),
    }


def _relay_shapes() -> dict[type, Shape]:
    """`instances:` and `remote_ingress:` (ductile/config/relay.py)."""
    name: Schema = {"type": "string", "pattern": relay.NAME.pattern,
                    "description": "lower-case hyphenated (a-z, 0-9, single hyphens)"}
    signing: Schema = {"enum": list(relay.SIGNING_MODES)}
    path: Schema = {"type": "string", "pattern": r"^/\S*$",
                    "description": "a path starting with / (no spaces)"}
    event_types: Schema = {"type": "array",
                           "items": {"type": "string", "pattern": relay.EVENT_TYPE.pattern,
                                     "description": "a lower-case dotted event type"},
                           "description": "event types (empty: any)"}
    return {
        relay.RelayConfig: Shape(
            keys=frozenset({"instances", "remote_ingress"}), moved={"ingress": "remote_ingress"},
            description="the relay sections; in a config file they are top-level keys"),
        relay.RelayInstance: Shape(
            keys=relay.INSTANCE_KEYS, required=("name", "base_url", "secret_ref"),
            override={"name": name, "signing": signing, "ingress_path": path, "allow": event_types,
                      "base_url": {"type": "string", "pattern": "^https?://[^\\s]+$",
                                   "description": "an absolute http or https URL"},
                      "secret_ref": {"type": "string", "minLength": 1,
                                     "description": "the vault secret: the HMAC key, or the "
                                                    "base64 ed25519 signing seed"}}),
        relay.RelayPeer: Shape(
            keys=relay.PEER_KEYS, required=("name",), moved={"baggage_allow": "baggage"},
            override={"name": name, "signing": signing, "accept": event_types,
                      "public_key": {"type": "string", "minLength": 1,
                                     "description": "ed25519: base64 of the 32-byte public key"},
                      "baggage_allow": _object({"allow": {
                          **STRINGS, "description": "the baggage keys admitted from this peer "
                                                    "(not ductile, ductile.* or ductile_*)"}})}),
        relay.RemoteIngress: Shape(
            keys=relay.INGRESS_KEYS, override={"listen_path": path, "max_body_size": SIZE}),
    }


def _object(properties: dict[str, Schema], description: str = "") -> Schema:
    schema: Schema = {"type": "object", "properties": properties,
                      "additionalProperties": False}
    if description:
        schema["description"] = description
    return schema


# --------------------------------------------------------------------------- generation


class SchemaBuilder:
    """Turns dataclasses into `$defs` entries, one per class, following their shapes."""

    def __init__(self, shapes: dict[type, Shape]) -> None:
        self.shapes = shapes
        self.defs: dict[str, Schema] = {}

    def ref(self, cls: type) -> Schema:
        if cls.__name__ not in self.defs:
            self.defs[cls.__name__] = {}  # reserve the name first: definitions may recurse
            self.defs[cls.__name__] = self.definition(cls)
        return {"$ref": f"#/$defs/{cls.__name__}"}

    def definition(self, cls: type) -> Schema:
        shape = self.shapes.get(cls)
        if shape is None:
            raise TypeError(f"{cls.__name__} is a config dataclass with no Shape in "
                            "ductile/config/json_schema.py")
        hints = typing.get_type_hints(cls)
        properties: dict[str, Schema] = {}
        for field in dataclasses.fields(cls):
            if field.name in shape.derived:
                continue
            key = shape.moved.get(field.name, field.name)
            schema = shape.override.get(field.name) or self.annotation(hints[field.name],
                                                                         f"{cls.__name__}."
                                                                         f"{field.name}")
            properties[key] = schema
        properties.update(shape.extra)
        for key in sorted(shape.deferred):
            properties[key] = NOT_SUPPORTED
        _check_keys(cls, shape, properties)
        schema: Schema = {"title": cls.__name__, "type": "object", "properties": properties,
                          "additionalProperties": False}
        if shape.required:
            schema["required"] = list(shape.required)
        if shape.description:
            schema["description"] = shape.description
        if cls is ScheduleConf:
            schema["oneOf"] = [{"required": [kind]} for kind in SCHEDULE_KINDS]
        return schema

    def annotation(self, hint: Any, where: str) -> Schema:
        """The schema of one annotation (see the module for the mapping)."""
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (types.UnionType, typing.Union):
            rest = [arg for arg in args if arg is not type(None)]
            if len(rest) == 1:
                return self.annotation(rest[0], where)
        elif hint is bool:
            return BOOLEAN
        elif hint is int:
            return {"type": "integer"}
        elif hint is float:
            return DURATION
        elif hint is str:
            return {"type": "string"}
        elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            if args[0] is str:
                return STRINGS
            return {"type": "array", "items": self.annotation(args[0], where)}
        elif origin is dict and args and args[0] is str:
            if args[1] is Any:
                return FREE_MAP
            return {"type": "object", "additionalProperties": self.annotation(args[1], where)}
        elif dataclasses.is_dataclass(hint):
            return self.ref(typing.cast(type, hint))
        raise TypeError(f"{where}: no JSON Schema for the annotation {hint!r}; add an override "
                        "to its Shape in ductile/config/json_schema.py")


def _check_keys(cls: type, shape: Shape, properties: Mapping[str, Schema]) -> None:
    expected = set(shape.keys) | set(shape.deferred)
    if set(properties) != expected:
        missing = sorted(expected - set(properties))
        unread = sorted(set(properties) - expected)
        raise TypeError(f"{cls.__name__}: the schema's keys disagree with the loader's key set "
                        f"(keys the loader reads but no field provides: {missing}; fields the "
                        f"loader does not read: {unread})")


def schema_keywords(schema: Any) -> set[str]:
    """Every keyword used anywhere in `schema` (property names excluded), for tests."""
    found: set[str] = set()

    def walk(node: Any, is_properties: bool = False) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not is_properties:
                    found.add(key)
                walk(value, key in ("properties", "$defs") and not is_properties)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return found

