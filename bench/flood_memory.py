#!/usr/bin/env python3
"""Memory of sipfleet through a burst of OPTIONS addressed to it (issue 9, item 3).

Starts ``sipfleet run`` on free loopback ports (no back end needed: OPTIONS to
the proxy itself are answered by it), reads its RSS from /proc before, sends
``--rate`` OPTIONS per second for ``--seconds`` from one UDP socket (bounded:
rate x seconds datagrams, loopback only), records the peak RSS, then waits
``--after`` seconds and reads it again. Answers are counted as they come.

    .venv/bin/python bench/flood_memory.py [--rate 20000 --seconds 10 --after 60]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def options(port: int, src_port: int, n: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{src_port};branch=z9hG4bK-fl-{n}\r\n"
        f"From: <sip:flood@127.0.0.1>;tag=f{n}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
        f"Call-ID: flood-{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--after", type=float, default=60.0)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sipfleet-flood-"))
    port = free_port()
    (work / "dispatcher.list").write_text("1 sip:127.0.0.1:9 0 0\n")
    (work / "sipfleet.toml").write_text(
        f'[proxy]\nlisten = ["udp:127.0.0.1:{port}"]\n'
        f'[store]\ntype = "list"\npath = "{work}/dispatcher.list"\n'
        "[dispatcher]\nping_interval = 0\n"
        f'[control]\nrun_dir = "{work}/run"\n'
        "[control.http]\nenabled = false\n[control.fifo]\nenabled = false\n"
        "[control.dgram]\nenabled = false\n[control.binrpc]\nenabled = false\n"
    )
    exe = Path(sys.executable).with_name("sipfleet")
    proc = subprocess.Popen(
        [str(exe), "run", "-c", str(work / "sipfleet.toml")],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "sipfleet.log", "wb"),  # noqa: SIM115
    )
    try:
        time.sleep(2.0)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        src = sock.getsockname()[1]
        before = rss_mb(proc.pid)
        total = int(a.rate * a.seconds)
        answers = 0
        peak = before
        t0 = time.monotonic()
        for n in range(total):
            due = t0 + n / a.rate
            while time.monotonic() < due:
                try:
                    sock.recv(65536)
                    answers += 1
                except BlockingIOError:
                    pass
            try:
                sock.sendto(options(port, src, n), ("127.0.0.1", port))
            except BlockingIOError:
                pass
            if n % 5000 == 0:
                peak = max(peak, rss_mb(proc.pid))
        sent_for = time.monotonic() - t0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                sock.recv(65536)
                answers += 1
            except BlockingIOError:
                time.sleep(0.01)
        peak = max(peak, rss_mb(proc.pid))
        time.sleep(a.after)
        after = rss_mb(proc.pid)
        print(
            f"sent {total} OPTIONS in {sent_for:.1f} s ({total / sent_for:.0f}/s), {answers} answered"
        )
        print(
            f"RSS before {before:.1f} MB, peak {peak:.1f} MB, {a.after:.0f} s after {after:.1f} MB"
        )
        print(f"after - before: {after - before:+.1f} MB")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
