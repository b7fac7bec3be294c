"""What the acceptance tests of issues 3 and 5 need on top of sipp.py (which they reuse):
a ``sipfleet run`` with its control plane on, a full list file (sets, flags, priorities,
attrs), probing, routes and webhooks, that can be killed and restarted on the same
store; SIPp UAS that answer OPTIONS (``-aa``) and log their calls; and small helpers
to read the fleet's state over JSON-RPC; ``wait_for`` (waits.py) polls for a condition
with a deadline.

Import it by name (pyproject puts tests/e2e on the path), as sipp.py::

    import fleet
    def test_x(sipp_env):
        a = fleet.uas(sipp_env, probe=True)
        proxy = fleet.proxy(sipp_env, [fleet.Dest(a, attrs="duid=a")], dispatcher={...})
        proxy.rpc("dispatcher.list")
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sipp as harness
from waits import wait_for

__all__ = [
    "Dest",
    "Fleet",
    "LogLine",
    "LoggedUas",
    "RpcFault",
    "harness",
    "proxy",
    "read_log",
    "uac",
    "uas",
    "wait_for",
]

HOST = harness.HOST
#: The log file name a logging SIPp writes in its work directory (-trace_logs).
SIPP_LOG = "calls.log"


# --- logs of the logging scenarios ---------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """One line of a logging scenario: ``KIND <s> <us> <call-id>`` (uas_logged.xml,
    uac_logged.xml), or ``KIND ... <call-id>`` without a time (time is then 0)."""

    kind: str
    time: float
    call_id: str
    fields: tuple[str, ...]


def read_log(path: Path) -> list[LogLine]:
    """Every line of a SIPp ``<log>`` file, in file order."""
    try:
        text = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return []
    out: list[LogLine] = []
    for raw in text.splitlines():
        parts = raw.split()
        if len(parts) < 2:
            continue
        when = 0.0
        if len(parts) >= 4:
            try:
                when = float(parts[1]) + float(parts[2]) / 1e6
            except ValueError:
                when = 0.0
        out.append(LogLine(parts[0], when, parts[-1], tuple(parts[1:-1])))
    return out


# --- SIPp UAS that answer OPTIONS and log ------------------------------------------


class LoggedUas(harness.Uas):  # type: ignore[misc,name-defined]
    """A harness UAS with extra SIPp arguments: ``-aa`` (answer OPTIONS probes, so
    probing sees it up) and ``-trace_logs`` into ``calls.log`` (see uas_logged.xml)."""

    def __init__(self, *args: Any, extra: Sequence[str] = (), **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.extra = list(extra)

    def _spawn(self, argv: list[str]) -> None:
        super()._spawn(argv + self.extra)

    def terminate(self, sig: int, grace: float) -> None:
        # With -aa every probe leaves a SIPp "call" waiting for an INVITE that never
        # comes (until -recv_timeout): a soft stop (SIGUSR1) would only wait for them.
        if "-aa" in self.extra and sig == signal.SIGUSR1:
            grace = min(grace, 0.3)
        super().terminate(sig, grace)

    @property
    def log_path(self) -> Path:
        return Path(self.workdir) / SIPP_LOG

    def log(self, kind: str | None = None) -> list[LogLine]:
        return [x for x in read_log(self.log_path) if kind is None or x.kind == kind]

    def invites(self) -> list[LogLine]:
        return self.log("INVITE")

    def signal(self, sig: int) -> None:
        """Signal the SIPp process (SIGSTOP: it goes silent but keeps its port)."""
        assert self.popen is not None
        os.kill(self.popen.pid, sig)

    def report(self) -> str:
        return str(super().report()) + f"[log] {harness._tail(self.log_path, 1500)}\n"


def uas(
    env: Any,
    scenario: str = "uas_logged.xml",
    *,
    probe: bool = False,
    transport: str = "udp",
    extra: Sequence[str] = (),
) -> LoggedUas:
    """Start a SIPp UAS in ``env`` (a sipp.SippEnv): ``probe`` adds ``-aa``; logging
    scenarios write ``calls.log``; ``extra`` are more SIPp arguments."""
    n = sum(isinstance(p, harness.Uas) for p in env.procs) + 1
    name = f"uas{n}-{Path(scenario).stem}"
    extra = ["-trace_logs", "-log_file", SIPP_LOG, *(["-aa"] if probe else []), *extra]
    u = LoggedUas(env._dir(name), scenario, transport, name, extra=extra)
    env.procs.append(u)
    u.start()
    return u


def uac(
    env: Any,
    scenario: str,
    target: Any,
    *,
    calls: int,
    rate: float,
    duration_ms: int | None = None,
    service: str | None = None,
    limit: int | None = None,
    extra: Sequence[str] = (),
) -> Any:
    """Start (not wait for) a SIPp UAC in ``env`` that logs into its ``calls.log``;
    ``duration_ms`` is -d (the bare pause), ``service`` the R-URI user (-s)."""
    args = ["-trace_logs", "-log_file", SIPP_LOG, *extra]
    hold_s = 0.0
    if duration_ms is not None:
        args += ["-d", str(duration_ms)]
        hold_s = duration_ms / 1000
    if service is not None:
        args += ["-s", service]
    return env.start_uac(
        scenario, target, calls=calls, rate=rate, limit=limit, extra=args, hold_s=hold_s
    )


def uac_log(u: Any, kind: str | None = None) -> list[LogLine]:
    return [x for x in read_log(Path(u.workdir) / SIPP_LOG) if kind is None or x.kind == kind]


# --- sipfleet with its control plane ---------------------------------------------------


@dataclass(frozen=True)
class Dest:
    """One line of the Kamailio list file: ``set uri flags priority attrs``."""

    target: Any  # a harness Uas, or a SIP URI
    set_id: int = 1
    flags: int = 0
    priority: int = 0
    attrs: str = ""

    @property
    def uri(self) -> str:
        return str(self.target if isinstance(self.target, str) else self.target.uri)

    def line(self) -> str:
        return f"{self.set_id} {self.uri} {self.flags} {self.priority} {self.attrs}".rstrip() + "\n"


class RpcFault(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')} - {error.get('message')}")
        self.error = error


def _inline(value: dict[str, Any]) -> str:
    """A TOML inline table (nested ones too)."""
    items = []
    for k, v in value.items():
        items.append(f"{k} = {_inline(v) if isinstance(v, dict) else harness._toml(v)}")
    return "{ " + ", ".join(items) + " }"


class Fleet(harness.Proxy):  # type: ignore[misc,name-defined]
    """``sipfleet run`` as sipp.Proxy starts it, plus: JSON-RPC over HTTP on a free port
    and its own run dir; every ``Dest`` field in the list file; ``[[route]]`` and
    ``[[webhook]]`` tables; a graceful-stop timeout long enough for calls to finish;
    ``kill()`` and ``restart()`` on the same config and store (logs appended)."""

    def __init__(
        self,
        workdir: Path,
        dests: Sequence[Dest],
        proxy: dict[str, object],
        dispatcher: dict[str, object],
        routes: Sequence[dict[str, Any]] = (),
        webhooks: Sequence[dict[str, Any]] = (),
    ) -> None:
        super().__init__(workdir, [d.uri for d in dests], proxy, dispatcher)
        self.dests = list(dests)
        self.routes = list(routes)
        self.webhooks = list(webhooks)
        self.run_dir = Path(workdir) / "run"
        self.http_port = harness.free_port()
        if "shutdown_timeout" not in proxy:  # sipp.Proxy's 1 s cuts calls short
            self.sections["proxy"]["shutdown_timeout"] = 30.0
        self.sections["control"] = {"run_dir": str(self.run_dir)}
        self.sections["control.http"] = {"enabled": True, "port": self.http_port}
        self.token: str | None = None  # sent as a Bearer token when set
        self.starts = 0

    def new_ports(self) -> None:
        super().new_ports()
        self.http_port = harness.free_port()
        self.sections["control.http"]["port"] = self.http_port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}/RPC"

    def config_text(self) -> str:
        text = str(super().config_text())
        for table, rows in (("route", self.routes), ("webhook", self.webhooks)):
            for row in rows:
                text += f"[[{table}]]\n"
                for k, v in row.items():
                    text += f"{k} = {_inline(v) if isinstance(v, dict) else harness._toml(v)}\n"
                text += "\n"
        return text

    def list_text(self) -> str:
        return "".join(d.line() for d in self.dests)

    def _spawn(self, argv: list[str]) -> None:
        # Append, so a restart keeps the first run's stderr for the report.
        self.argv = argv
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            err.write(f"=== start {self.starts + 1} at {time.time():.3f}\n".encode())
            err.flush()
            self.popen = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.starts += 1

    def start(self, timeout: float = 30.0, *, fresh: bool = True) -> None:
        """Start; ``fresh=False`` keeps the list file (and every store file) as left."""
        if fresh:
            super().start(timeout)
        else:
            self._spawn([*harness.sipfleet_command(), "run", "-c", str(self.config_path)])
            wait_for(
                "sipfleet to listen again",
                lambda: (
                    (not self.alive() and _raise_exited(self))
                    or (harness.listening(self.port, "udp") and harness.listening(self.port, "tcp"))
                ),
                timeout,
                0.01,
            )
        wait_for("the JSON-RPC endpoint", self._rpc_ready, timeout, 0.02)

    def _rpc_ready(self) -> bool:
        if not self.alive():
            _raise_exited(self)
        try:
            self.rpc("core.version")
        except (OSError, RpcFault):
            return False
        return True

    def rewrite_list(self, dests: Sequence[Dest]) -> None:
        """Replace the list file (atomically, as an operator's tooling would)."""
        self.dests = list(dests)
        tmp = self.list_path.with_suffix(".tmp")
        tmp.write_text(self.list_text())
        os.replace(tmp, self.list_path)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Signal the process and wait for it to exit."""
        assert self.popen is not None
        os.kill(self.popen.pid, sig)
        self.popen.wait(timeout=timeout)

    def restart(self, timeout: float = 30.0) -> float:
        """SIGKILL, then start again on the same config and store; the seconds it was
        down (until its SIP sockets listened again)."""
        t0 = time.monotonic()
        self.kill(signal.SIGKILL)
        self.start(timeout, fresh=False)
        return time.monotonic() - t0

    # -- JSON-RPC ----------------------------------------------------------------------
    def rpc(self, method: str, *params: Any, timeout: float = 5.0) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url, body.encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as e:  # a fault: HTTP status = its code
            with e:
                doc = json.loads(e.read())
        if "error" in doc:
            raise RpcFault(doc["error"])
        return doc["result"]

    def targets(self) -> dict[str, dict[str, Any]]:
        """``dispatcher.list`` as {uri: DEST}, over every set (URIs are unique here)."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.rpc("dispatcher.list")["RECORDS"]:
            for t in rec["SET"]["TARGETS"]:
                out[t["DEST"]["URI"]] = t["DEST"]
        return out

    def flags(self) -> dict[str, str]:
        return {uri: d["FLAGS"] for uri, d in self.targets().items()}

    def loads(self) -> dict[str, int]:
        return {uri: d["RUNTIME"]["DLGLOAD"] for uri, d in self.targets().items()}

    def dialogs_by_callee(self) -> dict[int, int]:
        """Open dialogs per callee (UAS) port, from ``dlg.list``'s callee contact."""
        out: dict[int, int] = {}
        for d in self.rpc("dlg.list"):
            contact = d["callee"]["contact"]
            port = int(contact.split(";")[0].rstrip(">").rsplit(":", 1)[1])
            out[port] = out.get(port, 0) + 1
        return out

    def stored_dialogs(self) -> set[str]:
        """Call-IDs of the dialogs the list store has on disk (``<list file>.dialogs.db``,
        what a restart restores), read beside the running process (SQLite in WAL mode)."""
        path = Path(f"{self.list_path}.dialogs.db")
        if not path.exists():
            return set()
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("SELECT call_id FROM sipfleet_dialogs").fetchall()
        finally:
            con.close()
        return {r if isinstance(r, str) else bytes(r).decode("utf-8", "replace") for (r,) in rows}

    def wait_stored(self, call_ids: set[str], timeout: float = 15.0) -> None:
        """Wait until the dialogs on disk are exactly ``call_ids``: the write-behind
        batches (new dialogs every 200 ms, ended ones at once) have landed, so a
        SIGKILL now restores exactly these."""
        wait_for(
            f"the {len(call_ids)} open dialogs (and no other) on disk",
            lambda: self.stored_dialogs() == call_ids,
            timeout,
            seen=lambda: f"{len(self.stored_dialogs())} stored",
        )

    def statistic(self, name: str) -> int:
        """One counter of ``stats.get_statistics all``: ``group:name = value``."""
        for line in self.rpc("stats.get_statistics", "all"):
            key, _, value = line.partition(" = ")
            if key.split(":", 1)[-1] == name:
                return int(value)
        raise KeyError(name)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        """Start ``sipfleet ARGS --url <ours>`` (stdout/stderr piped)."""
        return subprocess.Popen(
            [*harness.sipfleet_command(), *args, "--url", self.url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def report(self) -> str:
        return str(super().report())


def _raise_exited(p: Fleet) -> bool:
    raise RuntimeError(f"sipfleet exited:\n{harness._tail(p.stderr_path)}")


def proxy(
    env: Any,
    dests: Sequence[Dest],
    *,
    first_response_timeout: float = 1.0,
    dispatcher: dict[str, object] | None = None,
    routes: Sequence[dict[str, Any]] = (),
    webhooks: Sequence[dict[str, Any]] = (),
    **options: object,
) -> Fleet:
    """Start a ``Fleet`` in ``env``; ``options`` go to ``[proxy]``, ``dispatcher`` to
    ``[dispatcher]`` (probing off unless given)."""
    options = {"first_response_timeout": first_response_timeout, **options}
    f = Fleet(env._dir("sipfleet"), dests, options, dispatcher or {}, routes, webhooks)
    env.procs.append(f)
    f.start()
    return f
