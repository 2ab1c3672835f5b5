"""`ductile config lock` and `ductile plugin lock`: write the integrity seal (`.checksums`).

`config lock` seals the config files as they are now. It never hashes a plugin: it keeps the
fingerprints `plugin lock` recorded for plugins that are still configured and drops the rest,
so re-locking the config cannot quietly bless a replaced plugin ("lock laundering").
`plugin lock NAME` attests one plugin into an existing seal; `plugin lock --all` previews every
change and commits only with the confirmation code of exactly that change set. Plugin hashes
are keyed with the vault nonce, so both need the vault (opened as `config check` opens it).

The click commands live with their nouns (`config_cmd.py`, `plugin.py`); this module holds what
they do, and reports through `click.echo` and `fail`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import click

from ductile.cli.common import fail, resolve

if TYPE_CHECKING:
    from ductile.config.integrity import AttestChange
    from ductile.config.schema import Config
    from ductile.config.seal import Checksums, PluginFingerprint
    from ductile.plugin.discovery import Plugin


@dataclass(frozen=True)
class LockTarget:
    """A directory to seal: fully (its root config file and plugin records) or, with no root,
    only the scope files an include directory holds."""

    directory: str
    root: str | None


# --------------------------------------------------------------------------- config lock


def config_lock(config_path: str | None, config_dir: str | None, *, dry_run: bool,
                verbose: bool) -> None:
    """Seal every target directory (see `lock_targets`) and print what was done."""
    echo: Callable[[str], None] = click.echo if verbose else (lambda _line: None)
    targets = lock_targets(config_path, config_dir)
    for target in targets:
        if target.root is None:
            _lock_scope_dir(target.directory, dry_run=dry_run, echo=echo)
        else:
            _lock_config_dir(target, dry_run=dry_run, echo=echo)
    count = len(targets)
    noun = "directory" if count == 1 else "directories"
    if dry_run:
        click.echo(f"Dry run completed for {count} {noun} (no files written):")
    else:
        click.echo(f"Successfully locked configuration in {count} {noun}:")
    for target in targets:
        click.echo(f"  - {target.directory}")


def lock_targets(config_path: str | None, config_dir: str | None) -> list[LockTarget]:
    """`--config-dir DIR`: that directory alone. Otherwise the resolved config's directory,
    plus every other directory an included webhooks.yaml or tokens.yaml lives in (the load
    checks those against a seal beside them)."""
    from ductile.config.resolve import ROOT_FILE
    from ductile.config.seal import SCOPE_FILES

    if config_dir is not None:
        directory = os.path.abspath(os.path.expanduser(config_dir))
        if not os.path.isdir(directory):
            fail(f"Failed to discover config files in {directory}: not a directory")
        root = os.path.join(directory, ROOT_FILE)
        return [LockTarget(directory, root if os.path.isfile(root) else None)]
    cfg = _load_for_lock(resolve(config_path)[0], "Failed to discover config")
    targets = [LockTarget(cfg.config_dir, cfg.config_path)]
    for source in cfg.source_files:
        directory = os.path.dirname(source.path)
        if (os.path.basename(source.path) in SCOPE_FILES
                and all(t.directory != directory for t in targets)):
            targets.append(LockTarget(directory, None))
    return targets


def _load_for_lock(path: str, what: str) -> Config:
    """The config without the scope-file check (its changed scope files are what is being
    sealed) and without validation (a lock records bytes; boot judges them)."""
    from ductile.config.load import parse_config
    from ductile.errors import ConfigError

    try:
        return parse_config(path, environ=os.environ, verify_scope_seals=False)
    except ConfigError as exc:
        fail(f"{what}: {exc}")


def _lock_config_dir(target: LockTarget, *, dry_run: bool, echo: Callable[[str], None]) -> None:
    from ductile.config.seal import Checksums, discover_sealed_files, file_digest, seal_path
    from ductile.config.seal import utc_now
    from ductile.errors import ConfigError

    directory, root = target.directory, target.root
    assert root is not None
    echo(f"Processing directory (v2 seal): {directory}")
    try:
        files = discover_sealed_files(directory, root)
    except ConfigError as exc:
        fail(f"Failed to discover config files in {directory}: {exc}")
    cfg = _load_for_lock(root, f"Failed to load config for plugin locking in {directory}")
    hashes: dict[str, str] = {}
    for item in files:
        echo(f"  DISCOVER [{item.tier}] {item.path}")
        try:
            hashes[item.path] = file_digest(item.path)
        except OSError as exc:
            fail(f"Failed to lock config in {directory}: cannot hash {item.path}: "
                 f"{exc.strerror or exc}")
    path = seal_path(directory)
    kept = _kept_fingerprints(path, cfg, echo)
    checksums = Checksums(generated_at=utc_now(), hashes=hashes, plugin_fingerprints=kept)
    _write(path, checksums, dry_run=dry_run, echo=echo, where=directory)


def _kept_fingerprints(path: str, cfg: Config,
                       echo: Callable[[str], None]) -> tuple[PluginFingerprint, ...]:
    """The existing seal's plugin records of plugins still configured (PRESERVE), without
    re-hashing them; records of plugins no longer configured are dropped (PRUNE)."""
    from ductile.config.seal import read_checksums
    from ductile.errors import IntegrityError

    try:
        existing = read_checksums(path)
    except IntegrityError as exc:
        if exc.kind != "missing":
            click.echo(f"warning: the existing seal cannot be read ({exc}); it is replaced, and "
                       "any plugin attestations it held are dropped: run 'ductile plugin lock "
                       "--all' afterwards", err=True)
        return ()
    kept = []
    for record in existing.plugin_fingerprints:
        if record.name in cfg.plugins:
            echo(f"  PRESERVE [plugin] {record.name} manifest={record.manifest_path} "
                 f"entrypoint={record.entrypoint_path}")
            kept.append(record)
        else:
            echo(f"  PRUNE [plugin] {record.name} (no longer configured)")
    return tuple(kept)


def _lock_scope_dir(directory: str, *, dry_run: bool, echo: Callable[[str], None]) -> None:
    from ductile.config.seal import Checksums, scope_files, seal_path, utc_now

    echo(f"Processing directory: {directory}")
    try:
        found = scope_files(directory)
    except OSError as exc:
        fail(f"Failed to lock config in {directory}: {exc.strerror or exc}")
    hashes: dict[str, str] = {}
    for item in found:
        if item.digest is None:
            echo(f"  SKIP {item.name}: not found (optional)")
        else:
            echo(f"  HASH {item.name}: {item.digest}")
            hashes[item.path] = item.digest
    _write(seal_path(directory), Checksums(generated_at=utc_now(), hashes=hashes),
           dry_run=dry_run, echo=echo, where=directory)


def _write(path: str, checksums: Checksums, *, dry_run: bool, echo: Callable[[str], None],
           where: str) -> None:
    from ductile.config.seal import write_checksums

    if dry_run:
        echo(f"  DRY-RUN .checksums: {path} (not written)")
        return
    try:
        write_checksums(path, checksums)
    except OSError as exc:
        fail(f"Failed to lock config in {where}: cannot write {path}: {exc.strerror or exc}")
    echo(f"  WROTE .checksums: {path}")


# --------------------------------------------------------------------------- plugin lock


def plugin_lock_one(config_path: str | None, name: str) -> None:
    """Attest one configured plugin into the existing seal; other records are untouched."""
    from ductile.config.integrity import AttestChange, apply_changes
    from ductile.config.seal import short, utc_now

    cfg, path, checksums = _seal_for_attestation(config_path)
    conf = cfg.plugins.get(name)
    if conf is None:
        fail(f"plugin lock: plugin {name!r} is not configured (no plugins.{name} in "
             f"{cfg.config_path}); only configured plugins are attested")
    plugin = _discovered(cfg).get(name)
    if plugin is None:
        fail(f"plugin lock: plugin {name!r} was not discovered under plugin_roots "
             "(see ductile plugin list)")
    fp = _fingerprint(name, cfg, plugin, _vault_nonce(cfg))
    mark = "~" if checksums.plugin(name) is not None else "+"
    records = apply_changes(checksums.plugin_fingerprints, [AttestChange(mark, name, fp)])
    _write_attested(path, replace(checksums, generated_at=utc_now(),
                                  plugin_fingerprints=records))
    click.echo(f"Attested plugin {name}: manifest={fp.manifest_resolved_path} "
               f"({short(fp.manifest_hash)}) entrypoint={fp.entrypoint_resolved_path} "
               f"({short(fp.entrypoint_hash)})")
    click.echo(f"Updated {path}")


def plugin_lock_all(config_path: str | None, code: str | None) -> None:
    """Without `code`: preview the change set and print its confirmation code. With it:
    commit, if the change set is still exactly the one previewed."""
    from ductile.config.integrity import apply_changes, attestation_changes, confirmation_code
    from ductile.config.seal import utc_now

    cfg, path, checksums = _seal_for_attestation(config_path)
    current, skipped = _current_fingerprints(cfg)
    changes = attestation_changes(checksums.plugin_fingerprints, current, cfg.plugins)
    if not changes:
        click.echo("Nothing to attest: every configured plugin already matches its recorded "
                   "fingerprint.")
        return
    expected = confirmation_code(changes)
    if code is None:
        _preview(path, changes, skipped, expected, config_path)
        return
    if code.strip().lower() != expected:
        for change in changes:
            click.echo(change.line(), err=True)
        fail(f"confirmation code {code!r} does not match the current change set (expected "
             f"{expected!r}): the changes listed above are what would be attested now (a "
             "plugin changed since the preview, or the code was mistyped); review them, then "
             "commit with their code")
    records = apply_changes(checksums.plugin_fingerprints, changes)
    _write_attested(path, replace(checksums, generated_at=utc_now(), plugin_fingerprints=records))
    click.echo(f"Attested {len(changes)} change(s) in {path}:")
    for change in changes:
        click.echo(change.line())


def _preview(path: str, changes: tuple[AttestChange, ...], skipped: list[str], code: str,
             config_path: str | None) -> None:
    click.echo(f"Plugin attestation changes for {path}:")
    for change in changes:
        click.echo(change.line())
    for name in skipped:
        click.echo(f"  ! skipped  {name} (disabled and not discovered; its record is kept)")
    flag = f" --config {config_path}" if config_path else ""
    click.echo("Review them, then commit exactly this change set with:")
    click.echo(f"  ductile plugin lock --all {code}{flag}")


def _seal_for_attestation(config_path: str | None) -> tuple[Config, str, Checksums]:
    from ductile.cli.common import load
    from ductile.config.seal import read_checksums, seal_path
    from ductile.errors import IntegrityError

    cfg = load(config_path, validate=False)
    path = seal_path(cfg.config_dir)
    try:
        return cfg, path, read_checksums(path)
    except IntegrityError as exc:
        fail(f"plugin lock: {exc}; run 'ductile config lock' first to lock the config files")


def _discovered(cfg: Config) -> dict[str, Plugin]:
    from ductile.boot.gates import BootFacts
    from ductile.boot.gather import gather_plugins

    facts = BootFacts(config=cfg)
    gather_plugins(cfg, facts)
    problem = facts.discovery_error or facts.alias_error
    if problem is not None:
        fail(f"plugin lock: {problem}")
    return dict(facts.plugins)


def _current_fingerprints(cfg: Config) -> tuple[dict[str, PluginFingerprint], list[str]]:
    """Every configured plugin fingerprinted now; disabled ones that are not discovered are
    skipped (their records stay), enabled ones refuse the whole attestation."""
    plugins = _discovered(cfg)
    nonce = _vault_nonce(cfg)
    current: dict[str, PluginFingerprint] = {}
    skipped: list[str] = []
    missing: list[str] = []
    for name, conf in sorted(cfg.plugins.items()):
        plugin = plugins.get(name)
        if plugin is None:
            (missing if conf.enabled else skipped).append(name)
            continue
        current[name] = _fingerprint(name, cfg, plugin, nonce)
    if missing:
        fail(f"plugin lock: configured plugins not found in any plugin_root: "
             f"{', '.join(missing)}; fix plugin_roots or disable them")
    return current, skipped


def _fingerprint(name: str, cfg: Config, plugin: Plugin, nonce: bytes) -> PluginFingerprint:
    from ductile.config.seal import fingerprint_plugin

    conf = cfg.plugin(name)
    try:
        return fingerprint_plugin(name, enabled=conf.enabled, uses=conf.uses.strip(),
                                  directory=plugin.directory, entrypoint=plugin.entrypoint,
                                  nonce=nonce)
    except ValueError as exc:
        fail(f"plugin {name!r}: {exc}")
    except OSError as exc:
        fail(f"plugin {name!r}: cannot read {exc.filename}: {exc.strerror or exc}")


def _vault_nonce(cfg: Config) -> bytes:
    """The vault's 32-byte nonce, from the vault opened exactly as `config check` opens it."""
    from ductile.boot.gates import BootFacts
    from ductile.boot.gather import gather_vault_facts
    from ductile.errors import VaultError

    facts = BootFacts(config=cfg)
    loaded, _ = gather_vault_facts(cfg, facts, os.environ, os.path.expanduser("~"))
    if facts.vault_error is not None:
        fail(f"plugin lock: {facts.vault_error}")
    if loaded is None or loaded.owner is None:
        why = (f"the vault {facts.vault_path} exists but no key was found to open it"
               if facts.vault_status == "blind" else
               f"none is loaded for {cfg.config_dir!r} (run 'ductile vault init')")
        fail(f"plugin attestation requires the vault, but {why}; attestation is "
             "keyed-or-nothing")
    try:
        return loaded.owner.nonce
    except VaultError as exc:
        fail(f"plugin lock: {exc}")


def _write_attested(path: str, checksums: Checksums) -> None:
    from ductile.config.seal import write_checksums

    try:
        write_checksums(path, checksums)
    except OSError as exc:
        fail(f"plugin lock: cannot write {path}: {exc.strerror or exc}")
