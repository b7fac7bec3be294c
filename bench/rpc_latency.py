#!/usr/bin/env python3
"""``dispatcher.set_state`` round trip over HTTP JSON-RPC: p50/p99, idle and under call load.

Starts, on loopback and on ports of its own (``--base-port``, default 26000:
proxy +60, UAS +70/+71, UAC +80, HTTP +90; never 5060, where other benchmarks
run), two SIPp UAS, one ``sipfleet run`` balancing over them, then:

1. idle: ``--idle`` sequential ``dispatcher.set_state`` calls on one keep-alive
   HTTP connection, alternating ``d`` and ``a`` on the first UAS (each one
   an admin change the store persists: the full path);
2. under load: a SIPp UAC drives ``--rate`` calls/s for ``--duration`` s through
   the proxy while the same calls go on, one every ``--interval`` ms.

Prints the round-trip percentiles and the UAC's calls ok / failed: a failed call
while the first UAS toggles between disabled and active would be one the
control traffic caused (the other UAS takes the calls meanwhile). Every process
runs in its own session, bounded in time, and is killed at the end.

  bench/rpc_latency.py                      # 2,000 idle, 1,000 calls/s for 15 s
  bench/rpc_latency.py --store list --rate 500 --duration 10 --json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.client
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
BODY = '{"jsonrpc":"2.0","method":"dispatcher.set_state","params":["%s",1,"%s"],"id":%d}'


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of unsorted ``values``."""
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


def _free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


def _spawn(argv: list[str], cwd: Path, log: str) -> subprocess.Popen[bytes]:
    with open(cwd / log, "wb") as out:
        return subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)


def _wait_http(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=1)
            conn.request(
                "POST",
                "/RPC",
                b'{"jsonrpc":"2.0","method":"core.version","id":1}',
                {"Content-Type": "application/json"},
            )
            if conn.getresponse().status == 200:
                conn.close()
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _wait_udp_bound(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _free(port):
            return True
        time.sleep(0.05)
    return False


class Caller:
    """set_state on one keep-alive HTTP connection, timing each round trip."""

    def __init__(self, port: int, uri: str, states: tuple[str, str]) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=5)
        self.uri = uri
        self.states = states
        self.n = 0
        self.errors: list[str] = []

    def call(self) -> float:
        self.n += 1
        state = self.states[0] if self.n % 2 else self.states[1]
        body = (BODY % (state, self.uri, self.n)).encode()
        t0 = time.perf_counter()
        self.conn.request("POST", "/RPC", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - t0
        doc = json.loads(data)
        if doc.get("result") != "Ok. Dispatcher state updated.":
            self.errors.append(str(doc.get("error")))
        return elapsed * 1000.0

    def close(self) -> None:
        if self.n % 2:  # leave it active
            self.call()
        self.conn.close()


def summary(rtts: list[float]) -> dict[str, Any]:
    if not rtts:
        return {"count": 0}
    return {
        "count": len(rtts),
        "p50_ms": round(percentile(rtts, 50), 3),
        "p90_ms": round(percentile(rtts, 90), 3),
        "p99_ms": round(percentile(rtts, 99), 3),
        "max_ms": round(max(rtts), 3),
        "mean_ms": round(statistics.fmean(rtts), 3),
    }


def _read_stats(path: Path) -> dict[str, str] | None:
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return None
    return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) > 1 else None


def _sipfleet() -> list[str]:
    script = Path(sys.executable).with_name("sipfleet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sipfleet.cli.main"]


def run(a: argparse.Namespace) -> dict[str, Any]:
    sipp = shutil.which("sipp")
    if sipp is None:
        return {"error": "sipp is not installed (Debian package sip-tester)"}
    base = a.base_port
    proxy_port, uas_ports, uac_port, http_port = (
        base + 60,
        (base + 70, base + 71),
        base + 80,
        base + 90,
    )
    busy = [p for p in (proxy_port, *uas_ports, uac_port, http_port) if not _free(p)]
    if busy:
        return {"error": f"ports in use: {busy} (try --base-port)"}
    work = Path(tempfile.mkdtemp(prefix="rpc-latency-"))
    for name in ("uac_rr.xml", "uas_rr.xml"):
        shutil.copy(HERE / name, work)
    uris = [f"sip:{HOST}:{p}" for p in uas_ports]
    listing = "".join(f"1 {u} 0 0\n" for u in uris)
    if a.store == "list":
        store_args = ["--list", str(work / "dispatcher.list")]
        (work / "dispatcher.list").write_text(listing)
    else:
        from sipfleet.dispatch import parse_list
        from sipfleet.store.sqlite import SqliteStore

        with SqliteStore(work / "sipfleet.db") as db:
            db.init()
            db.replace(parse_list(listing, "bench"))
        store_args = ["--db", str(work / "sipfleet.db")]
    calls = int(a.rate * a.duration)
    budget = a.duration * 3 + 30
    procs: list[subprocess.Popen[bytes]] = []
    out: dict[str, Any] = {
        "store": a.store,
        "states": a.states,
        "rate": a.rate,
        "duration_s": a.duration,
    }
    try:
        for port in uas_ports:
            procs.append(_spawn(
                [sipp, "-sf", "uas_rr.xml", "-i", HOST, "-p", str(port), "-t", "u1", "-nostdin",
                 "-max_socket", "10000", "-timeout", f"{budget + 30:.0f}"],
                work, f"uas{port}.log",
            ))  # fmt: skip
        if not all(_wait_udp_bound(p, 5) for p in uas_ports):
            return {**out, "error": f"a SIPp UAS did not start: see {work}"}
        procs.append(_spawn(
            [*_sipfleet(), "run", "--listen", f"udp:{HOST}:{proxy_port}",
             "--run-dir", str(work / "run"), "--http", f"{HOST}:{http_port}",
             "--ping-interval", "0", "--log-level", "warning", *store_args],
            work, "sipfleet.log",
        ))  # fmt: skip
        if not _wait_http(http_port, 15):
            return {**out, "error": f"sipfleet did not answer HTTP: see {work}/sipfleet.log"}

        first, _, second = a.states.partition(",")
        caller = Caller(http_port, uris[0], (first, second or "a"))
        for _ in range(a.warmup):
            caller.call()
        idle = [caller.call() for _ in range(a.idle)]
        out["idle"] = summary(idle)

        uac = _spawn(
            [sipp, "-sf", "uac_rr.xml", f"{HOST}:{proxy_port}", "-i", HOST, "-p", str(uac_port),
             "-t", "u1", "-m", str(calls), "-r", str(a.rate), "-l", "5000", "-nostdin",
             "-trace_stat", "-stf", "stat.csv", "-fd", "3600", "-trace_err",
             "-error_file", "errors.log", "-timeout", f"{budget:.0f}", "-timeout_error"],
            work, "uac.log",
        )  # fmt: skip
        procs.append(uac)
        time.sleep(1.0)  # let the call rate ramp up before measuring
        loaded: list[float] = []
        stop_at = time.monotonic() + a.duration - 1.5
        interval = a.interval / 1000.0
        nxt = time.monotonic()
        while uac.poll() is None and time.monotonic() < stop_at:
            loaded.append(caller.call())
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        out["under_load"] = summary(loaded)
        caller.close()
        out["rpc_errors"] = caller.errors[:5]
        try:
            uac.wait(timeout=budget + 10)
        except subprocess.TimeoutExpired:
            out["error"] = "SIPp UAC overran its time budget"
        stats = _read_stats(work / "stat.csv")
        if stats is None:
            out["error"] = f"SIPp UAC wrote no statistics: see {work}"
        else:
            out["calls"] = calls
            out["calls_ok"] = int(stats["SuccessfulCall(C)"])
            out["calls_failed"] = max(int(stats["FailedCall(C)"]), calls - out["calls_ok"])
            out["achieved_cps"] = round(float(stats["CallRate(C)"]), 1)
        return out
    finally:
        _stop(procs)
        if "error" not in out and not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            out["workdir"] = str(work)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base-port", type=int, default=26000)
    ap.add_argument("--store", choices=["sqlite", "list"], default="sqlite")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--idle", type=int, default=2000, help="set_state calls with no calls flowing")
    ap.add_argument("--rate", type=int, default=1000, help="SIP calls per second under load")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of call load")
    ap.add_argument("--interval", type=float, default=5.0, help="ms between set_state under load")
    ap.add_argument(
        "--states",
        default="d,a",
        help="the two states to alternate: d,a (admin: persisted) or ip,ap (health: memory only)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    res = run(a)
    if a.json or "error" in res:
        print(json.dumps(res))
        return 1 if "error" in res else 0
    persisted = "d" in a.states.lower()
    what = "each call persists an admin change" if persisted else "health only, nothing persisted"
    print(f"dispatcher.set_state {a.states} over HTTP, {a.store} store ({what})")
    for label, key in (("idle", "idle"), (f"under {a.rate} calls/s", "under_load")):
        s = res[key]
        print(
            f"  {label:>20}: n={s['count']:5d}  p50 {s['p50_ms']:.3f} ms  p90 {s['p90_ms']:.3f} ms"
            f"  p99 {s['p99_ms']:.3f} ms  max {s['max_ms']:.3f} ms"
        )
    print(
        f"  calls: {res['calls_ok']} ok / {res['calls_failed']} failed of {res['calls']}"
        f" (achieved {res['achieved_cps']}/s); rpc errors: {len(res['rpc_errors'])}"
    )
    return 0 if res["calls_failed"] == 0 and not res["rpc_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
