"""Build hook: compile sipfleet's per-message core with mypyc.

setuptools runs this for every build of the package (``pip install .``,
``pip wheel .``, ``python -m build``, ``pip install -e .``), and
``scripts/build_accel.py`` runs ``build_ext --inplace`` of it for the
checkout: one definition of what is compiled and how.

The modules are those of ``sipfleet/_accel.py``. Their shared mypyc runtime
is ``sipfleet/_core__mypyc``, inside the package, so it installs and imports
with it. The result is pure Python, with a warning, when mypyc, a C
compiler or the Python headers are missing, or the compilation fails.

Environment (read at build time):

- ``SIPFLEET_PURE=1``: build pure Python, compile nothing;
- ``SIPFLEET_REQUIRE_COMPILED=1``: fail the build instead of falling back
  (the container image sets it, so an image never ships a slow core silently).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
GROUP = "sipfleet._core"  # the shared runtime: sipfleet/_core__mypyc.<EXT_SUFFIX>


def _modules() -> tuple[str, ...]:
    # Read the list without importing sipfleet (its dependencies may be absent).
    scope: dict[str, Any] = {"__name__": "sipfleet_accel_list"}
    exec(compile((ROOT / "sipfleet" / "_accel.py").read_text(), "_accel.py", "exec"), scope)
    modules = scope["MODULES"]
    assert isinstance(modules, tuple)
    return modules


def _warn(text: str) -> None:
    line = "=" * 78
    sys.stderr.write(f"\n{line}\nWARNING: sipfleet: {text}\n{line}\n\n")
    sys.stderr.flush()


def _fall_back(reason: str) -> None:
    if os.environ.get("SIPFLEET_REQUIRE_COMPILED") == "1":
        raise SystemExit(
            f"sipfleet: compiled core required (SIPFLEET_REQUIRE_COMPILED=1): {reason}"
        )
    _warn(
        f"{reason}; building the pure-Python core (same behaviour, about 1.4x the "
        "CPU per call). Install a C compiler and the Python headers (Debian: gcc "
        "python3-dev) and rebuild for the compiled core."
    )


def _missing_toolchain() -> str | None:
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc!r} not found)"
    include = sysconfig.get_paths().get("include", "")
    if not (Path(include) / "Python.h").exists():
        return f"no Python headers (Python.h not in {include})"
    return None


class BuildExt(build_ext):
    """build_ext that runs mypyc only when something is built (not for the
    metadata steps), and falls back to pure Python when the C compilation fails."""

    def finalize_options(self) -> None:
        if self.distribution.ext_modules is _LATER:
            self.distribution.ext_modules = ext_modules()
        super().finalize_options()

    def run(self) -> None:
        # A build directory left by an earlier build would put its extensions
        # into this wheel (a pure one, or one without a module since dropped
        # from the list): only what this run compiles goes in.
        build = self.get_finalized_command("build")
        for lib in {self.build_lib, build.build_lib, build.build_platlib, build.build_purelib}:
            for stale in Path(lib, "sipfleet").rglob("*.so"):
                stale.unlink()
        try:
            super().run()
        except Exception as e:  # CompileError, LinkError, DistutilsExecError ...
            for ext in self.extensions:  # no half set: every shim needs the runtime
                for path in (self.get_ext_fullpath(ext.name), self._inplace_path(ext.name)):
                    if path:
                        Path(path).unlink(missing_ok=True)
            self.extensions = []
            self.distribution.ext_modules = []
            _fall_back(f"compiling the core failed ({type(e).__name__}: {e})")

    def _inplace_path(self, name: str) -> str | None:
        if not (self.inplace or getattr(self, "editable_mode", False)):
            return None
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        return str(ROOT.joinpath(*name.split(".")).with_suffix("")) + suffix


def ext_modules() -> list[Any]:
    if os.environ.get("SIPFLEET_PURE") == "1":
        sys.stderr.write("sipfleet: SIPFLEET_PURE=1: building the pure-Python core\n")
        return []
    missing = _missing_toolchain()
    if missing is not None:
        _fall_back(missing)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _fall_back("mypyc (part of mypy) is not installed in the build environment")
        return []
    files = [str(Path(*m.split(".")).with_suffix(".py")) for m in _modules()]
    cwd = os.getcwd()
    os.chdir(ROOT)  # mypy reads pyproject's [tool.mypy] and the paths from here
    try:
        return list(mypycify(files, group_name=GROUP, opt_level="3"))
    except (Exception, SystemExit) as e:  # mypy reports type errors by exiting
        _fall_back(f"mypyc could not translate the core ({type(e).__name__}: {e})")
        return []
    finally:
        os.chdir(cwd)


# A stand-in until build_ext asks: it makes the wheel platform-specific, and
# mypyc (a whole type check) then runs once per build, not once per setup.py step.
_LATER: list[Any] = [Extension(GROUP + "__mypyc", sources=[])]

setup(ext_modules=_LATER, cmdclass={"build_ext": BuildExt})
