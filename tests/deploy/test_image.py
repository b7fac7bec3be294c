"""The container image, without a container runtime: the Dockerfile parsed by the
`dockerfile` package (BuildKit's own Go parser), its instructions checked, what it
copies present and not ignored, its config valid, and its HEALTHCHECK command run
against a running sipfleet (the port is the one difference). The wheel it builds and
installs is tested in test_wheel.py with the same source files."""

from __future__ import annotations

import fnmatch
import json
import signal
import subprocess
from pathlib import Path

import dockerfile
import fleet
import pytest
import sipp as harness

from sipfleet.config import load_config

ROOT = Path(__file__).resolve().parents[2]

sipp_env = harness.sipp_env

# Dockerfile reference, "Instructions".
KNOWN = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


def commands() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(ROOT / "Dockerfile"))


def stages() -> list[list[dockerfile.Command]]:
    out: list[list[dockerfile.Command]] = []
    for c in commands():
        if c.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(c)
    return out


def one(stage: list[dockerfile.Command], name: str) -> dockerfile.Command:
    found = [c for c in stage if c.cmd == name]
    assert len(found) == 1, (name, found)
    return found[0]


def test_every_instruction_is_a_dockerfile_instruction():
    cmds = commands()
    assert {c.cmd for c in cmds} <= KNOWN, {c.cmd for c in cmds} - KNOWN
    for c in cmds:
        if c.json:  # exec form: the parser read a JSON array of strings
            assert json.loads(c.original[c.original.index("[") :]) == list(
                c.value[1:] if c.cmd == "HEALTHCHECK" else c.value
            )


def test_two_stages_compiled_wheel_into_slim_python():
    build, final = stages()
    assert build[0].value[0] == "python:${PYTHON_VERSION}-slim-bookworm"
    assert build[0].value[1:] == ("AS", "build")
    assert final[0].value == ("python:${PYTHON_VERSION}-slim-bookworm",)
    arg = next(c for c in commands() if c.cmd == "ARG")
    assert arg.value == ("PYTHON_VERSION=3.11",)
    # The build stage has the compiler and refuses a pure-Python wheel.
    build_text = "\n".join(c.original for c in build)
    assert "gcc" in build_text and "SIPFLEET_REQUIRE_COMPILED=1" in build_text
    assert "pip wheel" in build_text
    # The final stage has no compiler; it installs the wheels offline and checks the core.
    copy = [c for c in final if c.cmd == "COPY" and "--from=build" in c.flags]
    assert len(copy) == 1 and copy[0].value[0] == "/wheels"
    final_text = "\n".join(c.original for c in final)
    assert "gcc" not in final_text and "--no-index" in final_text
    assert 'grep -q "core: compiled"' in final_text


def test_runs_sipfleet_as_a_non_root_user_with_volumes():
    final = stages()[-1]
    user = one(final, "USER").value[0]
    assert user.split(":")[0] not in ("root", "0")
    names = [c.cmd for c in final]
    assert names.index("USER") < names.index("ENTRYPOINT")
    entry, cmd = one(final, "ENTRYPOINT"), one(final, "CMD")
    assert entry.json and entry.value == ("sipfleet", "run")
    assert cmd.json and cmd.value == ("-c", "/etc/sipfleet/sipfleet.toml")
    assert set(one(final, "VOLUME").value) == {"/etc/sipfleet", "/var/lib/sipfleet"}
    assert one(final, "STOPSIGNAL").value == ("SIGTERM",)
    assert set(one(final, "EXPOSE").value) == {"5060/udp", "5060/tcp"}


def _ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/"))
        for pat in patterns
        for p in prefixes
    )


def test_what_it_copies_is_in_the_build_context():
    for c in commands():
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
            for src in c.value[:-1]:
                assert (ROOT / src).exists(), src
                assert not _ignored(src), src
    # In-place builds of the checkout stay out of the image.
    assert _ignored("sipfleet/sip/uri.cpython-311-x86_64-linux-gnu.so")
    assert _ignored(".venv") and _ignored("sipfleet/__pycache__")


def test_the_image_config_is_valid():
    cfg = load_config(ROOT / "deploy" / "docker" / "sipfleet.toml", env={})
    final = stages()[-1]
    copied = [c.value for c in final if c.cmd == "COPY" and not c.flags]
    assert ("deploy/docker/sipfleet.toml", "/etc/sipfleet/sipfleet.toml") in copied
    assert {(x.proto, x.port) for x in cfg.proxy.listen} == {("udp", 5060), ("tcp", 5060)}
    assert str(cfg.store.path).startswith("/var/lib/sipfleet/")  # the volume
    assert not cfg.store.seed_examples
    assert (cfg.control.http.host, cfg.control.http.port) == ("127.0.0.1", 9060)
    # The health check asks that address.
    hc = one(final, "HEALTHCHECK")
    assert hc.value[0] == "CMD" and "http://127.0.0.1:9060/RPC" in hc.value


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_the_healthcheck_command_against_a_running_sipfleet(sipp_env):
    hc = one(stages()[-1], "HEALTHCHECK")
    assert hc.json and hc.value[1:3] == ("sipfleet", "health")
    flags = dict(f.removeprefix("--").split("=", 1) for f in hc.flags)
    assert int(flags["timeout"].removesuffix("s")) >= 3  # the command's own timeout is 3 s
    proxy = fleet.proxy(sipp_env, [fleet.Dest("sip:127.0.0.1:5999")])

    def run() -> subprocess.CompletedProcess[str]:
        argv = [a.replace("127.0.0.1:9060", f"127.0.0.1:{proxy.http_port}") for a in hc.value[1:]]
        argv[0] = harness.sipfleet_command()[0]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    ok = run()
    assert ok.returncode == 0 and ok.stdout.startswith("ok: accepting calls"), ok
    assert proxy.popen is not None
    proxy.popen.send_signal(signal.SIGTERM)
    assert proxy.popen.wait(timeout=10) == 0
    down = run()
    assert down.returncode == 1, down  # never 2: Docker reserves it
