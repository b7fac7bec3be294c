"""The README's generated parts and commands stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_config_reference_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(
        r"<!-- config-reference:start -->\n(.*)\n<!-- config-reference:end -->", readme, re.S
    )
    assert m, "README lost its config-reference markers"
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert m.group(1) == out, "regenerate: .venv/bin/python scripts/config_reference.py"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in ci
    assert "./scripts/test" in (ROOT / "README.md").read_text()
