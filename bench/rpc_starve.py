#!/usr/bin/env python3
"""Can the control plane starve SIP? SIP latency with and without an RPC storm.

Starts, on loopback (``--base-port``, default 27000: proxy +60, UAS +70, UAC
+80, HTTP +90), a SIPp UAS, one ``sipfleet run`` and a SIPp UAC placing
``--rate`` calls/s for ``--duration`` s, twice:

1. quiet: no RPC at all;
2. storm: ``--rpcs`` JSON-RPC requests over HTTP (``--method``, default
   ``dispatcher.list``), all started at once from another process, each on its
   own connection, ``--start`` s into the run.

SIPp's per-call response times (``-trace_rtt``: INVITE -> 200) give p50/p99/max
for the whole run and for the calls started while the storm lasted; the storm
reports how many requests got 200, 503 (sipfleet's bound: ``[control]
max_inflight``) or no answer, and its own latencies. Every process runs in its
own session, bounded in time, and is killed at the end.

  bench/rpc_starve.py                               # 200 calls/s, 10,000 RPCs
  bench/rpc_starve.py --rpcs 2000 --method core.uptime --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rpc_latency as rl  # noqa: E402  (a sibling script: its process helpers)

HOST = rl.HOST


# -- the storm (run as a child process: python rpc_starve.py --storm PORT N METHOD) --------


async def _one(port: int, body: bytes, timeout: float) -> tuple[int, float]:
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        writer.write(
            b"POST /RPC HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (HOST.encode(), port, len(body), body)
        )
        line = await asyncio.wait_for(reader.readline(), timeout)
        await asyncio.wait_for(reader.read(), timeout)
        writer.close()
        status = int(line.split()[1]) if line.startswith(b"HTTP/") else 0
    except (TimeoutError, OSError, ValueError, IndexError):
        status = 0
    return status, (time.perf_counter() - t0) * 1000.0


async def _storm(port: int, n: int, method: str, timeout: float) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "id": 1}).encode()
    t0 = time.monotonic()
    results = await asyncio.gather(*(_one(port, body, timeout) for _ in range(n)))
    took = time.monotonic() - t0
    by_status: dict[str, int] = {}
    for status, _ in results:
        key = str(status) if status else "no answer"
        by_status[key] = by_status.get(key, 0) + 1
    ok = [ms for status, ms in results if status == 200]
    return {"rpcs": n, "took_s": round(took, 2), "status": by_status, "ok_latency": rl.summary(ok)}


def storm_main(port: int, n: int, method: str) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 256)), hard))
    print(json.dumps(asyncio.run(_storm(port, n, method, 30.0))))
    return 0


# -- the SIP side --------------------------------------------------------------------------


def _rtts(work: Path, started: float) -> list[tuple[float, float]]:
    """(wall time in s, INVITE->200 in ms) of every call, from SIPp's -trace_rtt file
    (whose clock counts from SIPp's start when it is not a wall clock)."""
    out: list[tuple[float, float]] = []
    for path in work.glob("uac_rr_*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3 and parts[2].strip() == "1":
                t = float(parts[0]) / 1000.0
                out.append((t if t > 1e9 else started + t, float(parts[1])))
        path.unlink()
    return out


def _phase(a: argparse.Namespace, work: Path, ports: dict[str, int], storm: bool) -> dict[str, Any]:
    sipp = shutil.which("sipp")
    assert sipp is not None
    calls = int(a.rate * a.duration)
    budget = a.duration * 3 + 30
    started = time.time()
    uac = rl._spawn(
        [sipp, "-sf", "uac_rr.xml", f"{HOST}:{ports['proxy']}", "-i", HOST, "-p",
         str(ports["uac"]), "-t", "u1", "-m", str(calls), "-r", str(a.rate), "-l", "5000",
         "-nostdin", "-trace_stat", "-stf", "stat.csv", "-fd", "3600", "-trace_rtt",
         "-rtt_freq", "1", "-timeout", f"{budget:.0f}", "-timeout_error"],
        work, "uac.log",
    )  # fmt: skip
    out: dict[str, Any] = {}
    window: tuple[float, float] | None = None
    try:
        if storm:
            time.sleep(a.start)
            t0 = time.time()
            nice = ["nice", "-n", str(a.client_nice)] if a.client_nice else []
            child = subprocess.run(
                [
                    *nice,
                    sys.executable,
                    __file__,
                    "--storm",
                    str(ports["http"]),
                    str(a.rpcs),
                    a.method,
                ],
                capture_output=True,
                timeout=budget,
                check=False,
            )
            window = (t0, time.time())
            try:
                out["storm"] = json.loads(child.stdout)
            except ValueError:
                out["storm"] = {"error": child.stderr.decode(errors="replace")[-500:]}
        uac.wait(timeout=budget + 10)
    finally:
        rl._stop([uac])
    stats = rl._read_stats(work / "stat.csv")
    (work / "stat.csv").unlink(missing_ok=True)
    if stats is not None:
        out["calls_ok"] = int(stats["SuccessfulCall(C)"])
        out["calls_failed"] = max(int(stats["FailedCall(C)"]), calls - out["calls_ok"])
    rtts = _rtts(work, started)
    out["sip_all"] = rl.summary([ms for _, ms in rtts])
    if window is not None:
        inside = [ms for t, ms in rtts if window[0] <= t <= window[1] + 0.5]
        out["sip_during_storm"] = rl.summary(inside)
    return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("sipp") is None:
        return {"error": "sipp is not installed (Debian package sip-tester)"}
    base = a.base_port
    ports = {"proxy": base + 60, "uas": base + 70, "uac": base + 80, "http": base + 90}
    busy = [p for p in ports.values() if not rl._free(p)]
    if busy:
        return {"error": f"ports in use: {busy} (try --base-port)"}
    work = Path(tempfile.mkdtemp(prefix="rpc-starve-"))
    for name in ("uac_rr.xml", "uas_rr.xml"):
        shutil.copy(HERE / name, work)
    (work / "dispatcher.list").write_text(f"1 sip:{HOST}:{ports['uas']} 0 0\n")
    config = work / "sipfleet.toml"
    config.write_text(
        f'[proxy]\nlisten = ["udp:{HOST}:{ports["proxy"]}"]\n'
        f'[store]\ntype = "list"\npath = "{work / "dispatcher.list"}"\n'
        "[dispatcher]\nping_interval = 0\n"
        f'[control]\nrun_dir = "{work / "run"}"\n'
        + (f"max_inflight = {a.max_inflight}\n" if a.max_inflight else "")
        + ("own_thread = false\n" if a.same_loop else "")
        + (f"cpu_share = {a.cpu_share}\n" if a.cpu_share else "")
        + f'[control.http]\nhost = "{HOST}"\nport = {ports["http"]}\n'
        '[log]\nlevel = "warning"\n'
    )
    sipp = shutil.which("sipp")
    assert sipp is not None
    procs: list[subprocess.Popen[bytes]] = []
    out: dict[str, Any] = {
        "rate": a.rate,
        "duration_s": a.duration,
        "rpcs": a.rpcs,
        "method": a.method,
        "own_thread": not a.same_loop,
    }
    try:
        procs.append(rl._spawn(
            [sipp, "-sf", "uas_rr.xml", "-i", HOST, "-p", str(ports["uas"]), "-t", "u1",
             "-nostdin", "-timeout", f"{a.duration * 8 + 120:.0f}"],
            work, "uas.log",
        ))  # fmt: skip
        procs.append(rl._spawn([*rl._sipfleet(), "run", "-c", str(config)], work, "sipfleet.log"))
        if not rl._wait_http(ports["http"], 15) or not rl._wait_udp_bound(ports["uas"], 5):
            return {**out, "error": f"sipfleet or the UAS did not start: see {work}"}
        out["quiet"] = _phase(a, work, ports, storm=False)
        out["storm"] = _phase(a, work, ports, storm=True)
        return out
    finally:
        rl._stop(procs)
        if a.keep or "error" in out:
            out["workdir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--storm":
        return storm_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base-port", type=int, default=27000)
    ap.add_argument("--rate", type=int, default=200, help="SIP calls per second")
    ap.add_argument("--duration", type=float, default=12.0, help="seconds of calls per phase")
    ap.add_argument("--rpcs", type=int, default=10000, help="concurrent RPC requests")
    ap.add_argument("--method", default="dispatcher.list")
    ap.add_argument("--start", type=float, default=3.0, help="storm starts this far into the run")
    ap.add_argument(
        "--max-inflight", type=int, default=0, help="[control] max_inflight (0: default)"
    )
    ap.add_argument(
        "--same-loop", action="store_true", help="[control] own_thread = false: RPC on the SIP loop"
    )
    ap.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="run the storm's client under nice N (it shares this machine's CPUs with sipfleet)",
    )
    ap.add_argument("--cpu-share", type=float, default=0.0, help="[control] cpu_share (0: default)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    res = run(a)
    if a.json or "error" in res:
        print(json.dumps(res))
        return 1 if "error" in res else 0
    print(f"{a.rate} calls/s for {a.duration:g} s; storm: {a.rpcs} x {a.method} over HTTP at once")
    for label in ("quiet", "storm"):
        ph = res[label]
        line = f"  {label:6} calls ok/failed {ph.get('calls_ok')}/{ph.get('calls_failed')}"
        s = ph["sip_all"]
        line += f"  INVITE->200 p50 {s.get('p50_ms')} ms p99 {s.get('p99_ms')} ms max {s.get('max_ms')} ms"
        print(line)
        if "sip_during_storm" in ph:
            d = ph["sip_during_storm"]
            print(f"         during the storm: n={d.get('count')} p50 {d.get('p50_ms')} ms "
                  f"p99 {d.get('p99_ms')} ms max {d.get('max_ms')} ms")  # fmt: skip
            st = ph["storm"]
            print(f"         storm: {st.get('took_s')} s, status {st.get('status')}, "
                  f"200s {st.get('ok_latency')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
