#!/usr/bin/env python3
"""Unanswered INVITEs and MESSAGEs through sipfleet to a back end that drops
them: open transactions stay under [limits] max_transactions and memory
comes back after Timer B/F (issue 11).

    .venv/bin/python bench/unanswered.py                       # 50,000 + 50,000 at 5,000/s
    .venv/bin/python bench/unanswered.py --count 5000 --t1 0.1 # a quick look

It starts ``sipfleet run`` on free loopback ports (the sender on 127.0.0.2
is a [[trunk]], so it is neither banned nor quieted), a back end that reads
and drops everything, sends COUNT INVITEs and COUNT MESSAGEs at RATE/s,
samples the open transactions (tmx:inuse_transactions,
sipfleet:client_transactions) and the process's RSS, waits until every
transaction is gone, and prints one JSON line. Bounded: the run stops after
COUNT*2/RATE + 64*T1 + 120 s whatever happens.
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

SENDER = "127.0.0.2"


def free_port() -> int:
    """A loopback port free for UDP and TCP (a few tries: ephemeral ports race)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free port")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def stats(http: int) -> dict[str, int]:
    body = json.dumps(
        {"jsonrpc": "2.0", "method": "stats.get_statistics", "params": ["all"], "id": 1}
    )
    req = urllib.request.Request(f"http://127.0.0.1:{http}/RPC", body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        lines = json.loads(resp.read())["result"]
    out = {}
    for line in lines:
        key, _, value = line.partition(" = ")
        out[key] = int(value)
    return out


def request(method: str, n: int, port: int, sip_port: int) -> bytes:
    return (
        f"{method} sip:{n % 1000}@127.0.0.1:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {SENDER}:{port};branch=z9hG4bK-un{method[0]}{n}\r\n"
        f"From: <sip:u@{SENDER}>;tag=u{n}\r\nTo: <sip:{n % 1000}@127.0.0.1>\r\n"
        f"Call-ID: un{method[0]}{n}@{SENDER}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def run_round(
    args: argparse.Namespace,
    sender: socket.socket,
    backend: socket.socket,
    proc: subprocess.Popen[bytes],
    sip: int,
    http: int,
    budget: float,
    n: int,
) -> dict[str, Any]:
    """One wave of COUNT INVITEs and COUNT MESSAGEs, until every transaction is gone."""
    sport = sender.getsockname()[1]
    tag = n * args.count
    codes: collections.Counter[int] = collections.Counter()

    def drain() -> None:
        for s in (sender, backend):
            try:
                while True:
                    data = s.recv(65536)
                    if s is sender:
                        codes[int(data.split(b" ", 2)[1])] += 1
            except (BlockingIOError, OSError):
                pass

    peak_rss = peak_server = peak_client = 0
    start = time.monotonic()
    total = 2 * args.count
    sent = 0
    next_sample = start
    while sent < total and time.monotonic() < budget:
        due = min(total, int((time.monotonic() - start) * args.rate) + 50)
        while sent < due:
            method = "INVITE" if sent % 2 == 0 else "MESSAGE"
            try:
                sender.sendto(request(method, tag + sent // 2, sport, sip), ("127.0.0.1", sip))
            except OSError:
                pass
            sent += 1
        drain()
        if time.monotonic() >= next_sample:
            next_sample += 0.5
            st = stats(http)
            peak_server = max(peak_server, st["tmx:inuse_transactions"])
            peak_client = max(peak_client, st["sipfleet:client_transactions"])
            peak_rss = max(peak_rss, rss_kib(proc.pid))
        time.sleep(0.005)
    sent_wall = time.monotonic() - start
    while time.monotonic() < budget:
        drain()
        st = stats(http)
        peak_server = max(peak_server, st["tmx:inuse_transactions"])
        peak_client = max(peak_client, st["sipfleet:client_transactions"])
        peak_rss = max(peak_rss, rss_kib(proc.pid))
        if st["tmx:inuse_transactions"] == 0 and st["sipfleet:client_transactions"] == 0:
            break
        time.sleep(0.5)
    drained_at = time.monotonic() - start
    time.sleep(2.0)  # a collector pass (every second) after the last transaction
    drain()
    st = stats(http)
    after = rss_kib(proc.pid)
    return {
        "round": n + 1,
        "sent": sent,
        "send_seconds": round(sent_wall, 1),
        "bound": args.max_transactions,
        "peak_server_transactions": peak_server,
        "peak_client_transactions": peak_client,
        "refused_at_bound_total": st.get("sipfleet:txn_limit", 0) + st.get("sipfleet:shed", 0),
        "all_gone_after_s": round(drained_at, 1),
        "answers": dict(sorted(codes.items())),
        "rss_kib": {"before": 0, "peak": peak_rss, "after": after},
        "open_after": [st["tmx:inuse_transactions"], st["sipfleet:client_transactions"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=50_000, help="INVITEs, and as many MESSAGEs")
    ap.add_argument("--rate", type=float, default=5000.0, help="requests per second in all")
    ap.add_argument("--t1", type=float, default=0.5, help="RFC 3261 T1 (Timer B/F = 64*T1)")
    ap.add_argument("--max-transactions", type=int, default=60_000, help="[limits] bound")
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat: RSS after each shows a plateau, not a leak"
    )
    args = ap.parse_args()
    sip, http = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="sipfleet-unanswered-"))
    backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    backend.bind(("127.0.0.1", 0))
    backend.setblocking(False)
    (work / "dispatcher.list").write_text(f"1 sip:127.0.0.1:{backend.getsockname()[1]} 0 0\n")
    (work / "sipfleet.toml").write_text(
        f'[proxy]\nlisten = ["udp:127.0.0.1:{sip}"]\nt1 = {args.t1}\n'
        f'[store]\ntype = "list"\npath = "{work / "dispatcher.list"}"\npersist_dialogs = false\n'
        f"[dispatcher]\nping_interval = 0\n"
        f'[control]\nrun_dir = "{work / "run"}"\n[control.http]\nenabled = true\nport = {http}\n'
        f"[limits]\nmax_transactions = {args.max_transactions}\n"
        f"[overload]\nmax_transactions = {args.max_transactions}\n"
        f'[[trunk]]\nname = "sender"\nsource = ["{SENDER}/32"]\n'
    )
    exe = Path(sys.executable).with_name("sipfleet")
    proc = subprocess.Popen(
        [str(exe), "run", "-c", str(work / "sipfleet.toml")],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "stderr.log", "wb"),  # noqa: SIM115
    )
    budget = time.monotonic() + args.rounds * (2 * args.count / args.rate + 64 * args.t1 + 120)
    try:
        for _ in range(200):
            try:
                stats(http)
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(1.0)
        before = rss_kib(proc.pid)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind((SENDER, 0))
        sender.setblocking(False)
        for n in range(args.rounds):
            out = run_round(args, sender, backend, proc, sip, http, budget, n)
            out["rss_kib"]["before"] = before
            print(json.dumps(out), flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
