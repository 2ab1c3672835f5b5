"""Attestation at the moment of trust: a plugin's entrypoint is re-verified right before the
plugin is handed vault secrets, so bytes changed after boot (or after `plugin lock`) never see
a secret.

The baseline for each plugin is the keyed fingerprint `ductile plugin lock` recorded in the
`.checksums` seal when there is one, else the fingerprint taken at boot and recorded in the
config snapshot. Both are blake2b-256 keyed with the vault's nonce, so a fingerprint read from
the seal or the database cannot be forged without the vault.

Cost: hashing a file per job would cost as much as the job. The check first compares the
entrypoint's `stat` (device, inode, size, mtime and ctime in nanoseconds) with the one its last
hash was taken for, and hashes again only when it changed; any write, rename over, chmod or
touch changes ctime, so nothing slips between. The cache lives in the generation's `Attestor`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ductile.config.seal import keyed_file_digest, short

_StatKey = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class Baseline:
    """What a plugin's entrypoint must hash to: its resolved path, the keyed digest, and where
    the digest came from (`seal` or `boot`)."""

    path: str
    digest: str
    source: str


class Attestor:
    """Checks entrypoints against their baselines, re-hashing only after a file change."""

    def __init__(self, nonce: bytes, baselines: Mapping[str, Baseline],
                 unattested: Mapping[str, str] | None = None) -> None:
        self._nonce = nonce
        self._baselines = dict(baselines)
        self._unattested = dict(unattested or {})  # plugin -> why boot could not fingerprint it
        self._seen: dict[str, tuple[_StatKey, str]] = {}  # path -> (stat, digest)

    def baseline(self, plugin: str) -> Baseline | None:
        return self._baselines.get(plugin)

    def document(self) -> list[dict[str, str]]:
        """The baselines as the config snapshot records them (`plugin_fingerprints`)."""
        return [{"plugin": name, "entrypoint": base.path, "entrypoint_hash": base.digest,
                 "source": base.source} for name, base in sorted(self._baselines.items())]

    def refusal(self, plugin: str) -> str | None:
        """None when `plugin` may receive secrets; else why not, naming plugin and file."""
        base = self._baselines.get(plugin)
        if base is None:
            why = self._unattested.get(plugin, "it was not fingerprinted at boot")
            return (f"attestation: plugin {plugin!r} has no attested fingerprint ({why}); "
                    "no secrets were delivered — reload once the plugin is in place")
        try:
            digest = self._digest(base.path)
        except OSError as exc:
            return (f"attestation: plugin {plugin!r}: cannot read {base.path} "
                    f"({exc.strerror or exc}); no secrets were delivered")
        if digest == base.digest:
            return None
        recorded = "the .checksums seal" if base.source == "seal" else "boot"
        return (f"attestation: plugin {plugin!r}: {base.path} changed since {recorded} "
                f"(keyed fingerprint {short(digest)}, attested {short(base.digest)}); no "
                f"secrets were delivered — review the change, then run 'ductile plugin lock "
                f"{plugin}' and reload")

    def _digest(self, path: str) -> str:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        seen = self._seen.get(path)
        if seen is not None and seen[0] == key:
            return seen[1]
        digest = keyed_file_digest(path, self._nonce)
        self._seen[path] = (key, digest)
        return digest


def take_baselines(
    entrypoints: Mapping[str, str], nonce: bytes, sealed: Mapping[str, tuple[str, str]],
) -> tuple[dict[str, Baseline], dict[str, str]]:
    """Each plugin's baseline: the seal's record (`sealed`: plugin -> (resolved path, digest))
    when there is one, else its entrypoint hashed now. Returns (baselines, plugin -> why it
    could not be fingerprinted)."""
    baselines: dict[str, Baseline] = {}
    problems: dict[str, str] = {}
    for plugin, entrypoint in sorted(entrypoints.items()):
        record = sealed.get(plugin)
        if record is not None:
            baselines[plugin] = Baseline(record[0], record[1], "seal")
            continue
        real = os.path.realpath(entrypoint)
        try:
            baselines[plugin] = Baseline(real, keyed_file_digest(real, nonce), "boot")
        except (OSError, ValueError) as exc:
            problems[plugin] = (str(exc) if isinstance(exc, ValueError)
                                else f"cannot read {real}: {exc.strerror or exc}")
    return baselines, problems
