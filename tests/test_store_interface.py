"""Both queues (SQLite's `Queue`, PostgreSQL's `PgQueue`) implement the store interface
(ductile/store/interface.py), and the layers above the store call nothing on `Runtime.queue`
beyond it. What the methods do is tests/test_store_contract.py's subject.

The Protocols are structural, so nothing at runtime stops a queue and them from drifting apart:
these tests do. Every Protocol method must exist on each queue as a coroutine function with the
same parameters (names, kinds, defaults, annotations) and return annotation. The sources of the
dispatcher, the scheduler and the planes are read to find what they call on the queue, which
must be exactly `JobQueue`: a new call means the interface (and a second backend) grows.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ductile
from ductile.store.interface import JobQueue, OrphanRecovery
from ductile.store.pg.queue import PgQueue
from ductile.store.queue import Queue

PACKAGE = Path(ductile.__file__).parent
# Where a bare name `queue` is the job queue (dispatch/record.py takes it as a parameter).
UPPER_LAYERS = ("dispatch", "schedule", "planes")


def protocol_methods(protocol: type) -> list[str]:
    return sorted(
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and inspect.isfunction(value)
    )


CASES = [(protocol, name) for protocol in (JobQueue, OrphanRecovery)
         for name in protocol_methods(protocol)]
#: Both backends: SQLite's Queue and PostgreSQL's PgQueue (store/pg/queue.py).
IMPLEMENTATIONS = [Queue, PgQueue]


def shape(function: Callable[..., Any]) -> tuple[list[tuple[str, Any, Any, Any]], Any]:
    """Parameters as (name, kind, default, annotation), and the return annotation."""
    signature = inspect.signature(function)
    parameters = [
        (p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()
    ]
    return parameters, signature.return_annotation


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("protocol", "name"), CASES, ids=[f"{p.__name__}.{n}" for p, n in CASES]
)
def test_queue_implements_each_protocol_method(
    implementation: type, protocol: type, name: str
) -> None:
    wanted = getattr(protocol, name)
    found = getattr(implementation, name, None)
    assert found is not None, f"{implementation.__name__} has no {name}"
    assert inspect.iscoroutinefunction(found) == inspect.iscoroutinefunction(wanted)
    assert shape(found) == shape(wanted)


def test_the_protocols_are_not_empty() -> None:
    assert len(protocol_methods(JobQueue)) >= 10
    assert protocol_methods(OrphanRecovery) == ["recover_orphans"]


def _queue_calls(path: Path, bare_name: bool) -> set[str]:
    """Attributes read off `<anything>.queue` (Runtime.queue) and, when `bare_name`, off a
    plain `queue` variable."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if isinstance(owner, ast.Attribute) and owner.attr == "queue":
            found.add(node.attr)
        elif bare_name and isinstance(owner, ast.Name) and owner.id == "queue":
            found.add(node.attr)
    return found


def test_the_upper_layers_call_exactly_the_job_queue_interface() -> None:
    called: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if parts[0] == "store":
            continue
        called |= _queue_calls(path, bare_name=parts[0] in UPPER_LAYERS)
    assert called == set(protocol_methods(JobQueue))


def _statically_checked(queue: Queue, pg: PgQueue) -> tuple[JobQueue, OrphanRecovery, JobQueue]:
    """Never called: a type checker verifies here that both queues satisfy the Protocols."""
    return queue, queue, pg
