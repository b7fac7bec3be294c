#!/usr/bin/env python3
"""Compile sipfleet's per-message core with mypyc, in place.

The core is plain, strictly typed Python; mypyc turns the same source into C
extension modules (about 1.7x faster per call), which Python imports instead
of the .py files next to them. Nothing else changes: without a compiler, or
with SIPFLEET_PURE=1, sipfleet runs as pure Python.

Rebuilds only when a listed .py is newer than its extension; on failure it
removes the extensions so no stale one is imported.

    .venv/bin/python scripts/build_accel.py [--force] [--clean]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sipfleet._accel import MODULES  # noqa: E402

SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def _ext(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + SUFFIX)


def _src(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


# mypyc's shared runtime is a top-level module: it goes to this interpreter's
# site-packages, where the compiled modules can import it whatever the cwd.
SITE = Path(sysconfig.get_paths()["platlib"])


RUNTIME_NOTE = ROOT / "build-accel.runtime"  # the name of our runtime module in SITE


def clean() -> None:
    for module in MODULES:
        _ext(module).unlink(missing_ok=True)
    for so in glob.glob(str(ROOT / ("*__mypyc" + SUFFIX))):
        os.unlink(so)
    if RUNTIME_NOTE.exists():
        # Only ours: other mypyc-compiled packages (mypy itself) have theirs too.
        (SITE / RUNTIME_NOTE.read_text().strip()).unlink(missing_ok=True)
        RUNTIME_NOTE.unlink()
    shutil.rmtree(ROOT / "build", ignore_errors=True)


def stale() -> list[str]:
    out = []
    for module in MODULES:
        ext = _ext(module)
        if not ext.exists() or ext.stat().st_mtime < _src(module).stat().st_mtime:
            out.append(module)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument("--clean", action="store_true", help="remove the extensions and stop")
    a = ap.parse_args()
    if a.clean or os.environ.get("SIPFLEET_PURE") == "1":
        clean()
        print("build_accel: pure Python (extensions removed)")
        return 0
    if not a.force and not stale():
        print("build_accel: compiled core is up to date")
        return 0
    mypyc = Path(sys.executable).with_name("mypyc")
    if not mypyc.exists() or shutil.which(os.environ.get("CC", "gcc")) is None:
        clean()
        print("build_accel: no mypyc or C compiler; running as pure Python", file=sys.stderr)
        return 0
    clean()
    files = [str(_src(m).relative_to(ROOT)) for m in MODULES]
    print(f"build_accel: compiling {len(files)} modules with mypyc ...", flush=True)
    proc = subprocess.run(
        [str(mypyc), *files], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or stale():
        clean()
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        print("build_accel: compilation failed; running as pure Python", file=sys.stderr)
        return 1
    for so in glob.glob(str(ROOT / ("*__mypyc" + SUFFIX))):
        shutil.move(so, SITE / Path(so).name)
        RUNTIME_NOTE.write_text(Path(so).name + "\n")
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    print("build_accel: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
