"""A real ``sipfleet run`` driven by Debian's real kamcmd and kamctl, and by the sipfleet CLI.

Every test starts its own process on free loopback ports with its own run
directory (``SipfleetRun``, also used by test_rpc_dispatcher_compare.py),
serving a Kamailio list file or a SQLite store, probing off.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import kamailio_ref as ref
import pytest
from click.testing import CliRunner
from waits import wait_for

from sipfleet.cli.main import cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

needs_kamcmd = pytest.mark.skipif(not Path(ref.KAMCMD).exists(), reason="kamcmd is not installed")
needs_kamctl = pytest.mark.skipif(not Path(ref.KAMCTL).exists(), reason="kamctl is not installed")

LIST = ref.DEFAULT_LIST  # the same destinations the Kamailio reference serves


def free_sip_port() -> int:
    """A loopback port free for UDP and TCP alike."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port: int = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port")


def sipfleet_command() -> list[str]:
    script = Path(sys.executable).with_name("sipfleet")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from sipfleet.cli.main import main; main()"]


class SipfleetRun(ref._RpcPeer):  # type: ignore[misc,name-defined]
    """``sipfleet run`` as a subprocess: free ports, its own run dir, bounded start and stop."""

    def __init__(self, workdir: Path, *, store: str = "list", args: Sequence[str] = ()) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.run_dir = workdir / "run"
        self.ctl_path = self.run_dir / "sipfleet_ctl"
        self.fifo_path = self.run_dir / "sipfleet_rpc.fifo"
        self.store_kind = store
        self.store_path = workdir / ("dispatcher.list" if store == "list" else "sipfleet.db")
        self.sip_port = free_sip_port()
        self.http_port = ref.free_port()
        self.args = list(args)
        self.log_path = workdir / "sipfleet.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/RPC"

    def command(self) -> list[str]:
        return [
            *sipfleet_command(), "run",
            "--listen", f"udp:127.0.0.1:{self.sip_port}",
            "--listen", f"tcp:127.0.0.1:{self.sip_port}",
            "--run-dir", str(self.run_dir),
            "--http", f"127.0.0.1:{self.http_port}",
            "--ping-interval", "0",
            "--list" if self.store_kind == "list" else "--db", str(self.store_path),
            *self.args,
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> SipfleetRun:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"sipfleet exited with {self.process.returncode}:\n{self.log()}")
            if not self.ctl_path.exists():
                return False
            with contextlib.suppress(OSError):
                answer = ref.http_post(
                    "127.0.0.1",
                    self.http_port,
                    "/RPC",
                    b'{"jsonrpc":"2.0","method":"core.version","id":1}',
                    timeout=1.0,
                )
                return answer is not None and answer.status == 200
            return False

        try:
            wait_for("sipfleet to answer core.version", ready, timeout, seen=self.log)
        except AssertionError:
            self.stop()
            raise
        return self

    def log(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> int | None:
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        return proc.returncode

    def result(self, method: str, *params: Any) -> Any:
        doc = self.rpc(method, *params)
        assert "error" not in doc, doc
        return doc["result"]


@contextlib.contextmanager
def sipfleet_running(workdir: Path, list_text: str = LIST, **kw: Any) -> Iterator[SipfleetRun]:
    proc = SipfleetRun(workdir, **kw)
    if proc.store_kind == "list":
        proc.store_path.write_text(list_text)
    else:
        from sipfleet.dispatch import parse_list
        from sipfleet.store.sqlite import SqliteStore

        with SqliteStore(proc.store_path) as db:
            db.init()
            db.replace(parse_list(list_text, "test.list"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _flags(text: str) -> dict[str, str]:
    """URI -> FLAGS from kamcmd's printout of dispatcher.list."""
    out: dict[str, str] = {}
    uri = ""
    for line in text.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "URI":
            uri = value
        elif key == "FLAGS":
            out[uri] = value
    return out


# -- kamcmd ------------------------------------------------------------------------


@needs_kamcmd
def test_kamcmd_drives_a_running_sipfleet(tmp_path: Path) -> None:
    with sipfleet_running(tmp_path) as sf:
        out = sf.kamcmd("system.listMethods")
        assert out.returncode == 0, out.stderr
        names = out.stdout.splitlines()
        assert names == sf.result("system.listMethods")
        for method in ("dispatcher.list", "dispatcher.set_state", "dispatcher.reload", "dlg.list"):
            assert method in names
        for method in names:  # every method documents itself
            help_text = sf.kamcmd("system.methodHelp", method).stdout.strip()
            assert help_text and not help_text.startswith("error"), method

        listing = sf.kamcmd("dispatcher.list")
        assert listing.returncode == 0 and "\tNRSETS: 2\n" in listing.stdout
        assert _flags(listing.stdout) == {
            "sip:127.0.0.1:5072": "AX",
            "sip:127.0.0.1:5070": "AX",
            "sip:127.0.0.1:5071": "AP",
        }
        out = sf.kamcmd("dispatcher.set_state", "ip", "1", "sip:127.0.0.1:5070")
        assert (out.returncode, out.stdout) == (0, "Ok. Dispatcher state updated.\n")
        assert _flags(sf.kamcmd("dispatcher.list").stdout)["sip:127.0.0.1:5070"] == "IP"
        out = sf.kamcmd("dispatcher.set_state", "ip", "1", "sip:127.0.0.1:9")
        assert out.stdout == "error: 500 - State Update Failed\n"

        assert sf.kamcmd("dispatcher.reload").stdout == "Ok. Dispatcher successfully reloaded.\n"
        assert sf.kamcmd("dispatcher.reload").stdout == "error: 500 - Ongoing reload\n"
        # sipfleet keeps runtime state over a reload (Kamailio resets it).
        assert _flags(sf.kamcmd("dispatcher.list").stdout)["sip:127.0.0.1:5070"] == "IP"

        stats = sf.kamcmd("stats.get_statistics", "dialog:").stdout.splitlines()
        assert stats[0] == "dialog:active_dialogs = 0" and len(stats) == 5
        assert sf.kamcmd("dlg.end_dlg", "1", "2").stdout == "error: 404 - Dialog not found\n"
        assert sf.kamcmd("dispatcher.hash", "7", "alice", "server.com").stdout == (
            "{\n\thashid: 1412806172\n\tslot: 1\n}\n"
        )
        # Kamailio 5.6 answers these the same (measured with its ctl module).
        assert sf.kamcmd("dispatcher.ping_active", "x").stdout == "{\n\tOldPingState: 1\n}\n"
        assert sf.kamcmd("dispatcher.ping_active", "0").stdout == (
            "{\n\tNewPingState: 0\n\tOldPingState: 1\n}\n"
        )


@needs_kamcmd
@pytest.mark.parametrize("store", ["sqlite", "list"])
def test_a_disabled_destination_stays_disabled_across_restarts(tmp_path: Path, store: str) -> None:
    with sipfleet_running(tmp_path, store=store) as sf:
        out = sf.kamcmd("dispatcher.set_state", "d", "1", "sip:127.0.0.1:5070")
        assert out.stdout == "Ok. Dispatcher state updated.\n"
        out = sf.kamcmd("dispatcher.set_duid_state", "i", "2", "all")  # health: not kept
        assert out.stdout == "Ok. Dispatcher state updated.\n"
        events = sf.result("sipfleet.events")
        assert [e["event"] for e in events[-2:]] == ["state-changed"] * 2
        assert events[-2]["by"] == "binrpc" and events[-2]["stored"] is True  # kamcmd
    again = SipfleetRun(tmp_path, store=store).start()
    try:
        assert _flags(again.kamcmd("dispatcher.list").stdout) == {
            "sip:127.0.0.1:5072": "AX",
            "sip:127.0.0.1:5070": "DX",
            "sip:127.0.0.1:5071": "AP",
        }
    finally:
        again.stop()


# -- kamctl rpc (the JSON-RPC FIFO) -----------------------------------------------------


@needs_kamctl
def test_kamctl_rpc_drives_a_running_sipfleet(tmp_path: Path) -> None:
    with sipfleet_running(tmp_path) as sf:
        out = sf.kamctl_rpc("system.listMethods")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["result"] == sf.result("system.listMethods")
        doc = json.loads(sf.kamctl_rpc("dispatcher.list").stdout)
        assert doc["result"]["NRSETS"] == 2
        doc = json.loads(
            sf.kamctl_rpc("dispatcher.set_state", "ip", "2", "sip:127.0.0.1:5072").stdout
        )
        assert doc["result"] == "Ok. Dispatcher state updated."
        doc = json.loads(sf.kamctl_rpc("dispatcher.list").stdout)
        assert doc["result"]["RECORDS"][0]["SET"]["TARGETS"][0]["DEST"]["FLAGS"] == "IP"
        doc = json.loads(sf.kamctl_rpc("dispatcher.reload").stdout)
        assert doc["result"] == "Ok. Dispatcher successfully reloaded."
        doc = json.loads(sf.kamctl_rpc("dispatcher.reload").stdout)
        assert doc["error"] == {"code": 500, "message": "Ongoing reload"}
        doc = json.loads(sf.kamctl_rpc("stats.get_statistics", "rcv_requests").stdout)
        assert doc["result"] == ["core:rcv_requests = 0"]


# -- the sipfleet CLI as a process ------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sipfleet_command(), *args], capture_output=True, text=True, timeout=30, check=False
    )


def _cli_here(*args: str) -> tuple[int, str, str]:
    """The same CLI in-process (a process start costs ~0.5 s of imports)."""
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_sipfleet_cli_against_a_running_sipfleet(tmp_path: Path) -> None:
    with sipfleet_running(tmp_path, store="list", args=["--log-level", "warning"]) as sf:
        rd = ["--run-dir", str(sf.run_dir)]
        out = _cli("dispatcher", "set-state", "d", "2", "sip:127.0.0.1:5072", *rd)
        assert (out.returncode, out.stdout) == (0, "Ok. Dispatcher state updated.\n")
        out = _cli("dispatcher", "list", "--set", "2", *rd)
        assert out.returncode == 0
        dest = json.loads(out.stdout)["RECORDS"][0]["SET"]["TARGETS"][0]["DEST"]
        assert dest["FLAGS"] == "DX"
        add = ["dispatcher", "add", "1", "sip:127.0.0.1:5090", "--attrs", "duid=m9"]
        assert _cli_here(*add, "--url", sf.url) == (0, "Ok. Dispatcher destination added.\n", "")
        assert "1 sip:127.0.0.1:5090 0 0 duid=m9" in sf.store_path.read_text()  # written through
        # Within reload_delta of the add, as Kamailio.
        assert _cli_here("dispatcher", "reload", *rd) == (1, "", "error: 500 - Ongoing reload\n")
        code, out_text, _ = _cli_here("dispatcher", "hash", "7", "alice", "server.com", *rd)
        assert json.loads(out_text) == {"hashid": 1412806172, "slot": 1}
        code, _, err = _cli_here("dispatcher", "list", "--socket", str(tmp_path / "nope"))
        assert code == 2 and "cannot reach sipfleet" in err
