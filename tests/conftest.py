"""Test session guards shared by every test directory."""

from __future__ import annotations

import os

import pytest

from sipfleet import _accel


def pytest_sessionstart(session: pytest.Session) -> None:
    # A compiled module older than its source would test yesterday's code.
    stale = _accel.stale()
    if stale:
        pytest.exit(
            f"compiled modules older than their source: {', '.join(stale)}; "
            "run .venv/bin/python scripts/build_accel.py (or --clean)",
            returncode=2,
        )
    if os.environ.get("SIPFLEET_EXPECT_COMPILED") == "1":
        pure = [m for m, compiled in _accel.status().items() if not compiled]
        if pure:
            pytest.exit(f"expected the compiled core, these are pure Python: {pure}", 2)
