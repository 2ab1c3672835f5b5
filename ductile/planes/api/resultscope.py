"""The result-class scope `jobs:result:ro`: what a job produced is shown only to a token that
holds it.

A job's status (plugin, command, when it ran, how it ended) and its output are separate grants,
as in the newest Go gateway. A token with only `jobs:status:ro`, `jobs:tree:ro` or
`jobs:logs:ro` sees the ledger without what the plugins wrote: each answer it gets leaves the
result-class fields out (omitted, never nulled, so a client cannot mistake "hidden" for "none").
`jobs:result:ro`, and everything that implies it (`jobs:ro`, `jobs:rw`, `*`), sees them.

Every route that shows a job's output calls these pure functions, so the rule is written once:

- `strip_result_class(view, principal)`: one JSON object (`GET /job/{id}`, `/jobs`,
  `/job-logs`, `/job/{id}/tree` with `TREE_FIELDS`, the web ledger with `ATTEMPT_FIELDS`);
- `transition_view(view, principal)`: one status transition of the web ledger, whose reason
  ends with the attempt's error text;
- `event_frame(event, principal)`: one `GET /events` frame, with `EVENT_FIELDS` left out of
  its data.

What is deliberately not covered: the answer of a synchronous run (`POST /plugins/{name}/run`,
`POST /plugin/{plugin}/{command}`, `POST /pipeline/{name}`) goes to the caller who ran the
job, under the scope that let it run it, as in the Go original; and a webhook's
`respond: result` has no token to judge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ductile.config.scopes import satisfies

if TYPE_CHECKING:
    from ductile.events.hub import Event
    from ductile.planes.api.auth import Principal

#: The scope that shows a job's output.
RESULT_SCOPE = "jobs:result:ro"

#: The Go gateway's result-class fields of a job, a job log row and a tree node.
RESULT_FIELDS: frozenset[str] = frozenset({"result", "last_error", "stderr"})
#: A tree node also carries its run's baggage: values claimed from the steps' output.
TREE_FIELDS: frozenset[str] = RESULT_FIELDS | {"baggage"}
#: An attempt of the web ledger: its `error` is that attempt's last_error.
ATTEMPT_FIELDS: frozenset[str] = RESULT_FIELDS | {"error"}
#: Event data fields that carry a plugin's words: errors, messages and results.
EVENT_FIELDS: frozenset[str] = RESULT_FIELDS | {"error", "final_error", "message", "text"}

#: The clause the OpenAPI descriptions and refusals share.
RULE = (f"result, last_error and stderr are omitted unless the token holds {RESULT_SCOPE} "
        "(jobs:ro, jobs:rw and * include it)")


def may_see_results(principal: Principal | None) -> bool:
    """Whether `principal` holds `jobs:result:ro` (or what implies it). No principal (a route
    that authenticated nobody) sees nothing result-class: the rule fails closed."""
    return principal is not None and satisfies(principal.scopes, (RESULT_SCOPE,))


def strip_result_class(view: Mapping[str, Any], principal: Principal | None,
                       fields: frozenset[str] = RESULT_FIELDS) -> dict[str, Any]:
    """`view` as `principal` may see it: a copy without `fields` unless it holds the scope."""
    if may_see_results(principal):
        return dict(view)
    return {key: value for key, value in view.items() if key not in fields}


def transition_view(view: Mapping[str, Any], principal: Principal | None) -> dict[str, Any]:
    """A job's status transition as `principal` may see it. Its `reason` is a code, then
    `": "` and the attempt's error text when there was one (`failed: <last_error>`): without
    the scope only the code is kept."""
    out = dict(view)
    reason = out.get("reason")
    if isinstance(reason, str) and not may_see_results(principal):
        out["reason"] = reason.split(": ", 1)[0]
    return out


def event_frame(event: Event, principal: Principal | None) -> str:
    """The SSE frame of `event` for `principal`: as published, or re-encoded without
    `EVENT_FIELDS` when the subscriber lacks the scope and the event carries one of them."""
    if may_see_results(principal):
        return event.frame()
    data = event.fields()
    if not EVENT_FIELDS.intersection(data):
        return event.frame()
    kept = {key: value for key, value in data.items() if key not in EVENT_FIELDS}
    text = json.dumps(kept, separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.type}\ndata: {text}\n\n"
