#!/usr/bin/env python3
"""MCP tool-call round trips, over streamable HTTP (/mcp) and stdio (``sipfleet mcp``).

Starts ``sipfleet demo`` (sipfleet with three built-in back ends and its caller
placing ``--rate`` calls/s, so the fleet is busy) on free ports, then, with the
SDK's client, makes ``--calls`` sequential calls of ``list_destinations``,
``explain_route`` and a dry-run ``drain`` over each transport and prints the
p50/p99 round trip in ms. Everything is bounded in time and stopped at the end.

  bench/mcp_latency.py                  # 200 calls of each, demo at 20 calls/s
  bench/mcp_latency.py --calls 500 --rate 50 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CALLS = {
    "list_destinations": {},
    "explain_route": {"ruri": "sip:bench@example.com"},
    "drain": {"target": "demo-2", "dry_run": True},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _sipfleet() -> list[str]:
    exe = Path(sys.executable).with_name("sipfleet")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sipfleet.cli.main"]


def _ready(url: str, deadline: float) -> None:
    body = json.dumps({"jsonrpc": "2.0", "method": "core.version", "id": 1}).encode()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, body), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"sipfleet demo did not answer at {url}")


async def _measure(target: Any, calls: int) -> dict[str, dict[str, float]]:
    from mcp import Client

    out: dict[str, dict[str, float]] = {}
    async with Client(target, read_timeout_seconds=30) as client:
        for name, args in CALLS.items():
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                result = await client.call_tool(name, args)
                times.append((time.perf_counter() - t0) * 1000)
                if result.is_error:
                    raise SystemExit(f"{name} failed: {result.content}")
            times.sort()
            out[name] = {
                "p50_ms": round(statistics.median(times), 2),
                "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20.0, help="demo calls/s meanwhile")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from mcp.client.stdio import StdioServerParameters

    http_port = _free_port()
    rpc = f"http://127.0.0.1:{http_port}/RPC"
    with tempfile.TemporaryDirectory() as tmp:
        demo = subprocess.Popen(
            [*_sipfleet(), "demo", "--duration", "3600", "--rate", str(args.rate), "--hold", "1-3",
             "--plain", "--http-port", str(http_port), "--run-dir", str(Path(tmp) / "run")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            _ready(rpc, time.monotonic() + 30)
            time.sleep(2.0)  # calls flowing
            cmd = _sipfleet()
            results = {
                "http": asyncio.run(_measure(f"http://127.0.0.1:{http_port}/mcp", args.calls)),
                "stdio": asyncio.run(
                    _measure(
                        StdioServerParameters(
                            command=cmd[0],
                            args=[*cmd[1:], "mcp", "--url", rpc, "--log-level", "warning"],
                            env=dict(os.environ),
                        ),
                        args.calls,
                    )
                ),
            }
        finally:
            demo.terminate()
            try:
                demo.wait(timeout=20)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
    if args.json:
        print(json.dumps({"calls": args.calls, "rate": args.rate, **results}))
        return
    print(
        f"MCP tool round trips, {args.calls} sequential calls each, demo at {args.rate:g} calls/s"
    )
    for transport, by_tool in results.items():
        for tool, r in by_tool.items():
            print(
                f"  {transport:5s} {tool:18s} p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms"
            )


if __name__ == "__main__":
    main()
