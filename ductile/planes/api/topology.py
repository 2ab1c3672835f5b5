"""How a runtime generation is wired, for `GET /topology` and the `compiled_routes` of
`GET /config/view`: pure functions of the serving `Runtime`, no I/O.

The Go original's topology is a signal graph: each plugin with the events it emits (its
manifest's `values.emit`) and the events it consumes (the pipeline steps that run it, keyed by
the event type that leads to the step, else the pipeline's trigger), and each signal with its
producers and consumers. We keep that shape and add, under keys of their own, what else starts
or carries work here: pipelines with their steps and edges, webhooks, schedules and relay
peers. Everything is sorted, so two calls on one generation answer the same document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ductile import __version__
from ductile.router.conditions import AllOf, AnyOf, Condition, Not, Predicate

if TYPE_CHECKING:
    from ductile.router.dsl import Node, Pipeline, PipelineSet
    from ductile.runtime import Runtime

#: The command a pipeline's `uses:` step runs (router/dsl.py).
STEP_COMMAND = "handle"


@dataclass(frozen=True, order=True)
class _Link:
    signal: str
    plugin: str
    command: str


def topology(rt: Runtime, captured_at: str) -> dict[str, Any]:
    outputs = {_Link(emit.event, name, cmd.name)
               for name, plugin in rt.plugins.items()
               for cmd in plugin.manifest.commands for emit in cmd.values.emit if emit.event}
    inputs = {_Link(signal, node.plugin, STEP_COMMAND)
              for pipeline in rt.pipelines.pipelines.values()
              for signal, node in _consumed(pipeline) if node.plugin}
    names = sorted({link.plugin for link in outputs | inputs} | set(rt.plugins))
    plugins = []
    for name in names:
        found = rt.plugins.get(name)
        plugins.append({
            "name": name,
            "version": found.manifest.version if found else "",
            "active": found is not None,
            "inputs": [{"signal": x.signal, "command": x.command}
                       for x in sorted(inputs) if x.plugin == name],
            "outputs": [{"signal": x.signal, "command": x.command}
                        for x in sorted(outputs) if x.plugin == name],
        })
    signals = [{"name": signal,
                "producers": [{"plugin": x.plugin, "command": x.command}
                              for x in sorted(outputs) if x.signal == signal],
                "consumers": [{"plugin": x.plugin, "command": x.command}
                              for x in sorted(inputs) if x.signal == signal]}
               for signal in sorted({x.signal for x in outputs | inputs})]
    return {
        "version": __version__,
        "captured_at": captured_at,
        "plugins": plugins,
        "signals": signals,
        "pipelines": [_pipeline(p) for _, p in sorted(rt.pipelines.pipelines.items())],
        "webhooks": sorted(({"path": e.path, "name": e.name, "plugin": e.plugin,
                             "command": e.command, "scheme": e.scheme}
                            for e in rt.config.webhooks.endpoints), key=lambda w: w["path"]),
        "schedules": [{"plugin": name, "id": s.id, "command": s.command,
                       **{k: s.raw[k] for k in ("every", "cron", "at", "after") if k in s.raw}}
                      for name, conf in sorted(rt.config.plugins.items()) if conf.enabled
                      for s in conf.schedules],
        "relay": _relay(rt),
    }


def compiled_routes(pipelines: PipelineSet) -> dict[str, list[dict[str, Any]]]:
    """Per pipeline, each compiled route: what starts it (the trigger, hook signal, source
    plugin and `if`, or a step and the event type it emitted) and what it dispatches."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, pipeline in sorted(pipelines.pipelines.items()):
        routes = []
        for step in pipeline.entries:
            routes.append({
                "id": f"{name}:trigger->{step}",
                "source": {"trigger": pipeline.on, "hook_signal": pipeline.on_hook,
                           "source_plugin": pipeline.from_plugin, "pipeline": name,
                           "step_id": None, "event_type": pipeline.on,
                           "if": condition_doc(pipeline.condition)},
                "destination": _destination(pipeline.nodes[step]),
            })
        for source in sorted(pipeline.edges):
            for edge in pipeline.edges[source]:
                routes.append({
                    "id": f"{name}:{source}:{edge.event_type or '*'}->{edge.target}",
                    "source": {"trigger": None, "hook_signal": None,
                               "source_plugin": pipeline.nodes[source].plugin or None,
                               "pipeline": name, "step_id": source,
                               "event_type": edge.event_type, "if": None},
                    "destination": {**_destination(pipeline.nodes[edge.target]),
                                    "mode": edge.mode},
                })
        out[name] = routes
    return out


def condition_doc(condition: Condition | None) -> Any:
    """A compiled `if:` as the config writes it (`{path, op, value}`, `all`, `any`, `not`)."""
    if condition is None:
        return None
    if isinstance(condition, Predicate):
        doc: dict[str, Any] = {"path": condition.path, "op": condition.op}
        if condition.value is not None:
            doc["value"] = condition.value
        return doc
    if isinstance(condition, AllOf):
        return {"all": [condition_doc(m) for m in condition.members]}
    if isinstance(condition, AnyOf):
        return {"any": [condition_doc(m) for m in condition.members]}
    if isinstance(condition, Not):
        return {"not": condition_doc(condition.member)}
    return None


def _consumed(pipeline: Pipeline) -> list[tuple[str, Node]]:
    """(signal, node) for every uses step: the event type of the edge that leads to it, else
    the pipeline's trigger (the original's rule). A step behind an `if:` is reached through
    its switch node, whose true/false events are internal: it consumes what reaches the
    switch."""
    trigger = pipeline.on or pipeline.on_hook or pipeline.trigger
    incoming: dict[str, set[str]] = {step: {trigger} for step in pipeline.entries}
    for edges in pipeline.edges.values():
        for edge in edges:
            incoming.setdefault(edge.target, set())

    def reaching(step: str, seen: frozenset[str]) -> set[str]:
        signals = set(incoming.get(step, ()))
        for source, edges in pipeline.edges.items():
            for edge in edges:
                if edge.target != step or source in seen:
                    continue
                if pipeline.nodes[source].kind == "switch":
                    signals |= reaching(source, seen | {step})
                else:
                    signals.add(edge.event_type or trigger)
        return signals

    return [(signal, node) for step, node in sorted(pipeline.nodes.items())
            if node.kind == "uses" for signal in sorted(reaching(step, frozenset({step})))]


def _destination(node: Node) -> dict[str, Any]:
    return {"kind": node.kind, "step_id": node.id, "plugin": node.plugin or None,
            "command": STEP_COMMAND if node.kind == "uses" else None,
            "call_pipeline": node.call,
            "relay_to": node.relay.to if node.relay else None,
            "relay_event": node.relay.event if node.relay else None}


def _pipeline(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "name": pipeline.name,
        "trigger": pipeline.trigger,
        "on_hook": pipeline.on_hook,
        "from_plugin": pipeline.from_plugin,
        "execution_mode": pipeline.execution_mode,
        "steps": [{"id": n.id, "kind": n.kind, "plugin": n.plugin or None,
                   "call": n.call, "relay_to": n.relay.to if n.relay else None}
                  for _, n in sorted(pipeline.nodes.items())],
        "edges": [{"from": e.source, "to": e.target, "event_type": e.event_type}
                  for source in sorted(pipeline.edges) for e in pipeline.edges[source]],
    }


def _relay(rt: Runtime) -> dict[str, Any]:
    relay = rt.config.relay
    ingress = relay.ingress
    return {
        "instances": [{"name": i.name, "enabled": i.enabled, "base_url": i.base_url,
                       "allow": list(i.allow)} for i in sorted(relay.instances,
                                                                key=lambda i: i.name)],
        "peers": [] if ingress is None else [
            {"name": p.name, "enabled": p.enabled, "signing": p.signing,
             "accept": list(p.accept)} for p in sorted(ingress.peers, key=lambda p: p.name)],
        "listen_path": ingress.listen_path if ingress is not None else None,
    }
