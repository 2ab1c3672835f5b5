"""Find plugins under the configured roots and decide which ones we trust.

Root problems (missing, not a directory, a refused symlink, no roots at all) are fatal: the
operator named something that is not there, and guessing would run a different plugin set than
the one they configured. A problem with one plugin (bad manifest, failed trust check, duplicate
name) is only a warning and skips that plugin, so one broken plugin cannot keep the gateway down;
boot refuses later if an *enabled* plugin is missing from the result.

Trust checks exist because the gateway executes whatever the manifest points at: the entrypoint
must live inside its plugin directory, inside the root being walked, be executable, and neither
the plugin directory nor the entrypoint may be writable by every user. Symlinks are refused unless
`service.allow_symlinks` is set, because they let a file outside the root masquerade as inside it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from ductile.errors import DiscoveryError, ManifestError
from ductile.plugin.manifest import Command, Manifest, parse_manifest, quote

MANIFEST_NAME = "manifest.yaml"
SKIP_DIRS = frozenset({"__pycache__"})
# Files that suggest a directory was meant to be a plugin (warned about when it has no manifest).
COMMON_ENTRYPOINTS = (
    "run.py", "run.sh", "main.go", "main.py", "index.js", "index.ts", "run.js", "run.ts",
)
MAX_MANIFEST_BYTES = 1024 * 1024
_ALLOW_HINT = "set service.allow_symlinks=true to allow"


@dataclass(frozen=True)
class Plugin:
    """A trusted plugin in the registry. `name` differs from `manifest.name` for an alias."""

    name: str
    manifest: Manifest
    directory: str  # absolute plugin directory (the literal path under `root`)
    entrypoint: str  # absolute path executed for every command
    root: str  # the plugin root it was discovered under

    def supports(self, command: str) -> bool:
        return self.manifest.supports(command)

    def command(self, command: str) -> Command | None:
        return self.manifest.command(command)

    @property
    def concurrency_safe(self) -> bool:
        return self.manifest.concurrency_safe

    @property
    def is_alias(self) -> bool:
        return self.name != self.manifest.name


@dataclass(frozen=True)
class Shadowed:
    """A plugin name provided twice: the first manifest found is used, the later one ignored.
    Kept apart from the warning text so the doctor can report it as a finding of its own."""

    name: str
    kept: str  # the manifest.yaml in use
    ignored: str  # the manifest.yaml that lost


@dataclass(frozen=True)
class Discovery:
    """Trusted plugins by name (discovery order) and one line per skipped or suspicious item."""

    plugins: dict[str, Plugin]
    warnings: tuple[str, ...] = ()
    shadowed: tuple[Shadowed, ...] = ()


def discover(roots: Sequence[str], *, allow_symlinks: bool) -> Discovery:
    """Walk every root in order and register each trusted plugin; first name wins."""
    warnings: list[str] = []
    shadowed: list[Shadowed] = []
    plugins: dict[str, Plugin] = {}
    manifests_seen: dict[str, str] = {}  # real manifest path -> literal path kept
    for root in _check_roots(roots, allow_symlinks, warnings):
        for manifest_path in _walk(root, allow_symlinks, warnings):
            real = os.path.realpath(manifest_path)
            if real in manifests_seen:
                continue  # the same file reached twice (nested roots): not a real duplicate
            manifests_seen[real] = manifest_path
            plugin = _load_plugin(root, manifest_path, allow_symlinks, warnings)
            if plugin is None:
                continue
            kept = plugins.get(plugin.name)
            if kept is not None:
                kept_path = os.path.join(kept.directory, MANIFEST_NAME)
                warnings.append(
                    f"duplicate plugin {quote(plugin.name)} ignored (keeping first discovered): "
                    f"ignored_path={manifest_path} kept_path={kept_path}"
                )
                shadowed.append(Shadowed(plugin.name, kept=kept_path, ignored=manifest_path))
                continue
            plugins[plugin.name] = plugin
        warnings.extend(_missing_manifest_warnings(root))
    return Discovery(plugins=plugins, warnings=tuple(warnings), shadowed=tuple(shadowed))


# --- roots ---------------------------------------------------------------------------------------


def _check_roots(roots: Sequence[str], allow_symlinks: bool, warnings: list[str]) -> list[str]:
    """Absolute, de-duplicated roots in configured order; raises on any unusable root."""
    checked: list[str] = []
    for raw in roots:
        text = raw.strip()
        if not text:
            continue
        root = os.path.abspath(text)
        if root in checked:
            continue
        _check_root(root, allow_symlinks, warnings)
        checked.append(root)
    if not checked:
        raise DiscoveryError("at least one plugin root is required")
    return checked


def _check_root(root: str, allow_symlinks: bool, warnings: list[str]) -> None:
    if not os.path.exists(root):
        raise DiscoveryError(f"plugin root does not exist: {root}")
    if not os.path.isdir(root):
        raise DiscoveryError(f"plugin root is not a directory: {root}")
    real = os.path.realpath(root)
    if real != root:
        message = f"symlink detected for plugin_root ({root} -> {real})"
        if not allow_symlinks:
            raise DiscoveryError(f"{message}; {_ALLOW_HINT}")
        warnings.append(f"{message}; allowed by service.allow_symlinks")


# --- walking -------------------------------------------------------------------------------------


def _walk(root: str, allow_symlinks: bool, warnings: list[str]) -> list[str]:
    """Every manifest.yaml under `root`, depth-first in lexical order (like Go's filepath.Walk).

    Symlinked directories are followed only when allowed (each real directory once, so a link
    loop ends); otherwise one that holds a manifest is reported instead of silently ignored.
    """
    found: list[str] = []
    visited = {os.path.realpath(root)}
    stack = [root]
    while stack:
        directory = stack.pop()
        entries = _list_dir(directory, warnings)
        subdirs: list[str] = []
        for entry in entries:
            if entry.name == MANIFEST_NAME and _is_file(entry):
                found.append(entry.path)
            elif entry.name in SKIP_DIRS:
                continue
            elif _is_real_dir(entry):
                subdirs.append(entry.path)
            elif _is_dir(entry):
                _symlinked_dir(entry.path, allow_symlinks, visited, subdirs, warnings)
        stack.extend(reversed(subdirs))
    return found


def _symlinked_dir(
    path: str, allow_symlinks: bool, visited: set[str], subdirs: list[str], warnings: list[str]
) -> None:
    real = os.path.realpath(path)
    if allow_symlinks:
        if real not in visited:
            visited.add(real)
            subdirs.append(path)
        return
    manifest = os.path.join(path, MANIFEST_NAME)
    if os.path.isfile(manifest):
        warnings.append(
            f"plugin {manifest} skipped: trust validation failed: symlink detected for "
            f"plugin_dir ({path} -> {real}); {_ALLOW_HINT}"
        )


def _list_dir(directory: str, warnings: list[str]) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        warnings.append(f"cannot read directory {directory}: {exc.strerror or exc}")
        return []


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_real_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _missing_manifest_warnings(root: str) -> list[str]:
    """Immediate subdirectories that look like plugins but have no manifest."""
    out = []
    for entry in _list_dir(root, []):
        if not _is_real_dir(entry) or entry.name in SKIP_DIRS:
            continue
        if os.path.exists(os.path.join(entry.path, MANIFEST_NAME)):
            continue
        if any(os.path.isfile(os.path.join(entry.path, n)) for n in COMMON_ENTRYPOINTS):
            out.append(
                f"plugin directory missing manifest.yaml — directory will be ignored: {entry.path}"
            )
    return out


# --- one plugin ----------------------------------------------------------------------------------


def _load_plugin(
    root: str, manifest_path: str, allow_symlinks: bool, warnings: list[str]
) -> Plugin | None:
    """Read, parse and trust-check one manifest; a failure becomes a warning and None."""
    try:
        manifest = parse_manifest(_read_manifest(manifest_path), manifest_path)
        directory = os.path.dirname(manifest_path)
        entrypoint = entrypoint_path(directory, manifest.entrypoint)
        problem = trust_problem(root, directory, entrypoint, allow_symlinks=allow_symlinks)
    except ManifestError as exc:
        warnings.append(f"plugin {manifest_path} skipped: {exc}")
        return None
    if problem is not None:
        warnings.append(f"plugin {manifest_path} skipped: trust validation failed: {problem}")
        return None
    warnings.extend(f"plugin {manifest_path}: {warning}" for warning in manifest.warnings)
    return Plugin(
        name=manifest.name, manifest=manifest, directory=directory, entrypoint=entrypoint,
        root=root,
    )


def _read_manifest(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read manifest: {exc.strerror or exc}", path=path) from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"invalid manifest: larger than {MAX_MANIFEST_BYTES} bytes", path=path)
    return data


def entrypoint_path(directory: str, entrypoint: str) -> str:
    """The manifest's entrypoint joined under the plugin directory.

    Always relative to the directory, even when written with a leading `/` (as Go's
    filepath.Join does), so a manifest cannot name an arbitrary absolute program.
    """
    return os.path.normpath(directory + "/" + entrypoint.lstrip("/"))


def trust_problem(
    root: str, directory: str, entrypoint: str, *, allow_symlinks: bool
) -> str | None:
    """The first failed trust check, in the reference order, or None when the plugin is trusted."""
    real_root = os.path.realpath(root)
    real_dir = os.path.realpath(directory)
    real_entry = os.path.realpath(entrypoint)
    if not allow_symlinks:
        expected_dir = os.path.normpath(os.path.join(real_root, os.path.relpath(directory, root)))
        if real_dir != expected_dir:
            return f"symlink detected for plugin_dir ({directory} -> {real_dir}); {_ALLOW_HINT}"
        expected_entry = os.path.join(real_dir, os.path.relpath(entrypoint, directory))
        if real_entry != expected_entry:
            return (
                f"symlink detected for plugin_entrypoint ({entrypoint} -> {real_entry}); "
                f"{_ALLOW_HINT}"
            )
    if not real_entry.startswith(real_root.rstrip("/") + "/"):
        return f"entrypoint {real_entry} is not under any configured plugin root"
    if not real_entry.startswith(real_dir.rstrip("/") + "/"):
        return f"entrypoint {real_entry} is not under plugin directory {real_dir}"
    return _file_problem(directory, entrypoint)


def _file_problem(directory: str, entrypoint: str) -> str | None:
    try:
        entry_stat = os.stat(entrypoint)
    except FileNotFoundError:
        return f"entrypoint not found: {entrypoint}"
    except OSError as exc:
        return f"cannot stat entrypoint {entrypoint}: {exc.strerror or exc}"
    if not stat.S_ISREG(entry_stat.st_mode):
        return f"entrypoint is not a regular file: {entrypoint}"
    if entry_stat.st_mode & 0o111 == 0:
        return f"entrypoint is not executable: {entrypoint}"
    try:
        dir_mode = os.stat(directory).st_mode
    except OSError as exc:
        return f"cannot stat plugin directory {directory}: {exc.strerror or exc}"
    if dir_mode & 0o002:
        return f"plugin directory is world-writable: {directory}"
    if entry_stat.st_mode & 0o002:
        return f"entrypoint is world-writable: {entrypoint}"
    return None
