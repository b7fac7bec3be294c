"""Test session guards shared by every test directory.

``SIPFLEET_TEST_PURE=1`` runs the tests on the pure-Python source even where the
compiled extensions sit next to it (the fallback the README promises): a finder
put first on ``sys.meta_path`` loads every ``sipfleet`` module from its ``.py``.
It is installed here, before any test module imports sipfleet's core.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType

import pytest

from sipfleet import _accel


class _SourceOnly(importlib.abc.MetaPathFinder):
    """Finds ``sipfleet.*`` modules as source files only (no extension modules)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("sipfleet.") or not path:
            return None
        loaders = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, loaders).find_spec(fullname)
            if spec is not None and spec.loader is not None:  # namespaces: the usual way
                return spec
        return None


PURE = os.environ.get("SIPFLEET_TEST_PURE") == "1"
if PURE:
    sys.meta_path.insert(0, _SourceOnly())


def pytest_sessionstart(session: pytest.Session) -> None:
    # A compiled module older than its source would test yesterday's code
    # (unless the source is what runs).
    stale = [] if PURE else _accel.stale()
    if stale:
        pytest.exit(
            f"compiled modules older than their source: {', '.join(stale)}; "
            "run .venv/bin/python scripts/build_accel.py (or --clean)",
            returncode=2,
        )
    if PURE:
        compiled = [m for m, c in _accel.status().items() if c]
        if compiled:
            pytest.exit(f"SIPFLEET_TEST_PURE=1 but these are compiled: {compiled}", 2)
    elif os.environ.get("SIPFLEET_EXPECT_COMPILED") == "1":
        pure = [m for m, compiled in _accel.status().items() if not compiled]
        if pure:
            pytest.exit(f"expected the compiled core, these are pure Python: {pure}", 2)
