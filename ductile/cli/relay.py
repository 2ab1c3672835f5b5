"""`ductile relay send` and `ductile relay keygen`.

`send` delivers one event to a configured instance straight from the CLI, signed with the key
the vault holds for it, as the pipeline step `relay:` does (without the retries: the CLI tells
you at once what the receiver said). `keygen` prints a new Ed25519 signing seed (for the
sender's vault) and its public key (for the receiver's `remote_ingress.peers[].public_key`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ductile.cli.common import config_option, emit_json, fail, json_object_option, json_option
from ductile.cli.common import load as load_config


@click.group()
def relay() -> None:
    """Send events to peer gateways (docs/relay.md)."""


@relay.command("send")
@click.argument("instance")
@click.option("--event", "event_type", default=None, help="The event type to send (required).")
@click.option("--payload", default=None, help="The event payload, a JSON object.")
@click.option("--payload-file", type=click.Path(dir_okay=False), default=None,
              help="Read the payload JSON object from a file ('-' for stdin).")
@click.option("--baggage", default=None, help="Root baggage for the receiver, a JSON object.")
@click.option("--dedupe-key", default=None, help="The event's dedupe key on the receiver.")
@click.option("--origin-plugin", default="", help="origin.plugin of the envelope.")
@click.option("--origin-job-id", default="", help="origin.job_id of the envelope.")
@click.option("--origin-event-id", default="",
              help="origin.event_id (the receiver derives its dedupe key from it).")
@config_option
@json_option
def send_cmd(instance: str, event_type: str | None, payload: str | None,
             payload_file: str | None, baggage: str | None, dedupe_key: str | None,
             origin_plugin: str, origin_job_id: str, origin_event_id: str,
             config_path: str | None, as_json: bool) -> None:
    """Send one event to the relay INSTANCE (from `instances:`) and print the receiver's ids."""
    import trio

    from ductile.relay.envelope import EVENT_TYPE, build_envelope
    from ductile.relay.sender import RelaySendError, send

    if not event_type:
        fail("--event is required")
    if not EVENT_TYPE.match(event_type):
        fail(f"--event {event_type!r} must use lower-case dotted form (such as backup.ready)")
    if payload and payload_file:
        fail("use only one of --payload or --payload-file")
    text = payload
    if payload_file:
        text = sys.stdin.read() if payload_file == "-" else _read(payload_file)
    body_payload = json_object_option(text, "--payload") or {}
    body_baggage = json_object_option(baggage, "--baggage")
    cfg = load_config(config_path)
    service = _service(cfg)
    found = next((i for i in cfg.relay.instances if i.name == instance), None)
    if found is None or not found.enabled:
        fail(f'Relay send failed: relay instance "{instance}" not configured')
    target = service.target(instance)
    if target is None:
        fail(f'Relay send failed: relay instance "{instance}": secret_ref '
             f'"{found.secret_ref}" cannot be read from the vault here')
    if found.allow and event_type not in found.allow:
        fail(f'Relay send failed: relay instance "{instance}" does not allow event type '
             f'"{event_type}"')
    origin = {"instance": service.sender, "plugin": origin_plugin, "job_id": origin_job_id,
              "event_id": origin_event_id}
    body = build_envelope(event_type, body_payload, origin=origin, dedupe_key=dedupe_key,
                          baggage=body_baggage)
    try:
        accepted: dict[str, Any] = trio.run(send, target, body)
    except RelaySendError as exc:
        fail(f"Relay send failed: {exc}")
    if as_json:
        emit_json({"instance": instance, "event_type": event_type, "accepted": accepted})
        return
    click.echo(f"Relayed {event_type} to {instance}")
    click.echo(f"Receiver event id: {accepted.get('receiver_event_id', '')}")
    click.echo(f"Receiver job id: {accepted.get('job_id') or '(no pipeline matched)'}")


@relay.command("keygen")
@json_option
def keygen(as_json: bool) -> None:
    """Print a new Ed25519 signing seed and its public key (base64)."""
    import base64

    from ductile.relay.envelope import public_key_for

    seed = os.urandom(32)
    seed_text = base64.b64encode(seed).decode()
    public = base64.b64encode(public_key_for(seed)).decode()
    if as_json:
        emit_json({"signing_seed": seed_text, "public_key": public})
        return
    click.echo(f"signing seed (sender's vault, secret_ref of the instance): {seed_text}")
    click.echo(f"public key (receiver's remote_ingress.peers[].public_key): {public}")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        fail(f"--payload-file {path}: {exc.strerror or exc}")


def _service(cfg: Any) -> Any:
    """The relay resolved against this user's view of the vault."""
    from ductile.errors import VaultError
    from ductile.relay.service import build
    from ductile.vault.owner import load_vault

    secrets: dict[str, str] = {}
    try:
        loaded = load_vault(cfg.config_dir, cfg.secrets.vault_file, cfg.secrets.key_file,
                            os.environ, os.path.expanduser("~"))
        if loaded.owner is not None:
            secrets = dict(loaded.owner.resolved_secrets().values)
    except (VaultError, OSError) as exc:
        fail(f"Relay send failed: the vault cannot be opened: {exc}")
    service, problems = build(cfg.relay, cfg.service.name, secrets)
    if problems:
        fail(f"Relay send failed: {problems[0]}")
    return service


