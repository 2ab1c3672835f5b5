"""Judge a config directory against its integrity seal (`.checksums`, see `config/seal.py`).

Two halves, so the judgement is easy to test and shared by boot, reload and `config check`:

- `collect_seal_facts` does the I/O: reads the seal, hashes every sealed file, and (when the
  seal attests plugins) fingerprints the configured plugins with the vault nonce.
- `verify_integrity` is pure: facts in, errors and warnings out. A drifted high-security file
  (webhooks.yaml, tokens.yaml, scopes/*.json) is an error, an operational one (config.yaml,
  routes.yaml, ...) a warning; `fail_on_drift` makes the gate refuse on warnings too. Plugin
  fingerprints: a changed enabled plugin is an error, a changed disabled one a warning.

`integrity_policy` says when the seal must hold: at startup only under
`service.admission.verify_integrity_on_boot`; on a reload whenever a seal exists (or the running
config verified at boot), with `fail_on_drift` taken from the running config, so a reload cannot
relax it. The plugin change set and its confirmation code (`plugin lock --all`) live here too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ductile.config.seal import (
    NONCE_BYTES,
    Checksums,
    PluginFingerprint,
    SealedFile,
    digest_bytes,
    discover_sealed_files,
    file_digest,
    fingerprint_plugin,
    read_checksums,
    seal_path,
    short,
)
from ductile.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from ductile.config.schema import AdmissionConfig, PluginConf
    from ductile.plugin.discovery import Plugin

LOCK = "ductile config lock"
LOCK_ALL = "ductile plugin lock --all"


@dataclass(frozen=True)
class FileFact:
    """One sealed file as found now: its hash, or why it could not be hashed."""

    file: SealedFile
    digest: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Configured:
    """What the config says about one plugin stanza, as attestation compares it."""

    enabled: bool
    uses: str = ""


@dataclass(frozen=True)
class SealFacts:
    """Everything `verify_integrity` judges, gathered with I/O beforehand."""

    config_dir: str
    root_file: str
    seal_path: str
    seal: Checksums | None = None  # None: no seal, or an unusable one (seal_problem)
    seal_problem: str | None = None  # the seal exists but cannot be used
    discover_error: str | None = None
    files: tuple[FileFact, ...] = ()
    configured: Mapping[str, Configured] = field(default_factory=dict)
    # Current fingerprints of configured plugins (computed only when the seal attests any):
    # the fingerprint, or why it cannot be computed (not discovered, unreadable).
    current: Mapping[str, PluginFingerprint | str] = field(default_factory=dict)
    nonce_problem: str | None = None  # why plugin hashes cannot be keyed now

    @property
    def sealed(self) -> bool:
        """A seal file exists (usable or not)."""
        return self.seal is not None or self.seal_problem is not None


@dataclass(frozen=True)
class IntegrityVerdict:
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class IntegrityPolicy:
    verify: bool
    fail_on_drift: bool


# --------------------------------------------------------------------------- policy


def integrity_policy(*, reason: str, admission: AdmissionConfig,
                     previous: AdmissionConfig | None, sealed: bool) -> IntegrityPolicy:
    """When the seal must hold, and whether drift (a warning) refuses.

    Startup: only under `verify_integrity_on_boot`. Reload: whenever a seal exists, or either
    config asks for verification (so deleting the seal under a verifying gateway is judged,
    not skipped); `fail_on_drift` is the running config's, so a reload cannot switch it off.
    """
    if reason == "reload" and previous is not None:
        verify = sealed or previous.verify_integrity_on_boot or admission.verify_integrity_on_boot
        return IntegrityPolicy(verify=verify, fail_on_drift=previous.fail_on_drift)
    return IntegrityPolicy(verify=admission.verify_integrity_on_boot,
                           fail_on_drift=admission.fail_on_drift)


def refusal_text(verdict: IntegrityVerdict, *, reason: str, fail_on_drift: bool) -> str | None:
    """The refusal a verdict earns under the policy, or None when it passes."""
    lead = "config reload rejected" if reason == "reload" else "integrity check failed"
    if verdict.errors:
        return f"{lead}: " + "; ".join(verdict.errors)
    if fail_on_drift and verdict.warnings:
        return (f"{lead} (admission.fail_on_drift): operational drift: "
                + "; ".join(verdict.warnings))
    return None


# --------------------------------------------------------------------------- gathering (I/O)


def collect_seal_facts(
    config_dir: str, root_file: str, *, plugin_confs: Mapping[str, PluginConf],
    plugins: Mapping[str, Plugin], nonce: bytes | None, nonce_problem: str | None = None,
) -> SealFacts:
    """Read the seal and hash what it covers, for `verify_integrity`. Never raises for a
    missing or broken file: each problem becomes a fact the verdict names."""
    path = seal_path(config_dir)
    seal, problem = None, None
    try:
        seal = read_checksums(path)
    except IntegrityError as exc:
        if exc.kind != "missing":
            problem = str(exc)
    files, discover_error = _hash_sealed_files(config_dir, root_file)
    configured = {name: Configured(conf.enabled, conf.uses.strip())
                  for name, conf in plugin_confs.items()}
    current: dict[str, PluginFingerprint | str] = {}
    unkeyed = None
    if seal is not None and seal.plugin_fingerprints:
        if nonce is None or len(nonce) != NONCE_BYTES:
            unkeyed = nonce_problem or (
                "no vault is loaded" if nonce is None else
                f"the vault nonce is {len(nonce)} bytes, not {NONCE_BYTES}")
        else:
            current = current_fingerprints(plugin_confs, plugins, nonce)
    return SealFacts(config_dir=os.path.abspath(config_dir), root_file=os.path.abspath(root_file),
                     seal_path=path, seal=seal, seal_problem=problem,
                     discover_error=discover_error, files=files, configured=configured,
                     current=current, nonce_problem=unkeyed)


def _hash_sealed_files(config_dir: str, root_file: str) -> tuple[tuple[FileFact, ...], str | None]:
    try:
        sealed = discover_sealed_files(config_dir, root_file)
    except (ConfigError, OSError) as exc:
        return (), str(exc)
    facts = []
    for item in sealed:
        try:
            facts.append(FileFact(item, digest=file_digest(item.path)))
        except OSError as exc:
            facts.append(FileFact(item, error=exc.strerror or str(exc)))
    return tuple(facts), None


def current_fingerprints(plugin_confs: Mapping[str, PluginConf], plugins: Mapping[str, Plugin],
                         nonce: bytes) -> dict[str, PluginFingerprint | str]:
    """Every configured plugin fingerprinted as it is now, or why it cannot be."""
    current: dict[str, PluginFingerprint | str] = {}
    for name, conf in sorted(plugin_confs.items()):
        plugin = plugins.get(name)
        if plugin is None:
            current[name] = "it was not discovered under plugin_roots"
            continue
        try:
            current[name] = fingerprint_plugin(name, enabled=conf.enabled, uses=conf.uses.strip(),
                                               directory=plugin.directory,
                                               entrypoint=plugin.entrypoint, nonce=nonce)
        except (OSError, ValueError) as exc:
            current[name] = str(exc) if isinstance(exc, ValueError) else (
                f"cannot read {exc.filename}: {exc.strerror or exc}")
    return current


# --------------------------------------------------------------------------- the verdict (pure)


def verify_integrity(facts: SealFacts) -> IntegrityVerdict:
    """Errors and warnings for a directory and its seal; pure (see the module docstring)."""
    errors: list[str] = []
    warnings: list[str] = []
    lock = f"{LOCK} --config-dir {facts.config_dir}"
    if facts.discover_error is not None:
        errors.append(f"cannot list the sealed files: {facts.discover_error}")
    if facts.seal_problem is not None:
        errors.append(f"cannot use the seal at {facts.seal_path}: {facts.seal_problem}")
        return IntegrityVerdict(tuple(errors), tuple(warnings))
    if facts.seal is None:
        _no_seal(facts, lock, errors, warnings)
        return IntegrityVerdict(tuple(errors), tuple(warnings))
    if _foreign(facts.seal, facts):
        errors.append(f"the seal at {facts.seal_path} was written for another directory (it "
                      f"covers none of the files of {facts.config_dir}, e.g. "
                      f"{min(facts.seal.hashes)}); review the files, then run: {lock}")
        return IntegrityVerdict(tuple(errors), tuple(warnings))
    for fact in facts.files:
        problem = _file_problem(fact, facts.seal, lock)
        if problem is not None:
            (errors if fact.file.high_security else warnings).append(problem)
    _plugin_findings(facts, errors, warnings)
    return IntegrityVerdict(tuple(errors), tuple(warnings))


def _no_seal(facts: SealFacts, lock: str, errors: list[str], warnings: list[str]) -> None:
    high = [f.file.path for f in facts.files if f.file.high_security]
    if high:
        errors.append(f"no .checksums seal at {facts.seal_path}, but high-security files exist "
                      f"({', '.join(high)}); review them, then run: {lock}")
    else:
        warnings.append(f"no .checksums seal at {facts.seal_path}; run '{lock}' to seal the "
                        "config files")


def _foreign(seal: Checksums, facts: SealFacts) -> bool:
    """A seal that lists files, none of them the root file nor anything in this directory, was
    written elsewhere (copied, or the directory moved: the keys are absolute paths)."""
    if not seal.hashes or facts.root_file in seal.hashes:
        return False
    prefix = facts.config_dir.rstrip(os.sep) + os.sep
    return not any(path.startswith(prefix) for path in seal.hashes)


def _file_problem(fact: FileFact, seal: Checksums, lock: str) -> str | None:
    path = fact.file.path
    if fact.error is not None:
        return f"cannot hash {path}: {fact.error}"
    sealed = seal.hashes.get(path)
    if sealed is None:
        return f"file {path} is not in the .checksums seal; review it, then run: {lock}"
    if fact.digest != sealed:
        return (f"hash mismatch for {path} (sealed {short(sealed)}, now "
                f"{short(fact.digest or '')}): it changed after the last lock; if you changed it "
                f"on purpose, run: {lock}")
    return None


def _plugin_findings(facts: SealFacts, errors: list[str], warnings: list[str]) -> None:
    assert facts.seal is not None
    records = facts.seal.plugin_fingerprints
    if not records:
        if facts.configured:
            warnings.append(f"no plugin is attested in the seal at {facts.seal_path} "
                            f"({len(facts.configured)} configured); run '{LOCK_ALL}' to attest "
                            "them")
        return
    if facts.nonce_problem is not None:
        names = ", ".join(sorted(r.name for r in records))
        errors.append(f"the seal attests plugins ({names}) but they cannot be checked: "
                      f"{facts.nonce_problem}; plugin fingerprints are keyed with the vault "
                      "nonce, so the vault must be present and open")
        return
    recorded = {r.name: r for r in records}
    for _, record in sorted(recorded.items()):
        _judge_record(record, facts, errors, warnings)
    for name, conf in sorted(facts.configured.items()):
        if name not in recorded:
            (errors if conf.enabled else warnings).append(
                f"plugin {name!r} is configured but not attested in the seal; review it, then "
                f"run: ductile plugin lock {name}")


def _judge_record(record: PluginFingerprint, facts: SealFacts, errors: list[str],
                  warnings: list[str]) -> None:
    name = record.name
    conf = facts.configured.get(name)
    if conf is None:
        warnings.append(f"plugin {name!r} is attested in the seal but no longer configured; "
                        f"run '{LOCK_ALL}' to prune it")
        return
    bucket = errors if conf.enabled else warnings
    now = facts.current.get(name, "it was not fingerprinted")
    if isinstance(now, str):
        bucket.append(f"plugin {name!r} is attested but cannot be checked: {now}")
        return
    changed = False
    for kind in ("manifest", "entrypoint"):
        before, after = getattr(record, f"{kind}_hash"), getattr(now, f"{kind}_hash")
        if before != after:
            changed = True
            bucket.append(f"plugin {name!r}: {kind} {getattr(now, f'{kind}_resolved_path')} "
                          f"changed since it was attested (sealed {short(before)}, now "
                          f"{short(after)}); if the change is intended, run: "
                          f"ductile plugin lock {name}")
    if changed:
        return
    for kind in ("manifest", "entrypoint"):
        before_path = getattr(record, f"{kind}_resolved_path")
        after_path = getattr(now, f"{kind}_resolved_path")
        if before_path != after_path:
            warnings.append(f"plugin {name!r}: {kind} moved from {before_path} to {after_path} "
                            f"(same bytes); run 'ductile plugin lock {name}' to record it")
    if record.enabled != conf.enabled or record.uses != conf.uses:
        warnings.append(f"plugin {name!r}: enabled/uses changed since it was attested "
                        f"(enabled {record.enabled} -> {conf.enabled}, uses "
                        f"{record.uses or '-'} -> {conf.uses or '-'}); run 'ductile plugin lock "
                        f"{name}' to record it")


# --------------------------------------------------------------------------- plugin lock --all


@dataclass(frozen=True)
class AttestChange:
    """One line of the `plugin lock --all` preview: `+` new, `~` changed, `-` removed."""

    mark: str
    name: str
    fingerprint: PluginFingerprint | None  # None for a removal

    def line(self) -> str:
        label = {"+": "new", "~": "changed", "-": "removed"}[self.mark]
        tail = " (no longer configured)" if self.mark == "-" else ""
        return f"  {self.mark} {label:<8} {self.name}{tail}"


def attestation_changes(recorded: Iterable[PluginFingerprint],
                        current: Mapping[str, PluginFingerprint],
                        configured: Iterable[str]) -> tuple[AttestChange, ...]:
    """What `plugin lock --all` would change: configured plugins whose fingerprint is new or
    differs, and records of plugins no longer configured. A configured plugin that could not
    be fingerprinted (absent from `current`) keeps its record."""
    before = {fp.name: fp for fp in recorded}
    names = set(configured)
    changes = []
    for name, fp in sorted(current.items()):
        old = before.get(name)
        if old is None:
            changes.append(AttestChange("+", name, fp))
        elif old != fp:
            changes.append(AttestChange("~", name, fp))
    for name in sorted(before):
        if name not in names:
            changes.append(AttestChange("-", name, None))
    return tuple(sorted(changes, key=lambda c: c.name))


def confirmation_code(changes: Iterable[AttestChange]) -> str:
    """Five hex characters bound to the exact change set, so a commit applies what was
    previewed: any change to a plugin between preview and commit changes the code."""
    parts = []
    for change in sorted(changes, key=lambda c: c.name):
        fp = change.fingerprint
        fields = (change.mark, change.name) if fp is None else (
            change.mark, fp.name, fp.uses, fp.manifest_hash, fp.entrypoint_hash,
            str(fp.enabled).lower())
        parts.append("\0".join(fields))
    return digest_bytes("\0\0".join(parts).encode("utf-8", "surrogateescape"))[:5]


def apply_changes(recorded: Iterable[PluginFingerprint],
                  changes: Iterable[AttestChange]) -> tuple[PluginFingerprint, ...]:
    """The fingerprint list after `changes`, sorted by name."""
    result = {fp.name: fp for fp in recorded}
    for change in changes:
        if change.fingerprint is None:
            result.pop(change.name, None)
        else:
            result[change.name] = change.fingerprint
    return tuple(result[name] for name in sorted(result))
