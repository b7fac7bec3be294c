#!/usr/bin/env python3
"""Do TLS handshakes stall the UDP path? UDP call latency with and without TLS load.

TLS runs in sipfleet's event loop (asyncio's SSL transport over uvloop): a
handshake's public-key work happens between datagrams. This starts, on
loopback (``--base-port``, default 28000: proxy +60 UDP and +61 TLS, UAS +70,
UAC +80), a SIPp UAS, one ``sipfleet run`` with a ``tls:`` listener
(certificates made with ``openssl``, EC P-256), and a SIPp UAC placing
``--rate`` UDP calls/s for ``--duration`` s, twice:

1. quiet: UDP calls only;
2. loaded: the same, while a client process opens ``--handshakes`` new TLS
   connections per second (full handshake, one OPTIONS answered over it, close).

Prints INVITE->200 p50/p99/max per phase (SIPp's ``-trace_rtt``, in whole
ms), the round trip of an OPTIONS sent to sipfleet itself over UDP every 5 ms
(timed here, in us: the UDP path's own latency), sipfleet's CPU, the calls ok
and failed, and the handshakes done and failed.

  bench/tls_udp_stall.py                         # 200 calls/s, 200 handshakes/s
  bench/tls_udp_stall.py --handshakes 500 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
import rpc_latency as rl  # noqa: E402  (sibling script: process helpers)
import rpc_starve as rs  # noqa: E402  (sibling script: SIPp's per-call times)
import tlscerts  # noqa: E402  (the tests' certificate maker)

HOST = rl.HOST


# -- the TLS load (a child process: python tls_udp_stall.py --load PORT RATE SECONDS CA) ----


async def _handshake(port: int, ctx: ssl.SSLContext, n: int) -> bool:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port, ssl=ctx, server_hostname=HOST), 5.0
        )
        writer.write(
            (
                f"OPTIONS sip:{HOST}:{port};transport=tls SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS {HOST}:5999;branch=z9hG4bK-l{n};rport\r\n"
                f"From: <sip:load@{HOST}>;tag={n}\r\nTo: <sip:{HOST}>\r\nCall-ID: load-{n}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        line = await asyncio.wait_for(reader.readline(), 5.0)
        writer.close()
        return line.startswith(b"SIP/2.0 200")
    except (OSError, TimeoutError, ssl.SSLError):
        return False


async def _load(port: int, rate: float, seconds: float, ca: str) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=ca)
    tasks: list[asyncio.Task[bool]] = []
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        n += 1
        tasks.append(asyncio.ensure_future(_handshake(port, ctx, n)))
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    results = await asyncio.gather(*tasks)
    took = time.monotonic() - start
    ok = sum(results)
    return {"started": n, "ok": ok, "failed": n - ok, "per_s": round(ok / took, 1)}


def load_main(port: int, rate: float, seconds: float, ca: str) -> int:
    print(json.dumps(asyncio.run(_load(port, rate, seconds, ca))))
    return 0


# -- a finer probe: OPTIONS to sipfleet itself over UDP, timed in this process -------------


class Pinger(threading.Thread):
    """Sends an OPTIONS for sipfleet every ``interval`` s over UDP and times its 200 OK:
    the UDP path's own latency, in microseconds rather than SIPp's milliseconds."""

    def __init__(self, port: int, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval = interval
        self.rtts: list[float] = []
        self.lost = 0
        self.stop = threading.Event()

    def run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.settimeout(1.0)
        me = sock.getsockname()[1]
        n = 0
        while not self.stop.is_set() and n < 1_000_000:
            n += 1
            msg = (
                f"OPTIONS sip:{HOST}:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{me};branch=z9hG4bK-p{n}\r\n"
                f"From: <sip:ping@{HOST}>;tag=p\r\nTo: <sip:{HOST}>\r\nCall-ID: ping-{n}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            t0 = time.perf_counter()
            sock.sendto(msg, (HOST, self.port))
            try:
                while True:
                    data = sock.recv(65536)
                    if f"ping-{n}".encode() in data:
                        break
                self.rtts.append((time.perf_counter() - t0) * 1000.0)
            except TimeoutError:
                self.lost += 1
            self.stop.wait(self.interval)
        sock.close()


# -- phases --------------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _phase(
    a: argparse.Namespace, work: Path, ports: dict[str, int], loaded: bool, pid: int
) -> dict[str, Any]:
    sipp = shutil.which("sipp")
    assert sipp is not None
    calls = int(a.rate * a.duration)
    budget = a.duration * 3 + 30
    started = time.time()
    cpu0, wall0 = _cpu_s(pid), time.monotonic()
    load: subprocess.Popen[bytes] | None = None
    if loaded:
        nice = ["nice", "-n", str(a.client_nice)] if a.client_nice else []
        load = subprocess.Popen(
            [*nice, sys.executable, __file__, "--load", str(ports["tls"]), str(a.handshakes),
             str(a.duration), str(work / "certs" / "test-ca.pem")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        time.sleep(0.5)  # the handshakes run before and through the whole call run
    pinger = Pinger(ports["proxy"])
    pinger.start()
    uac = rl._spawn(
        [sipp, "-sf", "uac_rr.xml", f"{HOST}:{ports['proxy']}", "-i", HOST, "-p",
         str(ports["uac"]), "-t", "u1", "-m", str(calls), "-r", str(a.rate), "-l", "5000",
         "-nostdin", "-trace_stat", "-stf", "stat.csv", "-fd", "3600", "-trace_rtt",
         "-rtt_freq", "1", "-timeout", f"{budget:.0f}", "-timeout_error"],
        work, "uac.log",
    )  # fmt: skip
    out: dict[str, Any] = {}
    try:
        uac.wait(timeout=budget + 10)
        if load is not None:
            stdout, stderr = load.communicate(timeout=budget)
            try:
                out["tls"] = json.loads(stdout)
            except ValueError:
                out["tls"] = {"error": stderr.decode(errors="replace")[-500:]}
    finally:
        pinger.stop.set()
        pinger.join(5)
        rl._stop([uac] + ([load] if load is not None else []))
    out["options_rtt"] = {**rl.summary(pinger.rtts), "lost": pinger.lost}
    out["sipfleet_cpu_pct"] = round(100 * (_cpu_s(pid) - cpu0) / (time.monotonic() - wall0), 1)
    stats = rl._read_stats(work / "stat.csv")
    (work / "stat.csv").unlink(missing_ok=True)
    if stats is not None:
        out["calls_ok"] = int(stats["SuccessfulCall(C)"])
        out["calls_failed"] = max(int(stats["FailedCall(C)"]), calls - out["calls_ok"])
    out["sip"] = rl.summary([ms for _, ms in rs._rtts(work, started)])
    return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("sipp") is None:
        return {"error": "sipp is not installed (Debian package sip-tester)"}
    if tlscerts.OPENSSL is None:
        return {"error": "openssl is not installed"}
    base = a.base_port
    ports = {"proxy": base + 60, "tls": base + 61, "uas": base + 70, "uac": base + 80}
    busy = [p for p in ports.values() if not rl._free(p)]
    if busy:
        return {"error": f"ports in use: {busy} (try --base-port)"}
    work = Path(tempfile.mkdtemp(prefix="tls-udp-stall-"))
    certs = tlscerts.make_certs(work / "certs")
    for name in ("uac_rr.xml", "uas_rr.xml"):
        shutil.copy(HERE / name, work)
    (work / "dispatcher.list").write_text(f"1 sip:{HOST}:{ports['uas']} 0 0\n")
    config = work / "sipfleet.toml"
    config.write_text(
        f'[proxy]\nlisten = ["udp:{HOST}:{ports["proxy"]}", "tls:{HOST}:{ports["tls"]}"]\n'
        f"tcp_max_connections_per_source = 4096\n"
        f'[tls]\ncertificate = "{certs.server_cert}"\nprivate_key = "{certs.server_key}"\n'
        f'[store]\ntype = "list"\npath = "{work / "dispatcher.list"}"\n'
        "[dispatcher]\nping_interval = 0\n"
        f'[control]\nrun_dir = "{work / "run"}"\n'
        "[control.http]\nenabled = false\n"
        '[log]\nlevel = "warning"\n'
    )
    sipp = shutil.which("sipp")
    assert sipp is not None
    procs: list[subprocess.Popen[bytes]] = []
    out: dict[str, Any] = {"rate": a.rate, "duration_s": a.duration, "handshakes": a.handshakes}
    try:
        procs.append(rl._spawn(
            [sipp, "-sf", "uas_rr.xml", "-i", HOST, "-p", str(ports["uas"]), "-t", "u1",
             "-nostdin", "-timeout", f"{a.duration * 8 + 120:.0f}"],
            work, "uas.log",
        ))  # fmt: skip
        sipfleet = rl._spawn([*rl._sipfleet(), "run", "-c", str(config)], work, "sipfleet.log")
        procs.append(sipfleet)
        if not rl._wait_udp_bound(ports["uas"], 5) or not rl._wait_udp_bound(ports["proxy"], 15):
            return {**out, "error": f"sipfleet or the UAS did not start: see {work}"}
        time.sleep(0.5)
        for r in range(a.rounds):
            out[f"quiet{r + 1}"] = _phase(a, work, ports, False, sipfleet.pid)
            out[f"loaded{r + 1}"] = _phase(a, work, ports, True, sipfleet.pid)
        return out
    finally:
        rl._stop(procs)
        if a.keep or "error" in out:
            out["workdir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--load":
        return load_main(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base-port", type=int, default=28000)
    ap.add_argument("--rate", type=int, default=200, help="UDP calls per second")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of calls per phase")
    ap.add_argument("--handshakes", type=float, default=200.0, help="new TLS connections per s")
    ap.add_argument("--rounds", type=int, default=2, help="quiet/loaded pairs, alternating")
    ap.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="run the TLS client under nice N (it shares this machine's CPUs with sipfleet)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    res = run(a)
    if a.json or "error" in res:
        print(json.dumps(res))
        return 1 if "error" in res else 0
    print(f"{a.rate} UDP calls/s for {a.duration:g} s; load: {a.handshakes:g} TLS handshakes/s")
    for key, ph in res.items():
        if not isinstance(ph, dict):
            continue
        s = ph["sip"]
        line = (
            f"  {key:8} calls ok/failed {ph.get('calls_ok')}/{ph.get('calls_failed')}  "
            f"INVITE->200 p50 {s.get('p50_ms')} ms p99 {s.get('p99_ms')} ms max {s.get('max_ms')} ms"
        )
        line += f"  sipfleet CPU {ph.get('sipfleet_cpu_pct')}%"
        o = ph["options_rtt"]
        line += (
            f"\n           OPTIONS over UDP p50 {o.get('p50_ms')} ms p99 {o.get('p99_ms')} ms "
            f"max {o.get('max_ms')} ms (n={o.get('count')}, lost {o.get('lost')})"
        )
        if "tls" in ph:
            line += f"  tls {ph['tls']}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
