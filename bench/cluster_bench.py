#!/usr/bin/env python3
"""What ``[cluster]`` costs, in one run: CPU per call of a node in a two-node
cluster (one PostgreSQL, one Redis) against a single node on the same
database, and the latency from an RPC on node A to its effect on node B.

    .venv/bin/python bench/cluster_bench.py [--calls 2000] [--rate 200] [--tries 200]

Starts private PostgreSQL and Redis servers and SIPp on free loopback ports
(tests/e2e's helpers). Per mode: ``--calls`` short calls at ``--rate`` through
one node (algorithm 10, so every call reads the cluster-wide load), the CPU
seconds of that node (/proc utime+stime) per call, and in cluster mode the
CPU of the idle second node too (what hearing the other's reports costs).
Then ``--tries`` drains/undrains on A, each timed until B lists it (p50/p99).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

import dbservers
import fleet
import redisserver

SECRET = "bench-route-secret-0123456789ab"
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def start_node(env: Any, db: str, redis: str | None, name: str) -> fleet.Fleet:
    f = fleet.Fleet(
        env._dir(name),
        [],
        {"first_response_timeout": 1.0, "route_secret": SECRET},
        {"algorithm": 10, "reload_delta": 1.0},
    )
    f.sections["store"] = {"url": db, "timeout": 1.0, "persist_dialogs": False}
    f.sections["log"] = {"level": "warning"}
    if redis:
        f.sections["cluster"] = {
            "redis": redis,
            "node": name,
            "key_prefix": f"bench-{os.getpid()}:",
        }
    env.procs.append(f)
    f.start()
    return f


def run_calls(
    env: Any, target: fleet.Fleet, calls: int, rate: int, others: list[fleet.Fleet]
) -> dict[str, Any]:
    assert target.popen is not None
    pids = [target.popen.pid] + [o.popen.pid for o in others if o.popen is not None]
    before = [cpu_seconds(p) for p in pids]
    r = fleet.uac(env, "uac_logged.xml", target, calls=calls, rate=rate).wait()
    after = [cpu_seconds(p) for p in pids]
    used = [b - a for a, b in zip(before, after, strict=True)]
    out = {
        "calls_ok": r.successful,
        "calls_failed": r.failed,
        "cpu_s": round(used[0], 3),
        "cpu_us_per_call": round(used[0] / max(calls, 1) * 1e6, 1),
    }
    if others:
        out["other_nodes_cpu_s"] = round(sum(used[1:]), 3)
        out["cluster_cpu_us_per_call"] = round(sum(used) / max(calls, 1) * 1e6, 1)
    return out


def rpc_to_effect(a: fleet.Fleet, b: fleet.Fleet, uri: str, tries: int) -> dict[str, float]:
    lat = []
    for i in range(tries):
        want = "draining" if i % 2 == 0 else "enabled"
        t0 = time.perf_counter()
        a.rpc("dispatcher.drain" if i % 2 == 0 else "dispatcher.undrain", 1, uri)
        fleet.wait_for(
            "the change on B",
            lambda w=want: b.rpc("dispatcher.drain_status", 1, uri)[0]["STATE"] == w,
            5,
            0.001,
        )
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return {
        "p50_ms": round(statistics.median(lat) * 1000, 2),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2),
        "max_ms": round(lat[-1] * 1000, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--tries", type=int, default=200)
    a = ap.parse_args()
    if fleet.harness.SIPP is None:
        print(json.dumps({"error": "sipp is not installed"}))
        return 2
    base = Path(tempfile.mkdtemp(prefix="sipfleet-cluster-bench-"))
    os.chmod(base, 0o755)  # PostgreSQL runs as another user
    (base / "pg").mkdir()
    (base / "redis").mkdir()
    pg = dbservers.PgServer(base / "pg")
    redis = redisserver.RedisServer(base / "redis")
    env = fleet.harness.SippEnv(base / "procs")
    try:
        pg.start()
        redis.start()
        db = pg.kamailio_db()
        uas = [fleet.uas(env) for _ in range(2)]
        for u in uas:
            pg.sql(db, f"INSERT INTO dispatcher (setid, destination, flags, priority, attrs, "
                       f"description) VALUES (1, '{u.uri}', 0, 0, 'maxload=100000', 'bench')")  # fmt: skip
        single = start_node(env, db, None, "single")
        res: dict[str, Any] = {"calls": a.calls, "rate": a.rate}
        res["single"] = run_calls(env, single, a.calls, a.rate, [])
        single.stop()
        na = start_node(env, db, redis.url, "A")
        nb = start_node(env, db, redis.url, "B")
        fleet.wait_for("the cluster", lambda: na.rpc("sipfleet.status")["cluster"]["nodes"], 10)
        res["cluster"] = run_calls(env, na, a.calls, a.rate, [nb])
        res["rpc_on_a_to_effect_on_b"] = rpc_to_effect(na, nb, uas[0].uri, a.tries)
        print(json.dumps(res))
        return 0 if res["single"]["calls_failed"] == res["cluster"]["calls_failed"] == 0 else 1
    finally:
        env.close()
        redis.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
