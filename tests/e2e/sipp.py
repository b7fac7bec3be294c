"""SIPp end-to-end harness: a real ``sipfleet run`` between real SIPp peers, on loopback.

Load this file by path (see the test modules), then::

    def test_calls(sipp_env):                     # fixture: sipp_env = harness.sipp_env
        a = sipp_env.uas("uas_rr.xml")
        b = sipp_env.uas("uas_rr.xml")
        proxy = sipp_env.proxy([a, b])
        result = sipp_env.uac("uac_rr.xml", proxy, calls=200, rate=100)
        assert result.failed == 0
        assert a.stop().successful + b.stop().successful == 200

Every process gets free loopback ports (never 5060: a developer's proxy may be
running), its own process group and a work directory under the test's
``tmp_path``; scenarios are copied there so SIPp's own log files land there
too. Every run is bounded: SIPp's ``-timeout``, ``-recv_timeout``, and a
subprocess timeout on top. The fixture kills what is left at teardown and
prints each process's command, exit status, SIPp error log and the proxy's
stderr; pytest shows that output when the test failed.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from waits import wait_for

__all__ = [
    "SCENARIOS",
    "SIPP",
    "TORTURE",
    "Proxy",
    "SippEnv",
    "Stats",
    "Uac",
    "UacResult",
    "Uas",
    "free_port",
    "listening",
    "sipp_env",
]

Transport = Literal["udp", "tcp"]

SIPP: str | None = shutil.which("sipp")
HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
TORTURE = HERE.parent / "vectors" / "rfc4475"
HOST = "127.0.0.1"

#: Every received message a SIPp scenario waits for must arrive within this.
RECV_TIMEOUT_MS = 8000
#: Slack on top of the time a UAC run needs at its rate (calls / rate).
RUN_SLACK_S = 15.0
#: How long a SIPp UAS may take to finish its calls after a soft stop.
UAS_STOP_S = 6.0
#: How much of each log the teardown report shows.
LOG_TAIL = 4000

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free for both UDP and TCP, never handed out before here."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOST, 0))
            port: int = u.getsockname()[1]
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((HOST, port))
                except OSError:
                    continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port for UDP and TCP")


def listening(port: int, proto: Transport) -> bool:
    """Whether something listens on ``port`` (any IPv4 address) per /proc/net."""
    needle = f":{port:04X}"
    table = "/proc/net/udp" if proto == "udp" else "/proc/net/tcp"
    with open(table) as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            # TCP sockets count only in state 0A (LISTEN); UDP ones have no state to check.
            if cols[1].endswith(needle) and (proto == "udp" or cols[3] == "0A"):
                return True
    return False


def sipfleet_command() -> list[str]:
    """``sipfleet`` from the running interpreter's venv, or the module behind it."""
    script = Path(sys.executable).with_name("sipfleet")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from sipfleet.cli.main import main; main()"]


def _tail(path: Path, limit: int = LOG_TAIL) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return "(none)"
    text = data[-limit:].decode("utf-8", "replace")
    return ("[...]\n" if len(data) > limit else "") + text if text.strip() else "(empty)"


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


# --- SIPp statistics -------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """The last row of a SIPp ``-trace_stat`` file: cumulative counters."""

    row: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> Stats | None:
        try:
            with open(path, newline="") as f:
                rows = list(csv.reader(f, delimiter=";"))
        except OSError:
            return None
        if len(rows) < 2:
            return None
        return cls(dict(zip(rows[0], rows[-1], strict=False)))

    def count(self, name: str) -> int:
        """A cumulative counter, e.g. ``count("FailedCall")``."""
        return int(self.row[f"{name}(C)"])

    @property
    def created(self) -> int:
        return int(self.row["TotalCallCreated"])

    @property
    def open_calls(self) -> int:
        """Calls SIPp holds now, those in their final timewait included."""
        return int(self.row["CurrentCall"])

    @property
    def written_at(self) -> float:
        """When SIPp wrote this row (wall clock, seconds since the epoch)."""
        return float(self.row["CurrentTime"].split()[-1])

    @property
    def incoming(self) -> int:
        return self.count("IncomingCall")

    @property
    def successful(self) -> int:
        return self.count("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.count("FailedCall")

    @property
    def unexpected(self) -> int:
        return self.count("FailedUnexpectedMessage")

    @property
    def retransmissions(self) -> int:
        return self.count("Retransmissions")

    def slower_than(self, ms: int, n: int = 1) -> int:
        """Calls whose response time ``n`` reached ``ms``: the last bucket of the
        scenario's ``ResponseTimeRepartition``, which must end at ``ms``."""
        return int(self.row[f"ResponseTimeRepartition{n}_>={ms}"])

    def response_time_ms(self, n: int = 1) -> float:
        """Mean of SIPp's response time ``n`` (an ``rtd`` in the scenario), in ms."""
        hh, mm, ss, us = (int(x) for x in self.row[f"ResponseTime{n}(C)"].split(":"))
        return ((hh * 60 + mm) * 60 + ss) * 1000 + us / 1000

    def summary(self) -> str:
        keys = ("created", "successful", "failed", "unexpected", "retransmissions")
        return ", ".join(f"{k}={getattr(self, k)}" for k in keys)


# --- processes -------------------------------------------------------------------------


@dataclass
class _Proc:
    """One subprocess in its own process group, with its logs in ``workdir``."""

    name: str
    workdir: Path
    argv: list[str] = field(default_factory=list)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    def _spawn(self, argv: list[str]) -> None:
        self.argv = argv
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def terminate(self, sig: int, grace: float) -> None:
        """Send ``sig`` to the group, wait ``grace`` seconds, then SIGKILL it."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            _kill_group(self.popen, sig)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(self.popen)  # stragglers in the group, if any
        self.popen.wait(timeout=5)

    def report(self) -> str:
        rc = None if self.popen is None else self.popen.returncode
        return (
            f"--- {self.name}: rc={rc}\n$ {' '.join(self.argv)}\n"
            f"[stderr] {_tail(self.stderr_path)}\n"
        )


class Proxy(_Proc):
    """``sipfleet run`` on one free port, UDP and TCP, with a generated TOML config: its
    destinations in a Kamailio list file (set 1, round-robin), no OPTIONS probing (SIPp
    UAS do not answer them), no control transports (they would collide between tests)."""

    def __init__(
        self,
        workdir: Path,
        destinations: Sequence[str],
        proxy: dict[str, object],
        dispatcher: dict[str, object],
    ) -> None:
        super().__init__("sipfleet", workdir)
        self.port = free_port()
        self.destinations = list(destinations)
        self.config_path = workdir / "sipfleet.toml"
        self.list_path = workdir / "dispatcher.list"
        self.sections: dict[str, dict[str, object]] = {
            "proxy": {
                "listen": [f"udp:{HOST}:{self.port}", f"tcp:{HOST}:{self.port}"],
                "shutdown_timeout": 1.0,
                **proxy,
            },
            "store": {"type": "list", "path": str(self.list_path)},
            "dispatcher": {"algorithm": 4, "ping_interval": 0, **dispatcher},
            **{f"control.{t}": {"enabled": False} for t in ("http", "fifo", "dgram", "binrpc")},
        }

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def config_text(self) -> str:
        lines: list[str] = []
        for name, table in self.sections.items():
            lines += [f"[{name}]", *(f"{k} = {_toml(v)}" for k, v in table.items()), ""]
        return "\n".join(lines)

    def list_text(self) -> str:
        return "".join(f"1 {uri} 0 0\n" for uri in self.destinations)

    def start(self, timeout: float = 30.0) -> None:
        for attempt in range(3):
            self.config_path.write_text(self.config_text())
            self.list_path.write_text(self.list_text())
            self._spawn([*sipfleet_command(), "run", "-c", str(self.config_path)])

            def up(attempt: int = attempt) -> str:
                if self.alive():
                    bound = listening(self.port, "udp") and listening(self.port, "tcp")
                    return "up" if bound else ""
                err = _tail(self.stderr_path)
                # A free port can be taken between picking and binding it
                # (by another process's ephemeral port): pick again.
                if "address already in use" in err and attempt < 2:
                    return "port taken"
                raise RuntimeError(f"sipfleet exited at start:\n{err}")

            if wait_for(f"sipfleet to bind {self.address}", up, timeout) == "up":
                return
            self.new_ports()

    def new_ports(self) -> None:
        self.port = free_port()
        self.sections["proxy"]["listen"] = [f"udp:{HOST}:{self.port}", f"tcp:{HOST}:{self.port}"]

    def stop(self) -> None:
        self.terminate(signal.SIGTERM, grace=3.0)

    def report(self) -> str:
        return super().report() + f"[config]\n{self.config_text()}[list]\n{self.list_text()}"


class Uas(_Proc):
    """A SIPp UAS (``-sf scenario``) listening on a free port until ``stop()``."""

    def __init__(self, workdir: Path, scenario: str, transport: Transport, name: str) -> None:
        super().__init__(name, workdir)
        self.scenario = scenario
        self.transport: Transport = transport
        self.port = free_port()
        self._stats: Stats | None = None

    @property
    def uri(self) -> str:
        """This UAS as a dispatcher destination."""
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{HOST}:{self.port}{suffix}"

    @property
    def stat_path(self) -> Path:
        return self.workdir / "stat.csv"

    @property
    def error_path(self) -> Path:
        return self.workdir / "errors.log"

    def start(self, lifetime: float = 120.0, timeout: float = 20.0) -> None:
        shutil.copy(SCENARIOS / self.scenario, self.workdir / self.scenario)
        self._spawn(
            [
                *_sipp_common(self.scenario, self.port, self.transport),
                "-trace_stat", "-stf", str(self.stat_path), "-fd", "1",
                "-trace_err", "-error_file", str(self.error_path),
                "-timeout", f"{lifetime:.0f}",
            ]
        )  # fmt: skip

        def bound() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited at start:\n{_tail(self.stderr_path)}")
            return listening(self.port, self.transport)

        wait_for(f"{self.name} to bind {self.port}/{self.transport}", bound, timeout, 0.02)

    def wait_idle(self, since: float, timeout: float = 15.0) -> Stats:
        """Wait for a statistics row written after ``since`` (wall clock) that shows no
        call open: every call that ended before ``since`` is forgotten, its timewait
        over (rows come every second: ``-fd 1``)."""

        def idle() -> Stats | None:
            st = Stats.read(self.stat_path)
            ok = st is not None and st.written_at > since and st.open_calls == 0
            return st if ok else None

        def last() -> str:
            st = Stats.read(self.stat_path)
            return "no row" if st is None else f"{st.open_calls} open at {st.written_at:.3f}"

        return wait_for(f"{self.name} to hold no call after {since:.3f}", idle, timeout, seen=last)

    def stop(self) -> Stats:
        """Stop softly (SIGUSR1: no new calls, finish current ones) and read the final stats.

        A UAS killed after ``UAS_STOP_S`` reports its last periodic (1 s) row.
        """
        if self._stats is None:
            self.terminate(signal.SIGUSR1, grace=UAS_STOP_S)
            stats = Stats.read(self.stat_path)
            if stats is None:
                raise AssertionError(f"{self.name} left no statistics\n{self.report()}")
            self._stats = stats
        return self._stats

    def report(self) -> str:
        stats = Stats.read(self.stat_path)
        return (
            super().report()
            + f"[stats] {stats.summary() if stats else '(none)'}\n"
            + f"[errors] {_tail(self.error_path)}\n"
        )


@dataclass(frozen=True)
class UacResult:
    """A finished SIPp UAC run."""

    rc: int | None
    stats: Stats
    wall: float

    @property
    def successful(self) -> int:
        return self.stats.successful

    @property
    def failed(self) -> int:
        return self.stats.failed

    def summary(self) -> str:
        return f"rc={self.rc} wall={self.wall:.1f}s {self.stats.summary()}"


class Uac(_Proc):
    """A SIPp UAC placing ``calls`` calls at ``rate`` per second, then exiting."""

    def __init__(
        self,
        workdir: Path,
        scenario: str,
        target: str,
        *,
        calls: int,
        rate: float,
        transport: Transport,
        limit: int | None = None,
        extra: Sequence[str] = (),
        hold_s: float = 0.0,
    ) -> None:
        super().__init__("uac", workdir)
        self.scenario = scenario
        self.target = target
        self.calls = calls
        self.rate = rate
        self.transport: Transport = transport
        self.limit = limit
        self.extra = list(extra)
        self.port = free_port()
        # The last call starts at calls/rate and lasts hold_s (-d) more.
        self.budget = calls / rate + hold_s + RUN_SLACK_S
        self.started = 0.0
        self.result: UacResult | None = None

    @property
    def stat_path(self) -> Path:
        return self.workdir / "stat.csv"

    @property
    def error_path(self) -> Path:
        return self.workdir / "errors.log"

    @property
    def screen_path(self) -> Path:
        return self.workdir / "screen.log"

    def start(self) -> None:
        shutil.copy(SCENARIOS / self.scenario, self.workdir / self.scenario)
        argv = [
            *_sipp_common(self.scenario, self.port, self.transport),
            self.target,
            "-m", str(self.calls), "-r", f"{self.rate:g}",
            "-trace_stat", "-stf", str(self.stat_path), "-fd", "1",
            "-trace_err", "-error_file", str(self.error_path),
            "-trace_screen", "-screen_file", str(self.screen_path),
            "-timeout", f"{self.budget:.0f}", "-timeout_error",
        ]  # fmt: skip
        if self.limit is not None:
            argv += ["-l", str(self.limit)]
        self.started = time.monotonic()
        self._spawn(argv + self.extra)

    def wait(self) -> UacResult:
        """Wait for SIPp to finish (bounded by its budget) and read its statistics."""
        if self.result is not None:
            return self.result
        assert self.popen is not None
        try:
            self.popen.wait(timeout=self.budget + 10)
        except subprocess.TimeoutExpired:
            self.terminate(signal.SIGKILL, grace=0)
        wall = time.monotonic() - self.started
        stats = Stats.read(self.stat_path)
        if stats is None:
            raise AssertionError(f"SIPp UAC left no statistics\n{self.report()}")
        self.result = UacResult(self.popen.returncode, stats, wall)
        return self.result

    def report(self) -> str:
        stats = Stats.read(self.stat_path)
        return (
            super().report()
            + f"[stats] {stats.summary() if stats else '(none)'}\n"
            + f"[errors] {_tail(self.error_path)}\n"
            + f"[screen] {_tail(self.screen_path, 2500)}\n"
        )


def _sipp_common(scenario: str, port: int, transport: Transport) -> list[str]:
    assert SIPP is not None
    return [
        SIPP, "-sf", scenario, "-i", HOST, "-p", str(port),
        "-t", "u1" if transport == "udp" else "t1",
        "-nostdin", "-recv_timeout", str(RECV_TIMEOUT_MS),
    ]  # fmt: skip


# --- the environment -------------------------------------------------------------------


class SippEnv:
    """The processes of one test: one proxy, SIPp UAS and UAC instances."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[_Proc] = []
        self._n = 0

    def _dir(self, name: str) -> Path:
        self._n += 1
        path = self.root / f"{self._n:02d}-{name}"
        path.mkdir(parents=True)
        return path

    def uas(self, scenario: str, transport: Transport = "udp") -> Uas:
        """Start a SIPp UAS running ``scenario`` (a file in scenarios/)."""
        name = f"uas{sum(isinstance(p, Uas) for p in self.procs) + 1}-{Path(scenario).stem}"
        uas = Uas(self._dir(name), scenario, transport, name)
        self.procs.append(uas)
        uas.start()
        return uas

    def proxy(
        self,
        destinations: Sequence[Uas | str],
        *,
        first_response_timeout: float = 1.0,
        dispatcher: dict[str, object] | None = None,
        **options: object,
    ) -> Proxy:
        """Start ``sipfleet run`` balancing over ``destinations`` (UAS or SIP URIs);
        ``options`` go to ``[proxy]``, ``dispatcher`` to ``[dispatcher]``."""
        uris = [d.uri if isinstance(d, Uas) else d for d in destinations]
        options = {"first_response_timeout": first_response_timeout, **options}
        proxy = Proxy(self._dir("sipfleet"), uris, options, dispatcher or {})
        self.procs.append(proxy)
        proxy.start()
        return proxy

    def start_uac(
        self,
        scenario: str,
        proxy: Proxy | str,
        *,
        calls: int,
        rate: float,
        transport: Transport = "udp",
        limit: int | None = None,
        extra: Sequence[str] = (),
        hold_s: float = 0.0,
    ) -> Uac:
        """Start a SIPp UAC against ``proxy``; ``wait()`` on it for the result.
        ``hold_s`` is how long each call lasts (SIPp's -d), for the run's time budget."""
        target = proxy.address if isinstance(proxy, Proxy) else proxy
        uac = Uac(
            self._dir(f"uac-{Path(scenario).stem}"), scenario, target,
            calls=calls, rate=rate, transport=transport, limit=limit, extra=extra,
            hold_s=hold_s,
        )  # fmt: skip
        self.procs.append(uac)
        uac.start()
        return uac

    def uac(
        self,
        scenario: str,
        proxy: Proxy | str,
        *,
        calls: int,
        rate: float,
        transport: Transport = "udp",
        limit: int | None = None,
        extra: Sequence[str] = (),
    ) -> UacResult:
        """Run a SIPp UAC against ``proxy`` to completion."""
        return self.start_uac(
            scenario,
            proxy,
            calls=calls,
            rate=rate,
            transport=transport,
            limit=limit,
            extra=extra,
        ).wait()

    def close(self) -> None:
        """Stop everything: UACs first, then the UAS (softly), then the proxy."""
        for kind in (Uac, Uas, Proxy):
            for p in self.procs:
                if isinstance(p, kind):
                    try:
                        if isinstance(p, Proxy):
                            p.stop()
                        elif isinstance(p, Uas):
                            # Its stats only feed the report now: its last 1 s row will do.
                            p.terminate(signal.SIGUSR1, grace=1.0)
                        else:
                            p.terminate(signal.SIGKILL, grace=0)
                    except Exception as e:  # teardown goes on; the report says what broke
                        print(f"teardown of {p.name}: {e!r}")

    def report(self) -> str:
        return "\n".join(p.report() for p in self.procs)


@pytest.fixture
def sipp_env(tmp_path: Path) -> Iterator[SippEnv]:
    """A ``SippEnv`` that kills its processes and prints their logs at teardown."""
    if SIPP is None:
        pytest.skip("sipp is not installed (Debian package sip-tester)")
    env = SippEnv(tmp_path)
    try:
        yield env
    finally:
        env.close()
        print(env.report())
