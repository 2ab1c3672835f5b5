"""ductile/atomicfile.py: a whole-file write leaves the old file or the new one, and no debris."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ductile.atomicfile import write_atomic


def test_the_new_content_replaces_the_old_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "seal"
    target.write_bytes(b"old")
    write_atomic(str(target), b"new" * 10_000, mode=0o600)
    assert target.read_bytes() == b"new" * 10_000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["seal"]


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "inside").write_bytes(b"keep")  # a non-empty directory cannot be replaced
    with pytest.raises(OSError):
        write_atomic(str(target), b"new")
    assert (target / "inside").read_bytes() == b"keep"
    assert sorted(os.listdir(tmp_path)) == ["busy"]
