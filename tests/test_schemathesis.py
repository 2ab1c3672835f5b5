"""Every operation of GET /openapi.json, driven by schemathesis against a real gateway.

For each operation: requests generated from its declared schema (valid ones, then invalid
ones), each sent with a token of every scope (`*`), with a read-only one (its 403s) and
without a token; the vault routes also with
the vault admin token (their writes land in this test's throwaway vault, and the names
Hypothesis draws are not the API tokens' secrets). Operations with a path parameter run a
second time with the parameter set to something that exists (the echo plugin, a real job, the
configured pipeline and relay peer), so the requests get past the 404. A run fails on any 5xx,
any answer whose body or media type breaks the declaration, and any request without an answer
within REQUEST_TIMEOUT (a hang).

Bounded: EXAMPLES examples per operation and mode, derandomized (the same requests every run),
no example database, no shrinking-heavy phases.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.apidoc import PEER, PIPELINE, full_config
from support.gateway import READ_TOKEN, TOKEN, Gateway, free_port

#: Examples per operation, per generation mode and per set of path parameters.
EXAMPLES = 8
#: Seconds one request may take (a synchronous run of echo answers in well under one).
REQUEST_TIMEOUT = 20.0
#: Operations left out, and why. Reload, the scheduler's controls, the job verbs and the vault
#: writes are all in: they are safe to repeat on a throwaway gateway.
EXCLUDED: dict[tuple[str, str], str] = {
    ("GET", "/events"): "a live stream that never ends by design: every request would wait "
                        "out REQUEST_TIMEOUT",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    port = free_port()
    directory: Path = tmp_path_factory.mktemp("schemathesis")
    admin = full_config(directory, port)
    gw = Gateway(directory, port).start()
    yield gw, admin
    gw.stop()


def _known(gw: Gateway) -> dict[str, str]:
    """Path parameter values that exist on this gateway."""
    job = gw.post("/plugins/echo/run", {"payload": {"message": "hi"}, "sync": True}).json()
    return {"plugin": "echo", "name": "echo", "command": "poll", "job_id": job["job_id"],
            "peer": PEER, "action": "pause"}


def test_every_operation_holds_to_its_schema(gateway: tuple[Gateway, str]) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import (content_type_conformance,
                                                   response_schema_conformance,
                                                   status_code_conformance)
    from schemathesis.checks import not_a_server_error

    gw, admin = gateway
    doc = gw.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    known = _known(gw)
    checks = [not_a_server_error, response_schema_conformance, status_code_conformance,
              content_type_conformance]
    ran: list[str] = []

    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in EXCLUDED:
            continue
        credentials: list[dict[str, str]] = [{"Authorization": f"Bearer {TOKEN}"},
                                             {"Authorization": f"Bearer {READ_TOKEN}"}, {}]
        if operation.path.startswith("/vault/"):
            credentials.append({"Authorization": f"Bearer {admin}"})
        names = {p.name for p in operation.path_parameters}
        parameter_sets: list[dict[str, str] | None] = [None]
        if names:
            if operation.path == f"/pipeline/{{name}}":
                parameter_sets.append({"name": PIPELINE})
            elif names <= set(known):
                parameter_sets.append({n: known[n] for n in names})
        ran.append(f"{key[0]} {key[1]}")
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for params in parameter_sets:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=params)

                @settings(max_examples=EXAMPLES, derandomize=True, database=None,
                          deadline=None, phases=[Phase.explicit, Phase.generate],
                          suppress_health_check=list(HealthCheck))
                @given(case=strategy)
                def exercise(case: Any) -> None:
                    for headers in credentials:
                        try:
                            case.call_and_validate(base_url=gw.url, headers=headers,
                                                   checks=checks, timeout=REQUEST_TIMEOUT)
                        except Exception as exc:
                            exc.add_note(f"{key[0]} {key[1]} ({mode.value} data, "
                                         f"{'with' if headers else 'without'} a credential)")
                            raise

                try:
                    exercise()
                except Unsatisfiable:
                    # Nothing of this operation can be made invalid (no parameter, no body).
                    assert mode is GenerationMode.NEGATIVE, key

    assert len(ran) + len(EXCLUDED) == sum(len(ops) for ops in doc["paths"].values())
    # The gateway is still serving after all of it.
    assert gw.get("/healthz").status_code == 200
