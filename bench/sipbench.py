#!/usr/bin/env python3
"""SIP proxy benchmark with SIPp: one proxy, one fixed-rate run.

Starts two SIPp UAS back ends (127.0.0.1:5070 and :5071), the proxy under test
(any command that listens on 127.0.0.1:5060 and balances to those two), then
drives N calls at a fixed rate through it with a SIPp UAC, and prints one JSON
line: calls ok/failed, the proxy's CPU seconds (all its processes), CPU
microseconds per call, and SIPp's INVITE->200 response times. The work lives in
sipload.py; side_by_side.py compares sipfleet and Kamailio with it.

  sipbench.py --calls 20000 --rate 1000 --label kamailio -- ./run-kamailio.sh
  sipbench.py --calls 20000 --rate 1000 --label sipfleet -- ../.venv/bin/sipfleet run
"""

from __future__ import annotations

import argparse
import json
import sys

from sipload import MAX_CALLS_OPEN, busy_ports, run_load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    ap.add_argument("--uas-transport", choices=["udp", "tcp"], default=None)
    ap.add_argument("--max-calls-open", type=int, default=MAX_CALLS_OPEN)
    ap.add_argument("--label", default="proxy")
    ap.add_argument("proxy", nargs=argparse.REMAINDER, help="-- the proxy command")
    a = ap.parse_args()
    cmd = a.proxy[1:] if a.proxy and a.proxy[0] == "--" else a.proxy
    if not cmd:
        ap.error("give the proxy command after --")
    busy = busy_ports()
    if busy:
        print(json.dumps({"label": a.label, "error": f"ports in use: {', '.join(busy)}"}))
        return 2
    res = run_load(
        cmd, calls=a.calls, rate=a.rate, transport=a.transport, uas_transport=a.uas_transport,
        label=a.label, max_calls_open=a.max_calls_open,
    )  # fmt: skip
    print(json.dumps(res.as_dict()))
    return 0 if res.clean else 1


if __name__ == "__main__":
    sys.exit(main())
