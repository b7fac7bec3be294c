#!/usr/bin/env python3
"""Compile sipfleet's per-message core with mypyc, in place, for the checkout.

The same build as every install of the package: ``setup.py build_ext
--inplace``, whose definition (the modules of ``sipfleet/_accel.py``, the
shared runtime ``sipfleet/_core__mypyc``, the fallback to pure Python)
``pip install .``, ``pip wheel .`` and the editable install use too. This
script only adds what a checkout needs: rebuild when a listed .py is newer
than its extension, and remove the extensions when the build fails, so no
stale one is imported. Without a compiler, or with SIPFLEET_PURE=1,
sipfleet runs as pure Python.

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
RUNTIME = ROOT / "sipfleet" / ("_core__mypyc" + SUFFIX)  # setup.py's GROUP

# Before the runtime moved into the package, this script put it into
# site-packages and noted its name here: remove such leftovers.
OLD_RUNTIME_NOTE = ROOT / "build-accel.runtime"


def _ext(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + SUFFIX)


def _src(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def clean() -> None:
    for module in MODULES:
        _ext(module).unlink(missing_ok=True)
    RUNTIME.unlink(missing_ok=True)
    for so in glob.glob(str(ROOT / ("*__mypyc" + SUFFIX))):
        os.unlink(so)
    if OLD_RUNTIME_NOTE.exists():
        site = Path(sysconfig.get_paths()["platlib"])
        (site / OLD_RUNTIME_NOTE.read_text().strip()).unlink(missing_ok=True)
        OLD_RUNTIME_NOTE.unlink()
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
    if not a.force and not stale() and RUNTIME.exists():
        print("build_accel: compiled core is up to date")
        return 0
    clean()
    print(f"build_accel: compiling {len(MODULES)} modules with mypyc (setup.py) ...", flush=True)
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    if proc.returncode != 0 or stale() or not RUNTIME.exists():
        clean()
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        print("build_accel: no compiled core; running as pure Python", file=sys.stderr)
        # setup.py fell back by itself (no compiler, no mypyc): said why above.
        return 1 if proc.returncode != 0 else 0
    print("build_accel: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
