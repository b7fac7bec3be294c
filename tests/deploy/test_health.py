"""``sipfleet health`` against a running sipfleet: 0 while it serves, 1 once a graceful
stop began (``--live``: 0 while it answers), 1 when unreachable or refused; the
version string and core.info say which core runs."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fleet
import pytest
import sipp as harness

from sipfleet import _accel

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*harness.sipfleet_command(), "health", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def start(
    env: Any, dests: list[fleet.Dest], cls: type[fleet.Fleet] = fleet.Fleet, **sections: Any
) -> Any:
    """fleet.proxy(), with more [control.*] tables (binrpc on: its socket)."""
    proxy = cls(Path(env._dir("sipfleet")), dests, {"first_response_timeout": 1.0}, {})
    for name, table in {"control.binrpc": {"enabled": True}, **sections}.items():
        proxy.sections.setdefault(name, {}).update(table)
    env.procs.append(proxy)
    proxy.start()
    return proxy


def test_health_follows_the_graceful_stop(sipp_env):
    uas = fleet.uas(sipp_env)
    proxy = start(sipp_env, [fleet.Dest(uas)])
    ok = health("--url", proxy.url)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: accepting calls, 0 dialogs, 1/1 destinations usable")
    by_socket = health("--run-dir", str(proxy.run_dir))
    assert by_socket.returncode == 0 and by_socket.stdout.startswith("ok: accepting"), by_socket

    calls = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=2, rate=20, duration_ms=6000)
    fleet.wait_for("2 calls up", lambda: proxy.rpc("dlg.stats_active")["ongoing"] == 2, 10)
    assert proxy.popen is not None
    proxy.popen.send_signal(signal.SIGTERM)
    fleet.wait_for("the graceful stop", lambda: not proxy.rpc("sipfleet.status")["accepting"], 5)
    with ThreadPoolExecutor(2) as pool:  # at once: the calls' hold time is short
        ready_f = pool.submit(health, "--url", proxy.url)
        live_f = pool.submit(health, "--url", proxy.url, "--live")
        ready, live = ready_f.result(), live_f.result()
    assert ready.returncode == 1, ready
    assert "stopping: takes no new calls (2 dialogs" in ready.stderr
    assert live.returncode == 0 and live.stdout.startswith("ok: stopping, 2 dialogs"), live

    result = calls.wait()
    assert (result.successful, result.failed) == (2, 0), result.summary()
    assert proxy.popen.wait(timeout=15) == 0
    gone = health("--url", proxy.url, "--live")
    assert gone.returncode == 1 and "unreachable at" in gone.stderr, gone


class TokenFleet(fleet.Fleet):
    """A Fleet whose HTTP endpoint needs a bearer token (its own calls send it)."""

    TOKEN = "s3cret-token-0123456789"

    def rpc(self, method: str, *params: Any, timeout: float = 5.0) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.TOKEN}"}
        req = urllib.request.Request(self.url, body.encode(), headers, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())["result"]


def test_health_sends_the_token_it_finds_in_the_environment(sipp_env):
    dests = [fleet.Dest("sip:127.0.0.1:5999")]
    proxy = start(sipp_env, dests, TokenFleet, **{"control.http": {"token": TokenFleet.TOKEN}})
    refused = health("--url", proxy.url, env={"PATH": "/usr/bin:/bin"})
    assert refused.returncode == 1 and "401 Unauthorized" in refused.stderr, refused
    # In a pod the probe runs with the server's environment: its token is there.
    for var in ("SIPFLEET_HTTP_TOKEN", "SIPFLEET_RPC_TOKEN"):
        ok = health("--url", proxy.url, env={"PATH": "/usr/bin:/bin", var: TokenFleet.TOKEN})
        assert ok.returncode == 0, (var, ok.stderr)


def test_version_and_core_info_say_which_core_runs(sipp_env):
    expected = _accel.describe()
    out = subprocess.run(
        [*harness.sipfleet_command(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith(f"sipfleet 0.1.0 (core: {expected}; CPython 3.")
    proxy = fleet.proxy(sipp_env, [fleet.Dest("sip:127.0.0.1:5999")])
    assert proxy.rpc("core.info")["compiled"] == expected
    fleet.wait_for(
        "the core log line",
        lambda: f"core: {expected}" in Path(proxy.stderr_path).read_text(),
        5,
    )
