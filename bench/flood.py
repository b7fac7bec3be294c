#!/usr/bin/env python3
"""A bounded SIP flooder: RATE requests/s for SECONDS from one source address.

    python bench/flood.py --target 127.0.0.1:5060 --bind 127.0.0.2 --rate 10000 --seconds 6

Each request is a new out-of-dialog INVITE (or --method), new Call-ID and
branch, as a flood or a spoofed-source attack sends them. It stops after
RATE * SECONDS packets or SECONDS + 2 s, whichever comes first, and prints
what it sent and how many answers came back (JSON, one line).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time


def request(method: str, target: str, src: str, port: int, n: int, tag: str) -> bytes:
    host = target.rsplit(":", 1)[0]
    lines = [
        f"{method} sip:{100 + n % 900}@{host} SIP/2.0",
        f"Via: SIP/2.0/UDP {src}:{port};branch=z9hG4bK-fl{tag}-{n}",
        f"From: <sip:flood@{src}>;tag=f{n}",
        f"To: <sip:{100 + n % 900}@{host}>",
        f"Call-ID: fl{tag}-{n}@{src}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:flood@{src}:{port}>",
        "Max-Forwards: 70",
        "User-Agent: load-test",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--target", required=True, help="HOST:PORT of sipfleet")
    ap.add_argument("--bind", default="127.0.0.2", help="source address")
    ap.add_argument("--rate", type=float, default=10000.0)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--method", default="INVITE")
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.bind, 0))
    sock.setblocking(False)
    local_port = sock.getsockname()[1]
    total = int(args.rate * args.seconds)
    tag = os.urandom(3).hex()
    dest = (host, int(port))
    start = time.monotonic()
    deadline = start + args.seconds + 2.0
    sent = answers = errors = 0
    batch = max(1, int(args.rate / 1000))  # packets per 1 ms slot
    while sent < total and time.monotonic() < deadline:
        due = int((time.monotonic() - start) * args.rate)
        burst = min(total, due + batch) - sent
        for _ in range(max(0, burst)):
            try:
                sock.sendto(
                    request(args.method, args.target, args.bind, local_port, sent, tag), dest
                )
            except (BlockingIOError, OSError):
                errors += 1
            sent += 1
        try:
            while True:
                sock.recv(65536)
                answers += 1
        except (BlockingIOError, OSError):
            pass
        ahead = sent / args.rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    wall = time.monotonic() - start
    time.sleep(0.5)
    try:
        while True:
            sock.recv(65536)
            answers += 1
    except (BlockingIOError, OSError):
        pass
    print(json.dumps({"sent": sent, "errors": errors, "answers": answers, "wall": round(wall, 3),
                      "rate": round(sent / wall, 1) if wall else 0.0, "port": local_port}))  # fmt: skip


if __name__ == "__main__":
    main()
