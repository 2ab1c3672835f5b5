"""What one runtime generation resolved for the relay: the instances it sends to (with their
keys from the vault), the peers it accepts from, and the receiver's policy.

Built at boot from the config and the gateway-visible vault secrets (`build`), so a rolled
secret takes effect at the next reload, as for webhooks. Holds no connection and no state of
its own: replay protection lives in the database (`store/relay.py`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field

from ductile.config.relay import RelayConfig, RelayInstance
from ductile.relay.envelope import ED25519, IngressPolicy, PeerKey
from ductile.relay.sender import Clients, Target, target_path


@dataclass(frozen=True)
class RelayService:
    """The resolved relay of a generation (`configured` False when there is none)."""

    sender: str = "ductile"
    instances: Mapping[str, RelayInstance] = field(default_factory=dict)
    keys: Mapping[str, bytes] = field(default_factory=dict)  # instance name -> signing key
    peers: Mapping[str, PeerKey] = field(default_factory=dict)
    policy: IngressPolicy | None = None  # None: no receiver
    listen_path: str = ""
    # The process's pooled connections to receivers (None: a client per delivery).
    clients: Clients | None = field(default=None, compare=False)

    @property
    def receiving(self) -> bool:
        return self.policy is not None

    def target(self, name: str) -> Target | None:
        """How to reach the enabled instance `name`, or None when it is not configured."""
        instance = self.instances.get(name)
        key = self.keys.get(name)
        if instance is None or key is None:
            return None
        return Target(name=name, url=instance.base_url.rstrip("/"),
                      path=target_path(instance.ingress_path, self.sender),
                      mode=instance.signing, key=key, key_id=instance.key_id,
                      timeout=instance.timeout, sender=self.sender)


def build(relay: RelayConfig, sender: str, secrets: Mapping[str, str]) -> tuple[RelayService,
                                                                               list[str]]:
    """The service, and the problems that keep a secret from being usable (each names the
    instance or peer and what to do). A missing secret is the gate secret_refs_resolved's to
    report; here only a value of the wrong form is."""
    problems: list[str] = []
    instances: dict[str, RelayInstance] = {}
    keys: dict[str, bytes] = {}
    for instance in relay.instances:
        if not instance.enabled:
            continue
        instances[instance.name] = instance
        value = secrets.get(instance.secret_ref)
        if value is None:
            continue
        key = _signing_key(instance.signing, value)
        if key is None:
            problems.append(f'relay instance "{instance.name}": secret_ref '
                            f'"{instance.secret_ref}" must hold the base64 of a 32-byte Ed25519 '
                            "signing seed (ductile relay keygen prints one)")
            continue
        keys[instance.name] = key
    peers: dict[str, PeerKey] = {}
    policy = None
    listen_path = ""
    ingress = relay.ingress
    if ingress is not None:
        policy = IngressPolicy(max_body_size=ingress.max_body_size,
                               allowed_clock_skew=ingress.allowed_clock_skew,
                               require_key_id=ingress.require_key_id)
        listen_path = ingress.listen_path
        for peer in ingress.peers:
            secret = secrets.get(peer.secret_ref, "").encode() if peer.secret_ref else b""
            public = _b64(peer.public_key) if peer.public_key else b""
            peers[peer.name] = PeerKey(name=peer.name, enabled=peer.enabled, mode=peer.signing,
                                       secret=secret, public_key=public or b"",
                                       key_id=peer.key_id, accept=peer.accept,
                                       baggage_allow=peer.baggage_allow)
    return RelayService(sender=sender, instances=instances, keys=keys, peers=peers,
                        policy=policy, listen_path=listen_path), problems


def _signing_key(mode: str, value: str) -> bytes | None:
    if mode != ED25519:
        return value.encode()
    seed = _b64(value.strip())
    return seed if seed is not None and len(seed) == 32 else None


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
