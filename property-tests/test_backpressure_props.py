"""Properties of ingress backpressure (ductile/events/outstanding.py, the config key).

* `max_outstanding_jobs`, whatever a YAML file holds there: an integer of 1 or more is kept as
  it is, anything else is a ConfigError naming the key and the range, never another exception.
* The count, driven through a real Hub by any sequence of job events (new jobs, ends, retries,
  recovery, rows changed behind its back, re-syncs whose reads race with new events), equals
  the live jobs of a model whenever nothing changed behind its back since the last re-sync;
  it is never negative and its total is always the sum of its plugins.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ductile.config.load import outstanding_bound
from ductile.config.reader import ConfigFile, Reader
from ductile.errors import ConfigError
from ductile.events.hub import Hub
from ductile.events.outstanding import Outstanding
from ductile.events.queue import terminal_event
from ductile.machines import job_statuses

KEY = "plugins.echo.max_outstanding_jobs"

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6)


@settings(max_examples=300)
@given(yaml_values)
def test_a_bound_is_an_integer_of_one_or_more_or_a_config_error_naming_the_key(
        value: Any) -> None:
    reader = Reader(ConfigFile("/cfg/config.yaml", "config.yaml"), [])
    try:
        kept = outstanding_bound(reader, value, KEY, absent="leave it out")
    except ConfigError as exc:
        assert exc.key == KEY
        assert str(exc).startswith(f"config.yaml: {KEY}: expected an integer of 1 or more")
        assert not (type(value) is int and value >= 1)
        return
    assert kept == value
    assert value is None or (type(value) is int and value >= 1)


@settings(max_examples=100)
@given(st.integers(min_value=-5, max_value=10**9) | st.text(max_size=8))
def test_a_bound_read_back_from_yaml_text_keeps_its_meaning(value: Any) -> None:
    """The same decision on the value as the YAML loader hands it over (`"7"` stays text)."""
    loaded = yaml.safe_load(yaml.safe_dump({"v": value}))["v"]
    reader = Reader(ConfigFile("/cfg/config.yaml", "config.yaml"), [])
    try:
        assert outstanding_bound(reader, loaded, KEY, absent="x") == loaded
        assert isinstance(loaded, int) and loaded >= 1
    except ConfigError:
        assert not (isinstance(loaded, int) and loaded >= 1)


PLUGINS = st.sampled_from(["echo", "slow", "core.relay"])
TERMINAL = sorted(job_statuses().terminal)


class CountMachine(RuleBasedStateMachine):
    """The count against a model of the queue: job id -> (plugin, live)."""

    def __init__(self) -> None:
        super().__init__()
        self.hub = Hub()
        self.counter = Outstanding()
        self.hub.add_tap(self.counter.observe)
        self.jobs: dict[int, tuple[str, bool]] = {}
        self.drifted = False  # a row changed behind the count since the last re-sync

    def truth(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for plugin, live in self.jobs.values():
            if live:
                counts[plugin] = counts.get(plugin, 0) + 1
        return counts

    def live(self) -> list[int]:
        return sorted(job for job, (_, live) in self.jobs.items() if live)

    # -- what the queue publishes ------------------------------------------------------

    def _enqueue(self, plugin: str, routed: bool) -> None:
        job = len(self.jobs)
        self.jobs[job] = (plugin, True)
        self.hub.publish("router.enqueued" if routed else "job.enqueued", job_id=str(job),
                         plugin=plugin, status="queued")

    def _end(self, index: int, status: str) -> None:
        live = self.live()
        if not live:
            return
        job = live[index % len(live)]
        plugin, _ = self.jobs[job]
        self.jobs[job] = (plugin, False)
        self.hub.publish(terminal_event(status), job_id=str(job), plugin=plugin, status=status)

    @rule(plugin=PLUGINS, routed=st.booleans())
    def enqueue(self, plugin: str, routed: bool) -> None:
        self._enqueue(plugin, routed)

    @rule(index=st.integers(min_value=0), status=st.sampled_from(TERMINAL))
    def end(self, index: int, status: str) -> None:
        self._end(index, status)

    @precondition(lambda self: bool(self.live()))
    @rule(index=st.integers(min_value=0), recovery=st.booleans())
    def still_outstanding(self, index: int, recovery: bool) -> None:
        """A retry, a start, or crash recovery sending a running job back to the queue."""
        live = self.live()
        job = live[index % len(live)]
        plugin, _ = self.jobs[job]
        if recovery:
            self.hub.publish("job.enqueued", job_id=str(job), plugin=plugin, status="queued",
                             recovery=True)
        else:
            self.hub.publish("job.retry_scheduled", job_id=str(job), plugin=plugin)
            self.hub.publish("job.started", job_id=str(job), plugin=plugin)

    @precondition(lambda self: bool(self.live()))
    @rule(index=st.integers(min_value=0))
    def ended_behind_its_back(self, index: int) -> None:
        """Another writer (the CLI) ends a job: no event."""
        live = self.live()
        job = live[index % len(live)]
        self.jobs[job] = (self.jobs[job][0], False)
        self.drifted = True

    @rule(during=st.lists(st.tuples(st.booleans(), PLUGINS, st.integers(min_value=0),
                                    st.sampled_from(TERMINAL)), max_size=5))
    def resync(self, during: list[tuple[bool, str, int, str]]) -> None:
        """A re-sync whose read sees the database as it was when it began, while the queue
        goes on publishing."""
        self.counter.begin_resync()
        snapshot = self.truth()
        for new, plugin, index, status in during:
            if new:
                self._enqueue(plugin, routed=False)
            else:
                self._end(index, status)
        self.counter.finish_resync(snapshot)
        self.drifted = False

    # -- what must hold ----------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        counts = self.counter.by_plugin
        assert all(n > 0 for n in counts.values())
        assert self.counter.total == sum(counts.values())

    @invariant()
    def exact_unless_drifted(self) -> None:
        if not self.drifted:
            assert self.counter.by_plugin == self.truth()


CountMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30)
TestCount = CountMachine.TestCase
