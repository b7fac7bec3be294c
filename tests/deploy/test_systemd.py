"""systemd: the unit file passes ``systemd-analyze verify``, and ``sipfleet run`` speaks
sd_notify to a NOTIFY_SOCKET the test binds (READY, WATCHDOG pings from the event
loop, RELOADING/READY around SIGHUP, STOPPING on SIGTERM), as systemd would see it."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fleet
import pytest
import sipp as harness

from sipfleet.aio.systemd import Notifier
from sipfleet.config import ProxyConfig

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "sipfleet.service"

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.timeout(60)]


class NotifyListener:
    """A unix datagram socket in the role of systemd's notification socket; every
    datagram it gets, with its arrival time (monotonic)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._lock:
                self.got.append((time.monotonic(), fields))

    def messages(self, key: str | None = None) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return [m for m in self.got if key is None or key in m[1]]

    def wait(self, key: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, str]]:
        fleet.wait_for(
            f"{count} x {key}", lambda: len(self.messages(key)) >= count or None, timeout
        )
        return [m for _, m in self.messages(key)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    try:
        yield listener
    finally:
        listener.close()


# --- the unit file ---------------------------------------------------------------------


def _unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_settings_match_sipfleet():
    unit = _unit()
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["KillSignal"] == ["SIGTERM"] and unit["KillMode"] == ["mixed"]
    # The stop must outlast sipfleet's graceful stop (default shutdown_timeout).
    shutdown = ProxyConfig().shutdown_timeout
    stop = int(unit["TimeoutStopSec"][0].removesuffix("s"))
    assert shutdown + 10 <= stop <= shutdown + 120, (shutdown, stop)
    watchdog = int(unit["WatchdogSec"][0].removesuffix("s"))
    assert 2 <= watchdog <= 60
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert unit[key] == ["yes"], key
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert unit["RuntimeDirectory"] == ["sipfleet"] and unit["StateDirectory"] == ["sipfleet"]
    assert unit["User"] == ["sipfleet"]
    # The CLI finds the ctl socket in /run/sipfleet, the RuntimeDirectory.
    assert "SIPFLEET_RUN_DIR=/run/sipfleet" in unit["Environment"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    """The unit as shipped, except ExecStart's binary, which must exist here: verify
    checks that the executable is there (/usr/local/bin/sipfleet is not on a test
    machine). The same file otherwise, so every directive and value is checked."""
    text = UNIT.read_text()
    assert text.count("ExecStart=/usr/local/bin/sipfleet run") == 1
    here = harness.sipfleet_command()[0]
    copy = tmp_path / "sipfleet.service"
    copy.write_text(text.replace("ExecStart=/usr/local/bin/sipfleet", f"ExecStart={here}"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # User=sipfleet may not exist on this machine; systemd creates nothing for it, but
    # verify does not check users. Anything it prints about our unit is a failure.
    ours = [line for line in proc.stderr.splitlines() if "sipfleet.service" in line]
    assert proc.returncode == 0 and not ours, proc.stderr


# --- the notifier, on its own ----------------------------------------------------------


def test_notifier_does_nothing_outside_systemd():
    n = Notifier.from_env({})
    assert not n.enabled and not n.send("READY=1")
    n.ready("x")
    n.close()
    assert n.sent == 0


def test_notifier_reads_the_environment():
    assert Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}).address is None
    n = Notifier.from_env({"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "4000000"})
    assert n.address == "@abc" and n.watchdog_interval == 2.0
    other = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}
    assert os.getpid() != 1 and Notifier.from_env(other).watchdog_interval is None
    mine = {**other, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(mine).watchdog_interval == 2.0


def test_abstract_namespace_socket():
    name = f"@sipfleet-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = NotifyListener(name)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": name})
        n.ready("serving: test")
        n.close()
        got = listener.wait("STOPPING")
        ready = [m for _, m in listener.messages("READY")]
        assert ready == [{"READY": "1", "STATUS": "serving: test"}], listener.got
        assert got == [{"STOPPING": "1"}]
    finally:
        listener.close()


def test_a_stalled_loop_stops_the_watchdog_pings(notify_socket):
    """The pings are loop callbacks: while a callback blocks the loop for 0.6 s, no
    ping leaves, so systemd's watchdog would fire on a hung process."""
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "100000"})
    window: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        n.start_watchdog(loop)
        await asyncio.sleep(0.3)  # sleep-ok: the watchdog pings for a while (the behaviour)
        window.append(time.monotonic())
        time.sleep(0.6)  # sleep-ok: the stall under test (the loop is blocked)
        window.append(time.monotonic())
        await asyncio.sleep(0.3)  # sleep-ok: pings resume after the stall
        n.close()

    asyncio.run(main())
    notify_socket.wait("STOPPING")
    pings = [t for t, _ in notify_socket.messages("WATCHDOG")]
    before = [t for t in pings if t < window[0]]
    during = [t for t in pings if window[0] + 0.02 < t < window[1]]
    after = [t for t in pings if t > window[1]]
    assert len(before) >= 4 and len(after) >= 3, (before, after)
    assert during == [], during


# --- sipfleet run under a fake systemd --------------------------------------------------


@pytest.mark.e2e
def test_sipfleet_run_notifies_ready_watchdog_reload_and_stopping(
    sipp_env, notify_socket, monkeypatch
):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    proxy = fleet.proxy(sipp_env, [fleet.Dest("sip:127.0.0.1:5999")])
    (ready,) = notify_socket.wait("READY")
    assert re.fullmatch(r"serving: 0 dialogs, 1 destinations", ready["STATUS"]), ready
    t0 = notify_socket.messages("READY")[0][0]
    # READY comes once the node serves: its RPC answers by then.
    assert proxy.rpc("core.version").startswith("sipfleet ")
    notify_socket.wait("WATCHDOG", count=5, timeout=10)
    pings = [t for t, _ in notify_socket.messages("WATCHDOG") if t >= t0]
    gaps = sorted(b - a for a, b in itertools.pairwise(pings))
    # Half of WATCHDOG_USEC; the loop of a busy test machine may be late now and then.
    assert 0.15 < gaps[len(gaps) // 2] < 0.3 and gaps[-1] < 1.0, gaps

    assert proxy.popen is not None
    proxy.popen.send_signal(signal.SIGHUP)
    notify_socket.wait("RELOADING")
    fleet.wait_for("READY after the reload", lambda: len(notify_socket.messages("READY")) >= 2, 10)
    reloading = notify_socket.messages("RELOADING")[0]
    ready2 = notify_socket.messages("READY")[1]
    assert reloading[0] <= ready2[0]
    assert int(reloading[1]["MONOTONIC_USEC"]) > 0

    proxy.popen.send_signal(signal.SIGTERM)
    (stopping,) = notify_socket.wait("STOPPING")
    assert stopping["STATUS"].startswith("graceful stop: 0 dialogs")
    # systemd is asked to wait as long as the graceful stop may take (+ 30 s).
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) == int((30.0 + 30.0) * 1e6)
    assert proxy.popen.wait(timeout=10) == 0
