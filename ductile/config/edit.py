"""`ductile config set KEY VALUE`: change one value in the file that defines it, safely.

The steps, and why each one is there:

1. **Which file.** A config directory is several files merged (`include:`), so the value in
   force may live in an include. The file edited is the one whose value wins the merge
   (`defining_file`): the last file in merge order that holds the key; for `plugins.<name>...`
   the last file holding that plugin's stanza (a later stanza replaces an earlier one whole);
   for root-only keys (`service.max_workers`, `secrets`, ...) the root file; for an entry of a
   list that the merge appends (`api.auth.tokens[1]`, `pipelines[2]`) the file holding that
   entry. A key no file holds is added to the root `config.yaml`.
2. **A minimal text edit** (`ductile.config.yamledit`): one value replaced, or one key's line
   inserted; comments and layout stay byte for byte.
3. **Validate before writing.** The new text goes to a temporary file beside the original (same
   directory, so the final rename is atomic, and relative includes mean the same), and the
   *whole* config is loaded with that file in place of the original, then validated. The edit
   must also take effect: the merged config must now hold VALUE at KEY (an include cannot blank
   a value, and an include cannot set a root-only key, so such an edit is refused rather than
   written to no effect). A new `unknown key` warning (a typo in KEY) is refused too.
4. **Replace atomically**, keeping the file's mode (and owner, when permitted). If the file
   changed on disk meanwhile, nothing is written.
5. **Re-seal.** When a `.checksums` seal (`ductile config lock`) covers the edited file, its
   hash moves to the new bytes, so the seal keeps holding; see `reseal_after_edit`.

Any refusal leaves every file exactly as it was (the temporary file is removed).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ductile.config.dotpath import Path, Segment, format_path, holds, lookup, parse_path
from ductile.config.envfile import expand_home
from ductile.config.merge import NOT_MERGED_SECTIONS, ROOT_ONLY_SERVICE_KEYS
from ductile.config.resolve import SOURCE_EXPLICIT
from ductile.config.schema import Config, SourceFile
from ductile.config.validate import validate_config
from ductile.config.view import config_view, unexpanded_document
from ductile.config.yamledit import parse_value, same_value, set_value
from ductile.errors import ConfigEditRefused, ConfigError, YamlProblem

# Lists the merge appends across files: an index into the merged list names one file's entry.
_APPENDED_LISTS: tuple[Path, ...] = (("plugin_roots",), ("api", "allowed_origins"),
                                     ("api", "auth", "tokens"), ("webhooks", "endpoints"),
                                     ("pipelines",), ("instances",),
                                     ("remote_ingress", "peers"))


@dataclass(frozen=True)
class SetResult:
    """What `config set` did: the file, the key within that file, the value before (None when
    the key was inserted), the seal status and the warnings the new config has."""

    file: str
    key: str
    file_key: str
    before: Any
    after: Any
    inserted: bool
    seal: str  # "none" (no seal covers the file), "relocked", or "stale" (see reseal_after_edit)
    warnings: tuple[str, ...]
    diff: str  # the change as a unified diff of the file


@dataclass(frozen=True)
class Target:
    """The file to edit and the key's path inside that file's own document."""

    source: SourceFile
    path: Path


def set_config_value(
    config_path: str, key: str, value_text: str, *, source: str = SOURCE_EXPLICIT,
    environ: Mapping[str, str] | None = None, dry_run: bool = False,
) -> SetResult:
    """Set KEY to VALUE in the file that defines it (see the module); ConfigEditRefused, and
    no file changed, when the edit cannot be made safely or the result would not be valid.
    `dry_run` does every check and writes nothing (the seal is not touched either)."""
    from ductile.config.load import parse_config

    env = dict(os.environ if environ is None else environ)
    path = parse_path(key)
    value = parse_value(value_text)
    try:
        cfg = parse_config(config_path, source=source, environ=env)
    except ConfigError as exc:
        raise ConfigError(f"Failed to load config: {exc}", path=exc.path, key=exc.key,
                          line=exc.line, column=exc.column) from exc
    target = defining_file(cfg, path)
    if os.path.islink(target.source.path):
        raise ConfigEditRefused(f"{target.source.path} is a symbolic link; edit the file it "
                                "points to by hand", path=target.source.path, key=key)
    old_text = _decode(target.source)
    new_text = set_value(old_text, target.path, value)
    before = _value_in(old_text, target.path)
    new_data = new_text.encode("utf-8")
    new_cfg = _write_checked(cfg, target, new_data, path, value, source=source, environ=env,
                             dry_run=dry_run)
    return SetResult(
        file=target.source.path, key=format_path(path), file_key=format_path(target.path),
        before=None if before is _ABSENT else before, after=value, inserted=before is _ABSENT,
        seal=_reseal(target, new_data, cfg.config_dir, write=not dry_run),
        warnings=tuple(w for w in new_cfg.warnings if w not in cfg.warnings),
        diff="".join(difflib.unified_diff(old_text.splitlines(keepends=True),
                                          new_text.splitlines(keepends=True),
                                          target.source.path, target.source.path)),
    )


def defining_file(cfg: Config, path: Sequence[Segment]) -> Target:
    """The file whose value for `path` is the one in force, and the path inside it."""
    files = [(source, _document(source)) for source in cfg.source_files]
    if not files:
        raise ConfigError("the config has no source files", path=cfg.config_path)
    root = files[0][0]
    head = path[0]
    appended = _appended_entry(files, path)
    if appended is not None:
        return appended
    if head in NOT_MERGED_SECTIONS or (head == "service" and len(path) > 1
                                       and path[1] in ROOT_ONLY_SERVICE_KEYS):
        return Target(root, tuple(path))
    owner = tuple(path[:2]) if head == "plugins" and len(path) > 1 else tuple(path)
    for source, doc in reversed(files):
        if holds(doc, owner):
            return Target(source, tuple(path))
    return Target(root, tuple(path))


# --------------------------------------------------------------------------- locating


def _document(source: SourceFile) -> dict[str, Any]:
    try:
        return unexpanded_document(source.data)
    except (YamlProblem, UnicodeDecodeError):
        return {}


def _appended_entry(files: list[tuple[SourceFile, dict[str, Any]]],
                    path: Sequence[Segment]) -> Target | None:
    """For `api.auth.tokens[3]...` and the like: the file holding merged entry 3, and the
    entry's index in that file."""
    for prefix in _APPENDED_LISTS:
        size = len(prefix)
        if tuple(path[:size]) != prefix or len(path) <= size or not isinstance(path[size], int):
            continue
        wanted = path[size]
        for source, doc in files:
            local_prefix, entries = _local_list(doc, prefix)
            if wanted < len(entries):
                return Target(source, (*local_prefix, wanted, *path[size + 1:]))
            wanted -= len(entries)
        return None
    return None


def _local_list(doc: dict[str, Any], prefix: Path) -> tuple[Path, list[Any]]:
    """The list a file contributes at `prefix` (a legacy `webhooks: [...]` is its endpoints)."""
    if prefix == ("webhooks", "endpoints") and isinstance(doc.get("webhooks"), list):
        return ("webhooks",), doc["webhooks"]
    try:
        value = lookup(doc, prefix)
    except ConfigError:
        return prefix, []
    return prefix, value if isinstance(value, list) else []


class _Absent:
    """The key was not in the file (it is inserted)."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()


def _value_in(text: str, path: Sequence[Segment]) -> Any:
    doc = _document(SourceFile(path="", data=text.encode("utf-8")))
    try:
        return lookup(doc, path)
    except ConfigError:
        return _ABSENT


def _decode(source: SourceFile) -> str:
    """The file's text as read by the loader; a UTF-8 BOM stays (it is not ours to drop)."""
    try:
        return source.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigEditRefused(f"{source.path} is not UTF-8 text", path=source.path) from exc


def _reseal(target: Target, new_data: bytes, config_dir: str, *, write: bool) -> str:
    try:
        return reseal_after_edit(target.source.path, target.source.data, new_data, config_dir,
                                 write=write)
    except OSError as exc:
        raise ConfigError(
            f"{target.source.path} was written, but its .checksums seal could not be updated "
            f"({exc.strerror or exc}); review the change and run: ductile config lock",
            path=target.source.path) from exc


# --------------------------------------------------------------------------- writing


def _write_checked(cfg: Config, target: Target, new_data: bytes, path: Path, value: Any, *,
                   source: str, environ: Mapping[str, str], dry_run: bool) -> Config:
    """Write `new_data` beside the file, load + validate the whole config with it, check the
    edit took effect, then rename it over the original (unless `dry_run`). Returns the new
    Config."""
    original = target.source.path
    info = os.stat(original)
    temp = _temp_file(original, new_data, info)
    try:
        new_cfg = _load_with(cfg, original, new_data, source=source, environ=environ)
        _check_effect(new_cfg, target, path, value, environ)
        _refuse_unknown_keys(cfg, new_cfg, path)
        with open(original, "rb") as handle:
            if handle.read() != target.source.data:
                raise ConfigEditRefused(f"{original} changed on disk while it was being edited; "
                                        "nothing was written, run the command again",
                                        path=original)
        if dry_run:
            os.unlink(temp)
        else:
            os.replace(temp, original)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return new_cfg


def _temp_file(original: str, data: bytes, info: os.stat_result) -> str:
    directory, name = os.path.split(original)
    mode = stat.S_IMODE(info.st_mode)
    for attempt in range(100):
        temp = os.path.join(directory, f".{name}.config-set-{os.getpid()}-{attempt}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), info.st_uid, info.st_gid)
                os.fchmod(handle.fileno(), mode)
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return temp
    raise ConfigEditRefused(f"cannot create a temporary file beside {original}", path=original)


def _load_with(cfg: Config, original: str, new_data: bytes, *, source: str,
               environ: Mapping[str, str]) -> Config:
    """Load and validate the whole config with `new_data` read in place of `original`."""
    from ductile.config.load import parse_config

    # A sealed scope file fails its load-time seal check with the new bytes until the seal is
    # moved (after the write); every other file was checked by the load this edit started from.
    checks = {"verify_scope_seals": False} if _scope_file(original) else {}
    try:
        new_cfg = parse_config(cfg.config_path, source=source, environ=environ,
                               overrides={original: new_data}, **checks)
        validate_config(new_cfg)
    except ConfigError as exc:
        raise ConfigEditRefused(f"the edited config is refused, nothing was written: {exc}",
                                path=exc.path, key=exc.key) from exc
    read = [f for f in new_cfg.source_files if os.path.realpath(f.path)
            == os.path.realpath(original)]
    if not read or read[0].data != new_data:
        raise ConfigEditRefused(f"cannot validate the edit of {original}: the loader did not read "
                                "the edited text; nothing was written",
                                path=original)
    return new_cfg


def _check_effect(new_cfg: Config, target: Target, path: Path, value: Any,
                  environ: Mapping[str, str]) -> None:
    """The merged config must now say VALUE at KEY; else the edit would be silently ignored."""
    view = config_view(new_cfg, defaults=False)
    try:
        now = lookup(view, path)
    except ConfigError:
        now = _ABSENT
    if same_value(now, value) or (isinstance(value, str) and isinstance(now, str)
                                  and expand_home(value, environ.get("HOME")) == now):
        return
    shown = "nothing" if now is _ABSENT else repr(now)
    raise ConfigEditRefused(
        f"setting {format_path(path)} in {target.source.path} would have no effect: the merged "
        f"config would still have {shown} there (an include cannot blank a value or turn "
        "api.enabled off, root-only keys are read from config.yaml only, and a later file "
        "overrides an earlier one); nothing was written",
        path=target.source.path, key=format_path(path))


def _refuse_unknown_keys(cfg: Config, new_cfg: Config, path: Path) -> None:
    from ductile.config.reader import UnknownKey

    added = [w for w in new_cfg.warnings if w not in cfg.warnings and isinstance(w, UnknownKey)]
    if added:
        raise ConfigEditRefused(
            f"{format_path(path)} is not a key ductile reads ({'; '.join(added)}); check the "
            "spelling (ductile config schema lists every key); nothing was written",
            key=format_path(path))


# --------------------------------------------------------------------------- the seal


def reseal_after_edit(edited: str, before: bytes, after: bytes, config_dir: str, *,
                      write: bool = True) -> str:
    """Move the `.checksums` seal (`ductile config lock`, ductile/config/seal.py) of the edited
    file from its old bytes to its new ones.

    Only that file's hash changes, and only when the seal held the hash of exactly the bytes
    this edit started from: a full re-lock would also bless every other file that changed
    since the last lock (tampering included), and moving a hash that was already stale would
    bless the earlier change. Plugin attestations are kept as they are.

    Returns "none" (no seal covers the file), "relocked", or "stale" (a seal covers it but was
    not updated: it no longer matched the file before the edit, or it cannot be read; the
    operator must review and run `ductile config lock`). `write=False` only says what it would
    do. Raises OSError when the seal cannot be written.
    """
    from ductile.config import seal
    from ductile.errors import IntegrityError

    target = os.path.abspath(edited)
    states = []
    for directory in dict.fromkeys((os.path.dirname(target), os.path.abspath(config_dir))):
        path = seal.seal_path(directory)
        if not os.path.lexists(path):
            continue
        try:
            checksums = seal.read_checksums(path)
        except IntegrityError:
            states.append("stale")
            continue
        sealed = checksums.hashes.get(target)
        if sealed is None:
            continue
        if sealed != seal.digest_bytes(before):
            states.append("stale")
            continue
        if write:
            hashes = {**checksums.hashes, target: seal.digest_bytes(after)}
            seal.write_checksums(path, replace(checksums, hashes=hashes,
                                               generated_at=seal.utc_now()))
        states.append("relocked")
    return "stale" if "stale" in states else ("relocked" if states else "none")


def _scope_file(path: str) -> bool:
    """A file the loader checks against its seal at every load (webhooks.yaml, tokens.yaml)."""
    from ductile.config.seal import SCOPE_FILES

    return os.path.basename(path) in SCOPE_FILES
