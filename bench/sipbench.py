#!/usr/bin/env python3
"""Side-by-side SIP proxy benchmark with SIPp.

Starts two SIPp UAS back ends (127.0.0.1:5070 and :5071), the proxy under test
(any command that listens on 127.0.0.1:5060/udp and balances to those two),
then drives N calls at a fixed rate through it with a SIPp UAC, and reports:
calls ok/failed, the proxy's CPU seconds (all its processes), CPU microseconds
per call, and SIPp's INVITE->200 response time.

  sipbench.py --calls 20000 --rate 1000 -- kamailio -DD -E -f kamailio-dispatcher.cfg
"""
import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def session_cpu(sid):
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        if int(fields[3]) == sid:  # session id is field 6 overall
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def wait_udp_port(port, timeout=10.0):
    end = time.time() + timeout
    needle = f":{port:04X}"
    while time.time() < end:
        with open("/proc/net/udp") as f:
            if any(needle in line.split()[1] for line in f.readlines()[1:]):
                return True
        time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--max-calls-open", type=int, default=5000)
    ap.add_argument("--label", default="proxy")
    ap.add_argument("proxy", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.proxy[1:] if a.proxy and a.proxy[0] == "--" else a.proxy
    work = tempfile.mkdtemp(prefix="sipbench-")
    procs = []
    try:
        for port in (5070, 5071):
            procs.append(subprocess.Popen(
                ["sipp", "-sf", f"{HERE}/uas_rr.xml", "-i", "127.0.0.1", "-p", str(port),
                 "-nostdin", "-max_socket", "10000"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work,
                start_new_session=True))
        proxy = subprocess.Popen(cmd, stdout=open(f"{work}/proxy.log", "w"),
                                 stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proxy)
        if not wait_udp_port(5060):
            print(json.dumps({"label": a.label, "error": "proxy never bound 5060/udp"}))
            return 2
        time.sleep(0.5)
        cpu0, t0 = session_cpu(proxy.pid), time.time()
        uac = subprocess.run(
            ["sipp", "-sf", f"{HERE}/uac_rr.xml", "127.0.0.1:5060", "-i", "127.0.0.1",
             "-p", "5080", "-m", str(a.calls), "-r", str(a.rate), "-l", str(a.max_calls_open),
             "-nostdin", "-trace_stat", "-stf", f"{work}/stat.csv", "-fd", "3600",
             "-timeout", str(max(30, a.calls // max(a.rate, 1) * 3)), "-timeout_error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
        wall = time.time() - t0
        cpu = session_cpu(proxy.pid) - cpu0
        with open(f"{work}/stat.csv") as f:
            rows = list(csv.reader(f, delimiter=";"))
        head, last = rows[0], rows[-1]
        def col(name):
            return last[head.index(name)]
        ok, failed = int(col("SuccessfulCall(C)")), int(col("FailedCall(C)"))
        out = {
            "label": a.label, "calls": a.calls, "rate": a.rate, "ok": ok, "failed": failed,
            "uac_rc": uac.returncode, "wall_s": round(wall, 2), "proxy_cpu_s": round(cpu, 3),
            "cpu_us_per_call": round(cpu / max(ok, 1) * 1e6, 1),
            "response_time_avg": col("ResponseTime1(C)"),
        }
        print(json.dumps(out))
        return 0 if failed == 0 and ok == a.calls else 1
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
