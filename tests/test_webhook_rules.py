"""Webhook trigger rules: `match:` from YAML to compiled rules (config/webhook_match.py), their
verdicts (planes/webhook/rules.py, pure), and the endpoint keys that go with them
(`refuse_status`, `respond`, `respond_timeout`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ductile.config.load import load_config
from ductile.config.view import config_view
from ductile.config.webhook_match import MatchGroup, MatchRule
from ductile.config.webhooks import WebhookEndpoint, decode_webhooks
from ductile.errors import ConfigError
from ductile.planes.webhook.rules import evaluate, lookup, same
from support.gateway import write_config

FILE = "/etc/ductile/webhooks.yaml"


def endpoint(extra: str, warnings: list[str] | None = None) -> WebhookEndpoint:
    """The one endpoint of a section whose endpoint map gets `extra` (YAML flow-map items)."""
    section = yaml.safe_load(f"{{listen: '127.0.0.1:1', endpoints: [{{path: /hook, plugin: p, "
                             f"secret_ref: s, {extra}}}]}}")
    return decode_webhooks(section, file=FILE, warnings=warnings).endpoints[0]


def rules(text: str) -> WebhookEndpoint:
    return endpoint(f"match: {text}")


def headers(**values: str) -> Any:
    """A case-insensitive header lookup, as the request's is (`X_Event` -> `X-Event`)."""
    table = {name.replace("_", "-").lower(): value for name, value in values.items()}
    return lambda name: table.get(name.lower())


NO_HEADERS = headers()

PUSH = {"ref": "refs/heads/main", "repository": {"full_name": "me/site", "private": False,
                                                 "stars": 3},
        "commits": [{"id": "abc123", "added": ["a.md"]}, {"id": "def456"}]}


# -- decoding ---------------------------------------------------------------------------------


def test_rules_compile_with_their_position_and_the_defaults_of_the_answer_keys() -> None:
    hook = rules("[{header: X-GitHub-Event, equals: push}, "
                 "{payload: repository.full_name, in: [me/site, me/docs]}, "
                 "{any: [{payload: ref, regex: '^refs/tags/'}, "
                 "       {all: [{payload: repository.stars, equals: 3}]}]}]")
    event, repo, group = hook.match
    assert event == MatchRule("match[0]", "header", "X-GitHub-Event", "equals", values=("push",))
    assert repo == MatchRule("match[1]", "payload", "repository.full_name", "in",
                             path=("repository", "full_name"), values=("me/site", "me/docs"))
    assert isinstance(group, MatchGroup) and (group.where, group.mode) == ("match[2]", "any")
    tag, inner = group.items
    assert isinstance(tag, MatchRule) and tag.pattern is not None
    assert (tag.where, tag.pattern.pattern) == ("match[2].any[0]", "^refs/tags/")
    assert isinstance(inner, MatchGroup) and inner.items[0] == MatchRule(
        "match[2].any[1].all[0]", "payload", "repository.stars", "equals",
        path=("repository", "stars"), values=(3,))
    assert (hook.refuse_status, hook.respond, hook.respond_timeout) == (202, "accepted", 30.0)
    plain = endpoint("name: x")
    assert (plain.match, plain.refuse_status, plain.respond) == ((), 202, "accepted")


def test_the_answer_keys_decode() -> None:
    hook = endpoint("match: [{header: X-A, equals: b}], refuse_status: 403, respond: result, "
                    "respond_timeout: 2m")
    assert (hook.refuse_status, hook.respond, hook.respond_timeout) == (403, "result", 120.0)
    assert endpoint("match: [{header: X-A, equals: b}], refuse_status: 200").refuse_status == 200
    assert endpoint("respond: result, respond_timeout: 5m").respond_timeout == 300.0
    assert endpoint("match: null, respond: null").match == ()


@pytest.mark.parametrize(("extra", "key", "message"), [
    ("match: {header: X-A, equals: b}", "match", "expected a list, got a map"),
    ("match: [push]", "match[0]", 'expected a map such as {header: X-GitHub-Event, equals: '
                                  'push}, got "push"'),
    ("match: [{equals: push}]", "match[0]", "needs exactly one of header: NAME or payload: "
                                            "DOT.PATH"),
    ("match: [{header: X-A, payload: a, equals: b}]", "match[0]",
     "exactly one of header: NAME or payload: DOT.PATH (for example payload: "
     "repository.full_name); it has header and payload"),
    ("match: [{header: X-A}]", "match[0]", "needs exactly one of equals, in, regex"),
    ("match: [{header: X-A, equals: b, regex: c}]", "match[0]", "it has equals and regex"),
    ("match: [{header: X-A, equals: b, any: [{header: X-B, equals: c}]}]", "match[0]",
     "either a test (header or payload, with equals, in or regex) or a group (any or all)"),
    ("match: [{any: [{header: X-A, equals: b}], all: [{header: X-B, equals: c}]}]",
     "match[0]", "not both"),
    ("match: [{any: []}]", "match[0].any", "any: needs at least one rule"),
    ("match: [{all: {header: X-A}}]", "match[0].all", "expected a list, got a map"),
    ("match: [{any: [{all: [{any: [{all: [{any: [{header: X-A, equals: b}]}]}]}]}]}]",
     "match[0].any[0].all[0].any[0].all[0].any", "match groups nest at most 4 deep"),
    ("match: [{any: [{header: X-A}]}]", "match[0].any[0]", "exactly one of equals, in, regex"),
    ("match: [{header: 'X A', equals: b}]", "match[0].header",
     '"X A" is not an HTTP header name'),
    ("match: [{header: 5, equals: b}]", "match[0].header", "expected a string, got 5"),
    ("match: [{payload: 'a..b', equals: 1}]", "match[0].payload",
     'dot path "a..b" has an empty part'),
    ("match: [{payload: '.a', equals: 1}]", "match[0].payload", "has an empty part"),
    ("match: [{payload: '', equals: 1}]", "match[0].payload", "has an empty part"),
    ("match: [{header: X-A, equals: 1}]", "match[0].equals",
     'header values are text; quote it: "1"'),
    ("match: [{header: X-A, in: [a, true]}]", "match[0].in[1]",
     'header values are text; quote it: "true"'),
    ("match: [{payload: a, equals: [1]}]", "match[0].equals",
     "expected a string, number or true/false, got a list"),
    ("match: [{payload: a, equals: .nan}]", "match[0].equals", "expected a finite number"),
    ("match: [{payload: a, in: []}]", "match[0].in", "in: needs at least one value"),
    ("match: [{payload: a, in: b}]", "match[0].in", "expected a list"),
    ("match: [{payload: a, in: [{x: 1}]}]", "match[0].in[0]", "got a map"),
    ("match: [{payload: a, regex: '(unclosed'}]", "match[0].regex",
     'invalid regular expression "(unclosed": missing ), unterminated subpattern'),
    ("match: [{payload: a, regex: '*'}]", "match[0].regex", "nothing to repeat"),
    ("match: [{payload: a, regex: ''}]", "match[0].regex", "regex must not be empty"),
    ("match: [{payload: a, regex: 5}]", "match[0].regex", "expected a string, got 5"),
    ("match: [{header: X-A, equals: b}], refuse_status: 500", "refuse_status",
     "refuse_status 500 is not allowed; use 202"),
    ("match: [{header: X-A, equals: b}], refuse_status: 302", "refuse_status", "or a 4xx"),
    ("match: [{header: X-A, equals: b}], refuse_status: '403'", "refuse_status",
     'expected an integer, got "403"'),
    ("respond: sync", "respond", "unknown respond mode 'sync'; use accepted"),
    ("respond: [result]", "respond", "expected a string, got a list"),
    ("respond: result, respond_timeout: 0s", "respond_timeout",
     "respond_timeout must be a positive duration of at most 5m"),
    ("respond: result, respond_timeout: 6m", "respond_timeout", "at most 5m"),
    ("respond: result, respond_timeout: 30", "respond_timeout",
     "expected a duration such as 30s"),
    ("respond: result, respond_timeout: soon", "respond_timeout", "invalid duration"),
])
def test_bad_rules_and_answer_keys_name_the_file_and_key(extra: str, key: str,
                                                         message: str) -> None:
    with pytest.raises(ConfigError) as info:
        endpoint(extra)
    error = info.value
    assert error.path == FILE
    assert error.key == f"webhooks.endpoints[0].{key}"
    assert str(error).startswith(f"{FILE}: webhooks.endpoints[0].{key}: ")
    assert message in str(error)


def test_keys_that_cannot_take_effect_and_unknown_rule_keys_are_warnings() -> None:
    warnings: list[str] = []
    endpoint("refuse_status: 403, respond_timeout: 10s, "
             "respond: accepted", warnings)
    endpoint("match: [{header: X-A, equals: b, equal: c}]", warnings)
    assert warnings == [
        f"{FILE}: webhooks.endpoints[0].refuse_status has no effect without match rules "
        "(ignored)",
        f"{FILE}: webhooks.endpoints[0].respond_timeout has no effect without respond: result "
        "(ignored)",
        f"{FILE}: unknown key webhooks.endpoints[0].match[0].equal (ignored)",
    ]


def test_config_show_prints_the_rules_as_written_and_the_answer_defaults(tmp_path: Path) -> None:
    written = [{"header": "X-GitHub-Event", "equals": "push"},
               {"any": [{"payload": "ref", "regex": "^refs/tags/"},
                        {"payload": "n", "in": [1, 2.5, True]}]}]
    write_config(tmp_path, extra={"webhooks": {"listen": "127.0.0.1:1", "endpoints": [
        {"path": "/hook", "plugin": "echo", "secret_ref": "s", "match": written}]}})
    shown = config_view(load_config(str(tmp_path)))["webhooks"]["endpoints"][0]
    assert shown["match"] == written
    assert (shown["refuse_status"], shown["respond"], shown["respond_timeout"]) == \
        (202, "accepted", "30s")
    assert yaml.safe_load(yaml.safe_dump(shown)) == shown


# -- verdicts ---------------------------------------------------------------------------------


def test_no_rules_always_hold() -> None:
    assert evaluate((), NO_HEADERS, {}).ok


def test_a_header_rule_reads_the_header_case_insensitively() -> None:
    hook = rules("[{header: X-GitHub-Event, equals: push}]")
    assert evaluate(hook.match, headers(x_github_event="push"), {}).ok
    ping = evaluate(hook.match, headers(X_GitHub_Event="ping"), {})
    assert not ping.ok
    assert ping.reason == 'match[0]: header X-GitHub-Event is "ping", not "push"'
    missing = evaluate(hook.match, NO_HEADERS, PUSH)
    assert missing.reason == "match[0]: header X-GitHub-Event is missing"
    # Only the header counts: a body field of the same name does not.
    assert not evaluate(hook.match, NO_HEADERS, {"X-GitHub-Event": "push"}).ok


def test_payload_rules_follow_dot_paths_through_objects_and_arrays() -> None:
    for path, value in (("ref", "refs/heads/main"), ("repository.full_name", "me/site"),
                        ("commits.1.id", "def456"), ("commits.0.added.0", "a.md")):
        assert evaluate(rules(f"[{{payload: {path}, equals: {value}}}]").match,
                        NO_HEADERS, PUSH).ok, path
    for path in ("nope", "repository.owner", "commits.2.id", "commits.-1.id", "commits.id",
                 "ref.0", "repository.full_name.x", "commits.01x"):
        verdict = evaluate(rules(f"[{{payload: '{path}', equals: x}}]").match, NO_HEADERS, PUSH)
        assert verdict.reason == f"match[0]: payload {path} is missing", path


def test_lookup_indexes_arrays_and_matches_object_keys_exactly() -> None:
    assert lookup({"a": [{"b": 1}]}, ("a", "0", "b")) == (True, 1)
    assert lookup({"0": "key"}, ("0",)) == (True, "key")  # digits are a key in an object
    assert lookup([1, 2], ("1",)) == (True, 2)
    assert lookup([1, 2], ("9" * 30,)) == (False, None)
    assert lookup({"a": None}, ("a",)) == (True, None)
    assert lookup({"a": 1}, ()) == (True, {"a": 1})
    assert lookup("text", ("0",)) == (False, None)


def test_values_compare_with_their_json_type() -> None:
    assert same(1, 1) and same(1.0, 1) and same(3, 3.0) and same("1", "1")
    assert same(True, True) and not same(True, False)
    assert not same("1", 1) and not same(1, "1")
    assert not same(True, 1) and not same(1, True) and not same(0, False)
    assert not same(None, "null") and not same([1], 1) and not same({"a": 1}, "a")
    stars = rules("[{payload: repository.stars, equals: 3}]").match
    assert evaluate(stars, NO_HEADERS, PUSH).ok
    quoted = evaluate(rules("[{payload: repository.stars, equals: '3'}]").match, NO_HEADERS,
                      PUSH)
    assert quoted.reason == 'match[0]: payload repository.stars is 3, not "3"'
    private = rules("[{payload: repository.private, equals: false}]").match
    assert evaluate(private, NO_HEADERS, PUSH).ok
    assert not evaluate(private, NO_HEADERS, {"repository": {"private": 0}}).ok


def test_in_holds_for_any_listed_value() -> None:
    repo = rules("[{payload: repository.full_name, in: [me/docs, me/site]}]").match
    assert evaluate(repo, NO_HEADERS, PUSH).ok
    other = evaluate(repo, NO_HEADERS, {"repository": {"full_name": "you/x"}})
    assert other.reason == ('match[0]: payload repository.full_name is "you/x", not one of '
                            '"me/docs", "me/site"')


def test_regex_is_searched_in_text_only() -> None:
    branch = rules("[{payload: ref, regex: 'heads/(main|release/.+)$'}]").match
    assert evaluate(branch, NO_HEADERS, PUSH).ok  # not anchored at the start
    assert evaluate(branch, NO_HEADERS, {"ref": "refs/heads/release/1.2"}).ok
    dev = evaluate(branch, NO_HEADERS, {"ref": "refs/heads/dev"})
    assert dev.reason == ('match[0]: payload ref is "refs/heads/dev", which does not match '
                          '"heads/(main|release/.+)$"')
    number = evaluate(rules("[{payload: n, regex: '^4'}]").match, NO_HEADERS, {"n": 42})
    assert number.reason == "match[0]: payload n is 42, not text for regex"
    listed = evaluate(rules("[{payload: commits, regex: abc}]").match, NO_HEADERS, PUSH)
    assert listed.reason == "match[0]: payload commits is a list, not text for regex"


def test_every_top_level_rule_must_hold_and_the_first_failure_is_named() -> None:
    both = rules("[{header: X-GitHub-Event, equals: push}, {payload: ref, equals: "
                 "refs/heads/main}]").match
    assert evaluate(both, headers(x_github_event="push"), PUSH).ok
    verdict = evaluate(both, headers(x_github_event="push"), {"ref": "refs/heads/dev"})
    assert verdict.reason == 'match[1]: payload ref is "refs/heads/dev", not "refs/heads/main"'
    assert evaluate(both, NO_HEADERS, {}).reason.startswith("match[0]: ")


def test_any_and_all_groups_nest() -> None:
    hook = rules("[{any: [{payload: ref, equals: refs/heads/main}, "
                 "        {all: [{header: X-Force, equals: 'yes'}, "
                 "               {payload: repository.private, equals: false}]}]}]").match
    assert evaluate(hook, NO_HEADERS, PUSH).ok
    dev = {**PUSH, "ref": "refs/heads/dev"}
    assert evaluate(hook, headers(x_force="yes"), dev).ok
    refused = evaluate(hook, headers(x_force="no"), dev)
    assert refused.reason == (
        'match[0]: no item of any holds (match[0].any[0]: payload ref is "refs/heads/dev", not '
        '"refs/heads/main"; match[0].any[1].all[0]: header X-Force is "no", not "yes")')


def test_a_verdict_is_the_same_every_time() -> None:
    hook = rules("[{any: [{payload: a.b, regex: x+y}, {header: X-A, in: [p, q]}]}]").match
    for body in ({}, {"a": {"b": "xxy"}}, {"a": [1]}, {"a": {"b": "z"}}):
        for lookup_header in (NO_HEADERS, headers(x_a="q"), headers(x_a="r")):
            first = evaluate(hook, lookup_header, body)
            assert all(evaluate(hook, lookup_header, body) == first for _ in range(3))
            assert first.ok == (first.reason == "")
