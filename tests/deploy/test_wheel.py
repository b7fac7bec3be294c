"""Wheels: building the package compiles the core with mypyc (setup.py), or falls back
to pure Python with a warning; the wheel, installed into a fresh venv, runs compiled.

The source is copied as the image build copies it (pyproject.toml, setup.py,
README.md, sipfleet/ without compiled files), then ``pip wheel`` builds it without
build isolation (offline: this venv's setuptools, wheel and mypy). Compiling takes
about a minute of CPU, so the full build is opt-in:

    SIPFLEET_E2E_WHEEL=1 .venv/bin/pytest tests/deploy/test_wheel.py

The fallbacks compile nothing and run by default.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import fleet
import pytest
import sipp as harness

from sipfleet._accel import MODULES

ROOT = Path(__file__).resolve().parents[2]
WHEEL = os.environ.get("SIPFLEET_E2E_WHEEL") == "1"
SITE = sysconfig.get_paths()["purelib"]  # this venv's: the dependencies come from here

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e]


def copy_source(dest: Path) -> Path:
    """What the Dockerfile's build stage COPYs."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(
        ROOT / "sipfleet",
        dest / "sipfleet",
        ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.pyc"),
    )
    return dest


def build_wheel(tmp: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[Path]]:
    src = tmp / "src" if (tmp / "src").exists() else copy_source(tmp / "src")
    out = tmp / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--wheel-dir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, **env},
    )
    return proc, sorted(out.glob("sipfleet-*.whl"))


def extensions(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return sorted(n for n in z.namelist() if n.endswith(".so"))


def fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A new venv with only the wheel installed; its dependencies are this venv's
    (a .pth line), so nothing is downloaded."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
        + ["--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True,
        timeout=300,
    )
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "zz_dependencies.pth").write_text(SITE + "\n")
    return venv


# --- fallbacks (fast: nothing compiled) --------------------------------------------------


@pytest.mark.timeout(300)
def test_sipfleet_pure_builds_a_pure_wheel(tmp_path):
    # An earlier compiled build left its extensions in build/: none may ship now.
    src = copy_source(tmp_path / "src")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for lib in ("lib", f"lib.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"):
        stale = src / "build" / lib / "sipfleet" / "sip" / f"message{suffix}"
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"not an extension")
    proc, wheels = build_wheel(tmp_path, SIPFLEET_PURE="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SIPFLEET_PURE=1: building the pure-Python core" in proc.stderr + proc.stdout
    assert len(wheels) == 1 and extensions(wheels[0]) == []


@pytest.mark.timeout(300)
def test_no_c_compiler_falls_back_with_a_warning(tmp_path):
    proc, wheels = build_wheel(tmp_path / "a", CC="/nonexistent/cc")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stderr + proc.stdout
    assert "WARNING: sipfleet: no C compiler ('/nonexistent/cc' not found)" in text
    assert "building the pure-Python core" in text
    assert len(wheels) == 1 and extensions(wheels[0]) == []
    # An image build asks for the compiled core: the same case fails there.
    proc, wheels = build_wheel(tmp_path / "b", CC="/nonexistent/cc", SIPFLEET_REQUIRE_COMPILED="1")
    assert proc.returncode != 0 and wheels == []
    assert "compiled core required (SIPFLEET_REQUIRE_COMPILED=1)" in proc.stderr + proc.stdout


# --- the compiled wheel (opt-in) -----------------------------------------------------------


class WheelFleet(fleet.Fleet):
    """``sipfleet run`` from the fresh venv instead of this one."""

    command: list[str] = []

    def _spawn(self, argv: list[str]) -> None:
        super()._spawn([*self.command, *argv[len(harness.sipfleet_command()) :]])


@pytest.mark.skipif(not WHEEL, reason="compiles the core (minutes): set SIPFLEET_E2E_WHEEL=1")
@pytest.mark.timeout(900)
def test_wheel_installs_the_compiled_core_and_runs_it(tmp_path, sipp_env):
    proc, wheels = build_wheel(tmp_path, SIPFLEET_REQUIRE_COMPILED="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = wheels
    assert "-cp311-" in wheel.name or "-cp3" in wheel.name  # platform-specific
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    expected = sorted(m.replace(".", "/") + suffix for m in MODULES)
    assert extensions(wheel) == sorted([*expected, f"sipfleet/_core__mypyc{suffix}"])

    venv = fresh_venv(tmp_path, wheel)
    python, script = venv / "bin" / "python", venv / "bin" / "sipfleet"
    where = subprocess.run(
        [str(python), "-c", "import sipfleet.proxy.core as m; print(m.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)) and where.endswith(suffix), where
    version = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"core: compiled with mypyc ({len(MODULES)} modules)" in version, version

    WheelFleet.command = [str(script)]
    proxy: Any = WheelFleet(
        Path(sipp_env._dir("sipfleet")), [fleet.Dest("sip:127.0.0.1:5999")], {}, {}
    )
    sipp_env.procs.append(proxy)
    proxy.start()
    log = Path(proxy.stderr_path)
    fleet.wait_for("the core line", lambda: "core: " in log.read_text(), 10)
    assert f"core: compiled with mypyc ({len(MODULES)} modules)" in log.read_text()
    assert proxy.rpc("core.info")["compiled"] == f"compiled with mypyc ({len(MODULES)} modules)"
    health = subprocess.run(
        [str(script), "health", "--url", proxy.url], capture_output=True, text=True, check=False
    )
    assert health.returncode == 0, health.stderr
    assert proxy.popen is not None
    proxy.popen.send_signal(signal.SIGTERM)
    assert proxy.popen.wait(timeout=15) == 0


@pytest.mark.skipif(not WHEEL, reason="runs mypyc (minutes): set SIPFLEET_E2E_WHEEL=1")
@pytest.mark.timeout(900)
def test_a_compiler_that_fails_gives_a_pure_wheel_with_a_warning(tmp_path):
    """mypyc translates the core, then the C compiler fails: no half-built set of
    extensions ships (each needs the shared runtime), the wheel is pure Python."""
    proc, wheels = build_wheel(tmp_path, CC="/bin/false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stderr + proc.stdout
    assert "WARNING: sipfleet: compiling the core failed (CompileError" in text
    assert len(wheels) == 1 and extensions(wheels[0]) == []
