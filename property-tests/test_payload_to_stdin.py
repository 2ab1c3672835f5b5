"""What is accepted reaches the plugin as it was sent: any JSON object payload, enqueued, claimed
by the real dispatcher and spawned, arrives on the plugin's stdin equal to what was enqueued.

Payloads are objects because a protocol v2 request carries the payload as an object (the API
refuses anything else with 400); the values inside are anything JSON holds: integers past 64
bits, floats at the edges of a double, negative zero, unicode, deep lists. The store's own
round trip of every JSON value (numbers, strings, lists at the top level too) is checked in
test_store_payload_roundtrip.py.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from support.dispatch import harness
from support.plugins import make_plugin

finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**200), max_value=2**200), finite,
    st.sampled_from([sys.float_info.max, -sys.float_info.max, 5e-324, -0.0, 1.5, 0.1 + 0.2]),
    st.text(max_size=30),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=25)
payloads = st.dictionaries(st.text(min_size=1, max_size=8), values, min_size=1, max_size=5)


@settings(max_examples=60)
@given(payload=payloads)
def test_an_object_payload_reaches_the_plugin_stdin_exactly(payload: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        received = trio.run(_run_once, Path(tmp), payload)
    assert received == payload
    # Equal as values is not enough for floats: the same double, sign of zero included.
    assert json.dumps(received, sort_keys=True) == json.dumps(payload, sort_keys=True)


async def _run_once(tmp: Path, payload: dict[str, Any]) -> Any:
    dump = tmp / "stdin.json"
    root = tmp / "plugins"
    make_plugin(root, "dumper",
                f"cat > '{dump}'\necho '{{\"status\": \"ok\", \"result\": \"dumped\"}}'")
    plugins = {"dumper": {"enabled": True, "retry": {"max_attempts": 1}}}
    async with harness(tmp, plugins=plugins, plugin_roots=[str(root)]) as h:
        job = await h.run("dumper", "poll", payload, timeout=30)
        assert job.status == "succeeded", job.last_error
    return json.loads(dump.read_text())["payload"]
