"""One exception tree: every public exception class ductile defines is a DuctileError, and the
tree drawn in ductile/errors.py names each of them."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import ductile
from ductile import errors
from ductile.errors import DuctileError


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(ductile.__path__, "ductile."):
        if info.name.startswith("ductile.bundled") or info.name.endswith("__main__"):
            continue  # bundled plugins are standalone programs, not the gateway
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == info.name and not name.startswith("_")):
                found[name] = obj
    return found


def test_every_public_exception_is_a_ductile_error() -> None:
    outside = sorted(name for name, cls in _exception_classes().items()
                     if not issubclass(cls, DuctileError))
    assert outside == []


def test_the_tree_in_errors_py_names_every_exception() -> None:
    tree = errors.__doc__ or ""
    missing = sorted(name for name in _exception_classes() if name not in tree)
    assert missing == []
