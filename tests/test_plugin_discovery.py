"""Plugin discovery and trust checks against real directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from support.plugins import bundled_root, make_plugin, manifest_dict

from ductile.errors import DiscoveryError
from ductile.plugin.discovery import discover

OK = "cat >/dev/null; echo '{\"status\":\"ok\",\"result\":\"ok\"}'"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "plugins"
    path.mkdir()
    return path


def one_warning(warnings: tuple[str, ...], fragment: str) -> str:
    matching = [w for w in warnings if fragment in w]
    assert len(matching) == 1, warnings
    return matching[0]


def test_finds_nested_plugins_in_lexical_order(root: Path) -> None:
    make_plugin(root, "zeta", OK)
    make_plugin(root, "alpha", OK, directory="group/alpha")
    make_plugin(root, "inner", OK, directory="zeta/sub/inner")  # nested inside another plugin
    make_plugin(root, "beta", OK, directory="b")
    found = discover([str(root)], allow_symlinks=False)
    assert list(found.plugins) == ["beta", "alpha", "zeta", "inner"]
    assert found.warnings == ()
    alpha = found.plugins["alpha"]
    assert alpha.directory == str(root / "group" / "alpha")
    assert alpha.entrypoint == str(root / "group" / "alpha" / "run")
    assert alpha.root == str(root)
    assert alpha.supports("poll") and not alpha.supports("sync")
    assert alpha.command("handle") is not None and alpha.command("handle").type == "write"  # type: ignore[union-attr]
    assert alpha.concurrency_safe and not alpha.is_alias


def test_pycache_is_skipped(root: Path) -> None:
    make_plugin(root, "hidden", OK, directory="__pycache__/hidden")
    make_plugin(root, "shown", OK)
    assert list(discover([str(root)], allow_symlinks=False).plugins) == ["shown"]


def test_directory_name_is_irrelevant_and_concurrency_hint_kept(root: Path) -> None:
    make_plugin(root, "real-name", OK, directory="whatever", concurrency_safe=False)
    plugin = discover([str(root)], allow_symlinks=False).plugins["real-name"]
    assert plugin.concurrency_safe is False


def test_duplicates_keep_first_across_and_within_roots(tmp_path: Path) -> None:
    first, second = tmp_path / "r1", tmp_path / "r2"
    make_plugin(second, "dup", OK, directory="a")
    make_plugin(first, "dup", OK, directory="z")
    make_plugin(first, "dup", OK, directory="zz")
    found = discover([str(first), str(second)], allow_symlinks=False)
    assert found.plugins["dup"].directory == str(first / "z")
    assert len([w for w in found.warnings if "duplicate plugin" in w]) == 2
    warning = one_warning(found.warnings, str(second / "a"))
    assert warning.startswith('duplicate plugin "dup" ignored (keeping first discovered)')
    assert f"kept_path={first / 'z' / 'manifest.yaml'}" in warning


def test_bad_manifest_is_a_warning_naming_the_file(root: Path) -> None:
    make_plugin(root, "good", OK)
    bad = make_plugin(root, "bad", OK)
    (bad / "manifest.yaml").write_text(yaml.safe_dump({**manifest_dict("bad"), "protocol": 1}))
    found = discover([str(root)], allow_symlinks=False)
    assert list(found.plugins) == ["good"]
    assert found.warnings == (
        f"plugin {bad / 'manifest.yaml'} skipped: invalid manifest: "
        "unsupported protocol version 1 (supported: 2)",
    )


def test_world_writable_plugin_directory_is_refused(root: Path) -> None:
    plugin = make_plugin(root, "open", OK)
    os.chmod(plugin, 0o777)
    found = discover([str(root)], allow_symlinks=False)
    assert found.plugins == {}
    assert found.warnings == (
        f"plugin {plugin / 'manifest.yaml'} skipped: trust validation failed: "
        f"plugin directory is world-writable: {plugin}",
    )


def test_world_writable_entrypoint_is_refused(root: Path) -> None:
    plugin = make_plugin(root, "open", OK, mode=0o777)
    found = discover([str(root)], allow_symlinks=False)
    one_warning(found.warnings, f"entrypoint is world-writable: {plugin / 'run'}")


def test_entrypoint_not_executable(root: Path) -> None:
    plugin = make_plugin(root, "noexec", OK, mode=0o644)
    found = discover([str(root)], allow_symlinks=False)
    assert found.plugins == {}
    one_warning(
        found.warnings, f"trust validation failed: entrypoint is not executable: {plugin / 'run'}"
    )


def test_entrypoint_missing_or_directory(root: Path) -> None:
    missing = make_plugin(root, "missing", OK)
    (missing / "run").unlink()
    isdir = make_plugin(root, "isdir", OK)
    (isdir / "run").unlink()
    (isdir / "run").mkdir()
    found = discover([str(root)], allow_symlinks=False)
    assert found.plugins == {}
    one_warning(found.warnings, f"entrypoint not found: {missing / 'run'}")
    one_warning(found.warnings, f"entrypoint is not a regular file: {isdir / 'run'}")


def test_absolute_entrypoint_stays_inside_the_plugin_directory(root: Path) -> None:
    plugin = make_plugin(root, "abs", OK)
    (plugin / "manifest.yaml").write_text(
        yaml.safe_dump(manifest_dict("abs", entrypoint="/bin/sh"))
    )
    found = discover([str(root)], allow_symlinks=False)
    one_warning(found.warnings, f"entrypoint not found: {plugin / 'bin' / 'sh'}")


def test_symlinked_entrypoint_refused_unless_allowed(root: Path) -> None:
    plugin = make_plugin(root, "linked", OK)
    os.rename(plugin / "run", plugin / "real-run")
    os.symlink("real-run", plugin / "run")
    refused = discover([str(root)], allow_symlinks=False)
    assert refused.plugins == {}
    warning = one_warning(refused.warnings, "symlink detected for plugin_entrypoint")
    assert f"({plugin / 'run'} -> {plugin / 'real-run'})" in warning
    assert "service.allow_symlinks=true" in warning
    allowed = discover([str(root)], allow_symlinks=True)
    assert allowed.plugins["linked"].entrypoint == str(plugin / "run")


def test_symlinked_entrypoint_outside_plugin_dir_refused_even_when_allowed(
    tmp_path: Path, root: Path
) -> None:
    plugin = make_plugin(root, "escape", OK)
    sibling = make_plugin(root, "sibling", OK)
    (plugin / "run").unlink()
    os.symlink(sibling / "run", plugin / "run")
    found = discover([str(root)], allow_symlinks=True)
    assert list(found.plugins) == ["sibling"]
    one_warning(
        found.warnings,
        f"entrypoint {sibling / 'run'} is not under plugin directory {plugin}",
    )
    outside = tmp_path / "outside-run"
    outside.write_text("#!/bin/sh\n")
    outside.chmod(0o755)
    (plugin / "run").unlink()
    os.symlink(outside, plugin / "run")
    found = discover([str(root)], allow_symlinks=True)
    one_warning(found.warnings, f"entrypoint {outside} is not under any configured plugin root")


def test_symlinked_plugin_directory_refused_unless_allowed(tmp_path: Path, root: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    make_plugin(elsewhere, "linkdir", OK)
    os.symlink(elsewhere / "linkdir", root / "linkdir")
    refused = discover([str(root)], allow_symlinks=False)
    assert refused.plugins == {}
    one_warning(refused.warnings, "symlink detected for plugin_dir")
    allowed = discover([str(root)], allow_symlinks=True)
    # followed, but its entrypoint really lives outside the root
    one_warning(allowed.warnings, "is not under any configured plugin root")
    inside = root / "store" / "linkdir2"
    make_plugin(root / "store", "linkdir2", OK)
    os.symlink(inside, root / "alias-dir")
    found = discover([str(root)], allow_symlinks=True)
    assert "linkdir2" in found.plugins


def test_symlink_loop_terminates(root: Path) -> None:
    make_plugin(root, "p", OK)
    os.symlink(root, root / "p" / "loop")
    found = discover([str(root)], allow_symlinks=True)
    assert list(found.plugins) == ["p"]


def test_root_errors(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="^at least one plugin root is required$"):
        discover([], allow_symlinks=False)
    with pytest.raises(DiscoveryError, match="^at least one plugin root is required$"):
        discover(["", "  "], allow_symlinks=False)
    missing = tmp_path / "nope"
    with pytest.raises(DiscoveryError) as info:
        discover([str(missing)], allow_symlinks=False)
    assert str(info.value) == f"plugin root does not exist: {missing}"
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(DiscoveryError) as info:
        discover([str(afile)], allow_symlinks=False)
    assert str(info.value) == f"plugin root is not a directory: {afile}"


def test_symlinked_root(tmp_path: Path, root: Path) -> None:
    make_plugin(root, "p", OK)
    link = tmp_path / "link"
    os.symlink(root, link)
    with pytest.raises(DiscoveryError) as info:
        discover([str(link)], allow_symlinks=False)
    assert str(info.value) == (
        f"symlink detected for plugin_root ({link} -> {root}); "
        "set service.allow_symlinks=true to allow"
    )
    found = discover([str(link)], allow_symlinks=True)
    assert list(found.plugins) == ["p"]
    one_warning(found.warnings, "symlink detected for plugin_root")


def test_relative_and_duplicate_roots(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugin(root, "p", OK)
    monkeypatch.chdir(tmp_path)
    found = discover(["plugins", str(root), " plugins/ "], allow_symlinks=False)
    assert found.plugins["p"].root == str(root)
    assert found.warnings == ()


def test_nested_roots_do_not_report_the_same_manifest_twice(root: Path) -> None:
    make_plugin(root, "p", OK, directory="sub/p")
    found = discover([str(root), str(root / "sub")], allow_symlinks=False)
    assert list(found.plugins) == ["p"] and found.warnings == ()


def test_directory_that_looks_like_a_plugin_without_manifest_warns(root: Path) -> None:
    (root / "forgot").mkdir()
    (root / "forgot" / "run.py").write_text("print()\n")
    (root / "notes").mkdir()
    (root / "notes" / "README").write_text("x\n")
    found = discover([str(root)], allow_symlinks=False)
    assert found.warnings == (
        f"plugin directory missing manifest.yaml — directory will be ignored: {root / 'forgot'}",
    )


def test_bundled_root_has_a_trusted_echo() -> None:
    found = discover([str(bundled_root())], allow_symlinks=False)
    assert "echo" in found.plugins
    assert found.warnings == ()
    echo = found.plugins["echo"]
    assert os.access(echo.entrypoint, os.X_OK)


def test_discovery_reports_a_repeated_command_as_a_warning_with_the_path(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    plugin_dir = make_plugin(root, "twice", "cat >/dev/null")
    manifest = manifest_dict("twice")
    manifest["commands"].append(dict(manifest["commands"][0]))
    (plugin_dir / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    found = discover([str(root)], allow_symlinks=False)
    assert "twice" in found.plugins
    assert any(w.startswith(f"plugin {plugin_dir / 'manifest.yaml'}: command \"poll\" is declared "
                            "twice") for w in found.warnings), found.warnings
