"""One load run on loopback: SIPp UAC -> proxy under test -> two SIPp UAS back ends.

``run_load`` starts two fresh SIPp UAS (127.0.0.1:5070 and :5071, ``uas_rr.xml``),
the proxy command it is given (which must listen on 127.0.0.1:5060 and balance
to those two), waits for it to bind, then drives ``calls`` calls at ``rate`` per
second with a SIPp UAC from :5080 (``uac_rr.xml``) and measures:

- calls ok / failed (calls that never completed count as failed), and how many of
  the failures were a 180 forwarded after the 200 (``late_1xx``);
- the proxy's CPU: utime + stime of every process in its session (Kamailio
  forks), from /proc, between just before and just after the UAC's run;
- SIPp's INVITE->200 response time of every call (``-trace_rtt -rtt_freq 1``).
  SIPp reads a coarse clock (CLOCK_MONOTONIC_COARSE, 4 ms on a HZ=250 kernel),
  so the times are multiples of that tick: fine for tails, coarse for medians.

Every process gets its own session and is killed at the end; each run is
bounded in calls and time (SIPp ``-timeout`` and a subprocess timeout). Used by
``sipbench.py`` (one proxy) and ``side_by_side.py`` (sipfleet and Kamailio).
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import glob
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

__all__ = [
    "ALL_PORTS",
    "INTERRUPTED",
    "PROXY_PORT",
    "UAC_PORT",
    "UAS_PORTS",
    "LoadResult",
    "Transport",
    "busy_ports",
    "percentile",
    "run_load",
    "session_cpu",
    "sipp_clock_ms",
]

Transport = Literal["udp", "tcp"]
HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
PROXY_PORT = 5060
UAS_PORTS = (5070, 5071)
UAC_PORT = 5080
ALL_PORTS = (PROXY_PORT, *UAS_PORTS, UAC_PORT)
#: How ``LoadResult.error`` starts when something outside the run stopped it (worth a retry).
INTERRUPTED = "interrupted"
#: SIPp's limit on calls open at once: high enough never to throttle a healthy run.
MAX_CALLS_OPEN = 5000


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system) of all live processes in session ``sid``."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        if int(fields[3]) == sid:  # session id is field 6 overall
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def _bindable(port: int, proto: Transport) -> bool:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        if proto == "tcp":  # TIME_WAIT leftovers of the last run do not count as busy
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def busy_ports(ports: Sequence[int] = ALL_PORTS) -> list[str]:
    """The ``port/proto`` pairs among ``ports`` something else holds on loopback."""
    return [f"{p}/{proto}" for p in ports for proto in ("udp", "tcp") if not _bindable(p, proto)]


def wait_ports_free(timeout: float = 10.0) -> list[str]:
    """Wait for the last run's processes to let go of the ports; what is still busy."""
    deadline = time.monotonic() + timeout
    while True:
        busy = busy_ports()
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.1)


def _bound(port: int, proto: Transport) -> bool:
    needle = f":{port:04X}"
    with open(f"/proc/net/{proto}") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1].endswith(needle) and (proto == "udp" or cols[3] == "0A"):
                return True
    return False


def _wait_bound(port: int, protos: Sequence[Transport], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_bound(port, p) for p in protos):
            return True
        time.sleep(0.05)
    return False


def sipp_clock_ms() -> float:
    """Resolution of the clock SIPp times responses with (CLOCK_MONOTONIC_COARSE), in ms."""

    class Timespec(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        ts = Timespec()
        if libc.clock_getres(6, ctypes.byref(ts)) == 0:  # 6: CLOCK_MONOTONIC_COARSE
            return float(ts.sec * 1000 + ts.nsec / 1e6)
    except OSError:
        pass
    return float("nan")


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class LoadResult:
    label: str
    calls: int
    rate: int
    transport: str
    uas_transport: str
    ok: int = 0
    failed: int = 0
    sipp_failed: int = 0
    late_1xx: int = 0
    retransmissions: int = 0
    uac_rc: int | None = None
    wall_s: float = 0.0
    achieved_cps: float = 0.0
    proxy_cpu_s: float = 0.0
    cpu_us_per_call: float | None = None
    rtt_p50_ms: float | None = None
    rtt_p99_ms: float | None = None
    rtt_mean_ms: float | None = None
    rtt_samples: int = 0
    error: str | None = None
    workdir: str = ""
    rtt_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def clean(self) -> bool:
        """Every call completed and none failed."""
        return self.error is None and self.failed == 0 and self.ok == self.calls

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        del d["rtt_ms"]
        return d


def _spawn(
    argv: list[str], cwd: str, log: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env,
        )  # fmt: skip


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the rest of its group, if any
        except ProcessLookupError:
            pass
        p.wait(timeout=5)


def _read_stats(path: str) -> dict[str, str] | None:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return None
    return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) > 1 else None


#: SIPp's line for a call it aborted because a provisional response came after the 200
#: (uac_rr.xml's steps 0-3 are INVITE, 100, 180, 200): a proxy that forwards from several
#: processes (Kamailio) can reorder 180 and 200; real UAs ignore such a late 180.
_LATE_1XX = re.compile(
    rb"Aborting call on unexpected message for Call-Id '[^']*': "
    rb"while (?:pausing|sending|receiving) \(index (?:[4-9]|\d\d+)\), received 'SIP/2\.0 1\d\d "
)


def _count_late_1xx(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return len(_LATE_1XX.findall(f.read()))
    except OSError:
        return 0


def _read_rtt(workdir: str) -> list[float]:
    values: list[float] = []
    for path in glob.glob(os.path.join(workdir, "uac_rr_*_rtt.csv")):
        with open(path, newline="") as f:
            for row in csv.reader(f, delimiter=";"):
                if len(row) >= 3 and row[2].strip() == "1":  # rtd 1: INVITE -> 200
                    try:
                        values.append(float(row[1]))
                    except ValueError:
                        pass
    return sorted(values)


def run_load(
    proxy_cmd: Sequence[str],
    *,
    calls: int,
    rate: int,
    transport: Transport = "udp",
    uas_transport: Transport | None = None,
    label: str = "proxy",
    proxy_cwd: str | None = None,
    proxy_env: dict[str, str] | None = None,
    max_calls_open: int = MAX_CALLS_OPEN,
    keep: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
) -> LoadResult:
    """One bounded load run against a freshly started proxy; see the module docstring."""
    uas_t: Transport = uas_transport or transport
    res = LoadResult(label, calls, rate, transport, uas_t)
    sipp = shutil.which("sipp")
    if sipp is None:
        res.error = "sipp is not installed (Debian package sip-tester)"
        return res
    busy = wait_ports_free()
    if busy:
        res.error = f"ports still busy before the run: {', '.join(busy)}"
        return res
    work = tempfile.mkdtemp(prefix=f"sipload-{label}-")
    res.workdir = work
    for name in ("uac_rr.xml", "uas_rr.xml"):
        shutil.copy(os.path.join(HERE, name), work)
    budget = max(30.0, calls / max(rate, 1) * 3)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in UAS_PORTS:
            procs.append(_spawn(
                [sipp, "-sf", "uas_rr.xml", "-i", HOST, "-p", str(port),
                 "-t", "u1" if uas_t == "udp" else "t1", "-nostdin", "-max_socket", "10000",
                 "-timeout", f"{budget + 30:.0f}"],
                work, os.path.join(work, f"uas{port}.log"),
            ))  # fmt: skip
        if not all(_wait_bound(p, [uas_t], 5.0) for p in UAS_PORTS):
            res.error = "a SIPp UAS did not bind its port"
            return res
        # The proxy runs in the run's fresh work directory (so sipfleet's default store,
        # ./sipfleet.db, starts from its two example destinations every time); a
        # relative command path is the caller's.
        argv = list(proxy_cmd)
        if os.sep in argv[0] and not os.path.isabs(argv[0]):
            argv[0] = os.path.abspath(argv[0])
        proxy = _spawn(argv, proxy_cwd or work, os.path.join(work, "proxy.log"), proxy_env)
        procs.append(proxy)
        if not _wait_bound(PROXY_PORT, [transport], 15.0):
            res.error = f"proxy never bound {PROXY_PORT}/{transport}: see {work}/proxy.log"
            keep = True
            return res
        time.sleep(0.5)  # let start-up work (imports, forks) settle before measuring
        log(f"  {label}: {calls} calls at {rate}/s over {transport} (UAS {uas_t}) ...")
        cpu0, t0 = session_cpu(proxy.pid), time.monotonic()
        try:
            uac = subprocess.run(
                [sipp, "-sf", "uac_rr.xml", f"{HOST}:{PROXY_PORT}", "-i", HOST,
                 "-p", str(UAC_PORT), "-t", "u1" if transport == "udp" else "t1",
                 "-m", str(calls), "-r", str(rate), "-l", str(max_calls_open),
                 "-nostdin", "-trace_stat", "-stf", "stat.csv", "-fd", "3600",
                 "-trace_err", "-error_file", "errors.log",
                 "-trace_rtt", "-rtt_freq", "1",
                 "-timeout", f"{budget:.0f}", "-timeout_error"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                cwd=work, timeout=budget + 30, check=False,
            )  # fmt: skip
            res.uac_rc = uac.returncode
        except subprocess.TimeoutExpired:
            res.error = "SIPp UAC overran its time budget"
        res.wall_s = round(time.monotonic() - t0, 3)
        cpu = session_cpu(proxy.pid) - cpu0
        if proxy.poll() is not None:
            res.error = f"proxy exited during the run (rc {proxy.returncode}): see {work}/proxy.log"
            keep = True
        for port, uas in zip(UAS_PORTS, procs, strict=False):
            if uas.poll() is not None and res.error is None:
                res.error = f"{INTERRUPTED}: the SIPp UAS on {port} exited (rc {uas.returncode})"
                keep = True
        stats = _read_stats(os.path.join(work, "stat.csv"))
        if stats is None:
            res.error = res.error or "SIPp UAC wrote no statistics"
            keep = True
            return res
        created = int(stats["TotalCallCreated"])
        if created < calls and res.error is None and res.uac_rc in (0, None):
            # SIPp stopped placing calls without a timeout or error of its own: a signal
            # from outside (another session's `pkill sipp`?). Say so rather than score it.
            res.error = f"{INTERRUPTED}: the SIPp UAC stopped after {created} of {calls} calls"
            keep = True
        res.ok = int(stats["SuccessfulCall(C)"])
        res.sipp_failed = int(stats["FailedCall(C)"])
        res.failed = max(res.sipp_failed, calls - res.ok)
        res.retransmissions = int(stats["Retransmissions(C)"])
        res.late_1xx = _count_late_1xx(os.path.join(work, "errors.log"))
        res.achieved_cps = round(float(stats["CallRate(C)"]), 1)  # calls opened / elapsed s
        res.proxy_cpu_s = round(cpu, 3)
        res.cpu_us_per_call = round(cpu / res.ok * 1e6, 1) if res.ok else None
        rtt = _read_rtt(work)
        res.rtt_ms = rtt
        res.rtt_samples = len(rtt)
        res.rtt_p50_ms = percentile(rtt, 50)
        res.rtt_p99_ms = percentile(rtt, 99)
        res.rtt_mean_ms = round(sum(rtt) / len(rtt), 2) if rtt else None
        if not res.clean:
            keep = True
        return res
    finally:
        _stop(procs)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
            res.workdir = ""
