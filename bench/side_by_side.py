#!/usr/bin/env python3
"""sipfleet and Kamailio side by side: SIPp UAC -> proxy -> two SIPp UAS, on loopback.

In one run, alternating between the two proxies (fresh processes every time, the
same ports: 127.0.0.1:5060 proxy, :5070/:5071 back ends, :5080 UAC):

1. a fixed-rate run (``--calls`` at ``--rate``), ``--rounds`` times each;
2. unless ``--no-step``: the rate stepped up (``--steps``), each step bounded to
   ``--step-seconds`` of calls (at most ``--step-max-calls``), each proxy stopping
   at its first step with a failed call (or one SIPp could not drive at 90% of the
   asked rate: then the limit is the load generator's, and the result says so).

Prints, for each: calls ok/failed, proxy CPU microseconds per call (utime + stime
of all its processes), the highest rate with zero failed calls, INVITE->200
p50/p99 from SIPp's per-call response times, and the ratios sipfleet/Kamailio;
then a Markdown table for the README and the exact command line. ``--json``
prints everything as one JSON document instead.

sipfleet runs as ``.venv/bin/sipfleet run`` with its defaults (127.0.0.1:5060
UDP+TCP, a fresh ./sipfleet.db holding sip:127.0.0.1:5070 and :5071, round-robin),
in a fresh work directory each run; with ``--uas-transport tcp`` it serves a list
file naming the back ends with ``;transport=tcp`` (``--list``). Kamailio runs as
``run-kamailio.sh`` (kamailio-dispatcher.cfg); ``--transport tcp`` adds its TCP
listener (``-A WITH_TCP``), ``--uas-transport tcp`` its list's ``;transport=tcp``.

    bench/side_by_side.py --calls 20000 --rate 1000
    bench/side_by_side.py --calls 20000 --rate 1000 --transport tcp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sipload import (
    ALL_PORTS,
    INTERRUPTED,
    LoadResult,
    Transport,
    busy_ports,
    percentile,
    run_load,
    sipp_clock_ms,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_STEPS = "500,1000,1500,2000,3000,4000,5000,6000,8000"
#: A step whose achieved call rate falls below this share of the asked one ends the
#: search: the machine (proxy or SIPp) could not carry that rate.
DRIVE_SHARE = 0.9


@dataclass
class Proxy:
    """A proxy under test: how to start it for a given pair of transports."""

    name: str
    title: str
    command: Callable[[Transport, Transport], list[str]]
    env: Callable[[Transport], dict[str, str] | None] = lambda _t: None
    fixed: list[LoadResult] = field(default_factory=list)
    steps: list[LoadResult] = field(default_factory=list)
    max_rate: int | None = None
    # Why stepping stopped: "failures"; "rate" (the step's rate was not reached: the proxy or
    # SIPp ran out of CPU; see the step's response times); "top" (the last step passed).
    limited_by: str = ""

    def run(
        self, args: argparse.Namespace, calls: int, rate: int, log: Callable[[str], None]
    ) -> LoadResult:
        res = self._run(args, calls, rate, log)
        if res.error and res.error.startswith(INTERRUPTED):
            log(f"    {self.name}: {res.error}; once more")
            res = self._run(args, calls, rate, log)
        return res

    def _run(
        self, args: argparse.Namespace, calls: int, rate: int, log: Callable[[str], None]
    ) -> LoadResult:
        return run_load(
            self.command(args.transport, args.uas_transport),
            calls=calls, rate=rate, transport=args.transport, uas_transport=args.uas_transport,
            label=self.name, proxy_env=self.env(args.uas_transport), keep=args.keep, log=log,
        )  # fmt: skip


def _sipfleet(args: argparse.Namespace, workdir: str) -> Proxy:
    exe = args.sipfleet or os.path.join(ROOT, ".venv", "bin", "sipfleet")

    def command(_transport: Transport, uas_transport: Transport) -> list[str]:
        if uas_transport == "udp":
            return [exe, "run"]  # the defaults, as a user runs it
        listfile = os.path.join(workdir, "dispatcher-tcp.list")
        with open(listfile, "w") as f:
            f.write(
                "1 sip:127.0.0.1:5070;transport=tcp 0 0\n1 sip:127.0.0.1:5071;transport=tcp 0 0\n"
            )
        return [exe, "run", "--list", listfile]

    title = _version([exe, "--version"]).replace(", version", "") or "sipfleet"
    return Proxy("sipfleet", title, command)


def _kamailio(_args: argparse.Namespace) -> Proxy:
    script = os.path.join(HERE, "run-kamailio.sh")

    def command(transport: Transport, _uas: Transport) -> list[str]:
        return [script, "-A", "WITH_TCP"] if transport == "tcp" else [script]

    def env(uas_transport: Transport) -> dict[str, str]:
        return {**os.environ, "KBENCH_UAS_TRANSPORT": uas_transport}

    title = (_version(["kamailio", "-v"]) or "kamailio").removeprefix("version: ").split(" (")[0]
    return Proxy("kamailio", title, command, env)


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


# --- the run ---------------------------------------------------------------------------


def run_fixed(proxies: list[Proxy], args: argparse.Namespace, log: Callable[[str], None]) -> None:
    log(f"fixed rate: {args.calls} calls at {args.rate}/s, {args.rounds} round(s)")
    for r in range(args.rounds):
        order = proxies if r % 2 == 0 else proxies[::-1]
        for p in order:
            res = p.run(args, args.calls, args.rate, log)
            p.fixed.append(res)
            log("    " + _line(res))


def run_steps(proxies: list[Proxy], args: argparse.Namespace, log: Callable[[str], None]) -> None:
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    log(f"rate steps: {steps}, {args.step_seconds:g} s each (at most {args.step_max_calls} calls)")
    active = list(proxies)
    for i, rate in enumerate(steps):
        if not active:
            break
        calls = max(1, min(int(rate * args.step_seconds), args.step_max_calls))
        for p in list(active if i % 2 == 0 else active[::-1]):
            res = p.run(args, calls, rate, log)
            p.steps.append(res)
            log("    " + _line(res))
            failed = res.failed - (res.late_1xx if args.tolerate_late_1xx else 0)
            if res.error or failed > args.step_failures:
                p.limited_by = "failures"
                active.remove(p)
            elif res.achieved_cps < DRIVE_SHARE * rate:
                p.limited_by = "rate"
                active.remove(p)
            else:
                p.max_rate = rate
    for p in active:
        p.limited_by = "top"


def _line(r: LoadResult) -> str:
    if r.error:
        return f"{r.label} @{r.rate}/s: ERROR {r.error}"
    return (
        f"{r.label} @{r.rate}/s: ok {r.ok} failed {r.failed} (late 180: {r.late_1xx}), "
        f"retrans {r.retransmissions}, "
        f"achieved {r.achieved_cps:g}/s, cpu {r.cpu_us_per_call} us/call, "
        f"INVITE->200 p50 {r.rtt_p50_ms} p99 {r.rtt_p99_ms} mean {r.rtt_mean_ms} ms"
    )


# --- the report ------------------------------------------------------------------------


def summarize(p: Proxy) -> dict[str, Any]:
    runs = [r for r in p.fixed if r.error is None]
    cpu = [r.cpu_us_per_call for r in runs if r.cpu_us_per_call is not None]
    rtt = sorted(v for r in runs for v in r.rtt_ms)
    return {
        "name": p.name,
        "title": p.title,
        "ok": sum(r.ok for r in runs),
        "failed": sum(r.failed for r in runs),
        "late_1xx": sum(r.late_1xx for r in runs),
        "errors": [r.error for r in p.fixed if r.error],
        "cpu_us_per_call": round(statistics.median(cpu), 1) if cpu else None,
        "cpu_us_per_call_runs": cpu,
        "rtt_p50_ms": percentile(rtt, 50),
        "rtt_p99_ms": percentile(rtt, 99),
        "rtt_mean_ms": round(sum(rtt) / len(rtt), 2) if rtt else None,
        "max_rate": p.max_rate,
        "max_rate_limited_by": p.limited_by or None,
        "fixed_runs": [r.as_dict() for r in p.fixed],
        "step_runs": [r.as_dict() for r in p.steps],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _fmt(v: object, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        v = f"{v:g}"
    return f"{v}{unit}"


def markdown(summary: dict[str, Any]) -> str:
    cols = summary["proxies"]
    names = [c["title"] for c in cols]
    both = len(cols) == 2
    head = "| | " + " | ".join(names) + (" | sipfleet / Kamailio |" if both else " |")
    sep = "|---|" + "---:|" * (len(cols) + (1 if both else 0))

    def row(label: str, cells: list[str], ratio: object = None, show: bool = True) -> str:
        tail = f" {_fmt(ratio)} |" if both and show else (" |" if both else "")
        return f"| {label} | " + " | ".join(cells) + " |" + tail

    def max_rate(c: dict[str, Any]) -> str:
        rate = _fmt(c["max_rate"])
        by = c["max_rate_limited_by"]
        if c["step_runs"] == []:
            return "not stepped"
        if by == "rate":
            last = c["step_runs"][-1]
            return f"{rate} ({last['rate']}: only {last['achieved_cps']:g} reached)"
        if by == "top":
            return f">= {rate} (top step)"
        return rate

    run = summary["run"]
    lines = [
        f"{run['calls']} calls at {run['rate']} calls/s, UAC->proxy {run['transport']}, "
        f"proxy->UAS {run['uas_transport']}, {run['rounds']} round(s); "
        f"loopback, {run['cpus']} CPUs, {run['machine']}, sipfleet at {run['sipfleet_commit']}",
        "",
        head,
        sep,
        row(
            "calls ok / failed (of which: 180 after 200)",
            [f"{c['ok']} / {c['failed']} ({c['late_1xx']})" for c in cols],
            show=False,
        ),
    ]
    cpu = [c["cpu_us_per_call"] for c in cols]
    lines.append(
        row("proxy CPU per call (us)", [_fmt(v) for v in cpu], _ratio(*cpu) if both else None)
    )
    rates = [c["max_rate"] for c in cols]
    rate_ratio: object = _ratio(*rates) if both else None
    if both and rate_ratio is not None:
        # A proxy that passed the top step has only a lower bound.
        low = [c["max_rate_limited_by"] == "top" for c in cols]
        rate_ratio = {(False, False): rate_ratio, (True, False): f">= {rate_ratio}",
                      (False, True): f"<= {rate_ratio}"}.get((low[0], low[1]), "n/a")  # fmt: skip
    lines.append(
        row("highest rate with 0 failed (calls/s)", [max_rate(c) for c in cols], rate_ratio)
    )
    lines.append(
        row(
            "INVITE->200 p50 / p99 / mean (ms)",
            [
                f"{_fmt(c['rtt_p50_ms'])} / {_fmt(c['rtt_p99_ms'])} / {_fmt(c['rtt_mean_ms'])}"
                for c in cols
            ],
            _ratio(cols[0]["rtt_mean_ms"], cols[1]["rtt_mean_ms"]) if both else None,
        )
    )
    lines += [
        "",
        f"Response times are SIPp's, on a {run['sipp_clock_ms']:g} ms clock "
        "(CLOCK_MONOTONIC_COARSE): each is a multiple of that tick, so p50 and p99 are "
        "coarse; the mean of many calls is not (the tick's phase is random), and the "
        "ratio is of means.",
        "",
        f"    {run['command']}",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000, help="calls in the fixed-rate run")
    ap.add_argument("--rate", type=int, default=1000, help="calls/s in the fixed-rate run")
    ap.add_argument("--transport", choices=["udp", "tcp"], default="udp", help="UAC <-> proxy")
    ap.add_argument(
        "--uas-transport", choices=["udp", "tcp"], default=None,
        help="proxy <-> UAS (default: as --transport)",
    )  # fmt: skip
    ap.add_argument("--only", choices=["sipfleet", "kamailio"], default=None)
    ap.add_argument("--rounds", type=int, default=1, help="fixed-rate runs per proxy, alternating")
    ap.add_argument("--no-step", action="store_true", help="skip the highest-rate search")
    ap.add_argument("--steps", default=DEFAULT_STEPS, help="calls/s, comma-separated")
    ap.add_argument("--step-seconds", type=float, default=5.0)
    ap.add_argument("--step-max-calls", type=int, default=20000)
    ap.add_argument(
        "--step-failures", type=int, default=0,
        help="failed calls a step may have and still count (default 0)",
    )  # fmt: skip
    ap.add_argument(
        "--tolerate-late-1xx", action="store_true",
        help="in the rate search, do not count calls SIPp failed because a 180 came after\n"
        "the 200 (Kamailio's workers reorder them; real UAs ignore a late 180)",
    )  # fmt: skip
    ap.add_argument("--sipfleet", default=None, help="sipfleet executable (default: .venv's)")
    ap.add_argument("--keep", action="store_true", help="keep every run's work directory")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--save", metavar="FILE", help="also write the JSON document to FILE")
    args = ap.parse_args()
    args.uas_transport = args.uas_transport or args.transport
    command = "bench/side_by_side.py " + shlex.join(sys.argv[1:])

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    if shutil.which("sipp") is None:
        log("side_by_side: sipp is not installed (Debian package sip-tester)")
        return 2
    busy = busy_ports(ALL_PORTS)
    if busy:
        log(
            f"side_by_side: loopback ports in use: {', '.join(busy)}.\n"
            f"The benchmark needs 127.0.0.1 ports {', '.join(map(str, ALL_PORTS))} (UDP and TCP) "
            "free: stop any running sipfleet, Kamailio or SIPp first (e.g. `ss -lunpt`)."
        )
        return 2
    workdir = tempfile.mkdtemp(prefix="side-by-side-")
    proxies: list[Proxy] = []
    if args.only in (None, "sipfleet"):
        proxies.append(_sipfleet(args, workdir))
    if args.only in (None, "kamailio"):
        if shutil.which("kamailio") is None and not os.path.exists("/usr/sbin/kamailio"):
            log("side_by_side: kamailio is not installed (Debian package kamailio)")
            return 2
        proxies.append(_kamailio(args))

    started = time.time()
    run_fixed(proxies, args, log)
    if not args.no_step:
        run_steps(proxies, args, log)
    shutil.rmtree(workdir, ignore_errors=True)

    summary: dict[str, Any] = {
        "run": {
            "command": command,
            "calls": args.calls,
            "rate": args.rate,
            "transport": args.transport,
            "uas_transport": args.uas_transport,
            "rounds": args.rounds,
            "steps": None if args.no_step else args.steps,
            "step_seconds": args.step_seconds,
            "cpus": os.cpu_count(),
            "machine": _cpu_model() or platform.machine(),
            "sipfleet_commit": _git_commit(),
            "sipp_clock_ms": sipp_clock_ms(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": round(time.time() - started, 1),
        },
        "proxies": [summarize(p) for p in proxies],
    }
    if len(proxies) == 2:
        s, k = summary["proxies"]
        summary["ratio_sipfleet_over_kamailio"] = {
            "cpu_us_per_call": _ratio(s["cpu_us_per_call"], k["cpu_us_per_call"]),
            "max_rate": _ratio(s["max_rate"], k["max_rate"]),
        }
    if args.save:
        with open(args.save, "w") as f:
            json.dump(summary, f, indent=2)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        log("")
        log(markdown(summary))
    clean = all(s["failed"] == 0 and not s["errors"] for s in summary["proxies"])
    return 0 if clean else 1


def _git_commit() -> str:
    """The checkout the numbers belong to (``-dirty``: with uncommitted changes)."""
    try:
        out = subprocess.run(
            ["git", "-C", ROOT, "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


if __name__ == "__main__":
    sys.exit(main())
