#!/usr/bin/env python3
"""dispatcher.reload of 1,000 / 10,000 / 100,000 destinations: sipfleet and
Kamailio side by side, on the same list files.

Each proxy serves the list file, then ``dispatcher.reload`` is called over
JSON-RPC/HTTP (``reload_delta`` 0) several times; the round trip is what an
operator waits for. Two cases:

* same   -- the file is reread unchanged (the usual reload);
* edited -- every line differs from the last load (its attrs change), so
            nothing can be reused.

Also prints the dispatcher's selection cost per call in sets of 10 to 100,000
entries (round-robin and hash), measured in-process: it should be flat.

    .venv/bin/python bench/reload_bench.py [--sizes 1000,10000,100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIPFLEET = ROOT / ".venv" / "bin" / "sipfleet"
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"

KAM_CFG = """\
#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{sip_port}
listen=tcp:127.0.0.1:{http_port}
tcp_accept_no_cl=yes
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "xhttp.so"
loadmodule "jsonrpcs.so"
loadmodule "dispatcher.so"
modparam("jsonrpcs", "transport", 1)
modparam("dispatcher", "list_file", "{list}")
modparam("dispatcher", "ds_ping_interval", 0)
modparam("dispatcher", "reload_delta", 0)
request_route {{
    sl_send_reply("404", "Not here");
    exit;
}}
event_route[xhttp:request] {{
    jsonrpc_dispatch();
    exit;
}}
"""


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_list(path: Path, n: int, variant: int) -> None:
    """n IP-literal destinations in sets of 1000; ``variant`` changes every line."""
    with path.open("w") as f:
        for i in range(n):
            a, b = divmod(i, 250)
            f.write(
                f"{1 + i // 1000} sip:10.{a // 250}.{a % 250}.{b + 1}:5060 0 0 "
                f"duid=m{i};weight={1 + (i + variant) % 100}\n"
            )


def rpc(port: int, method: str, timeout: float = 120.0) -> tuple[float, dict]:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "id": 1}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.perf_counter()
    conn.request("POST", "/RPC", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    took = time.perf_counter() - t0
    conn.close()
    return took, json.loads(data)


def wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("proxy exited before answering")
        try:
            rpc(port, "core.version", timeout=2.0)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("proxy did not answer in time")


def start(kind: str, work: Path, list_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    if kind == "sipfleet":
        cfg = work / "sipfleet.toml"
        cfg.write_text(
            f'[proxy]\nlisten = ["udp:127.0.0.1:{free_port(socket.SOCK_DGRAM)}"]\n'
            f'[store]\ntype = "list"\npath = "{list_path}"\npersist_dialogs = false\n'
            f"[dispatcher]\nreload_delta = 0\nping_interval = 0\n"
            f'[control]\nrun_dir = "{work / "run"}"\n[control.http]\nport = {port}\n'
            f'[log]\nlevel = "warning"\n'
        )
        cmd = [str(SIPFLEET), "run", "-c", str(cfg)]
    else:
        mpath = next(
            (
                p
                for p in ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules")
                if os.path.exists(p)
            ),
            "",
        )
        cfg = work / "kamailio.cfg"
        cfg.write_text(
            KAM_CFG.format(
                sip_port=free_port(socket.SOCK_DGRAM), http_port=port, mpath=mpath, list=list_path
            )
        )
        cmd = [KAMAILIO, "-DD", "-E", "-m", "1024", "-M", "32", "-f", str(cfg)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=work
    )
    wait_http(port, proc)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def measure(kind: str, n: int, repeat: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix=f"reload-{kind}-"))
    list_path = work / "dispatcher.list"
    write_list(list_path, n, 0)
    proc, port = start(kind, work, list_path)
    try:
        same = []
        for _ in range(repeat):
            took, answer = rpc(port, "dispatcher.reload")
            assert "result" in answer, answer
            same.append(took)
        edited = []
        for v in range(1, repeat + 1):
            write_list(list_path, n, v)
            took, answer = rpc(port, "dispatcher.reload")
            assert "result" in answer, answer
            edited.append(took)
        return {
            "same_ms": statistics.median(same) * 1000,
            "edited_ms": statistics.median(edited) * 1000,
        }
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def selection_cost() -> list[tuple[int, float, float]]:
    sys.path.insert(0, str(ROOT))
    from sipfleet.config import DispatcherConfig
    from sipfleet.dispatch import Dispatcher, Keys, parse_list

    out = []
    keys = [
        Keys("INVITE", f"call-{i}@x", "sip:a@b", "sip:c@d", "sip:e@f", None) for i in range(1000)
    ]
    for size in (10, 1000, 100_000):
        text = "".join(f"1 sip:10.0.{i // 250}.{i % 250 + 1}:5060\n" for i in range(size))
        d = Dispatcher(DispatcherConfig(ping_interval=0).to_settings(), parse_list(text))
        res = []
        for alg in (4, 0):
            t0 = time.perf_counter()
            for k in keys * 20:
                d.select(1, k, now=0.0, algorithm=alg, limit=6)
            res.append((time.perf_counter() - t0) / (len(keys) * 20) * 1e6)
        out.append((size, res[0], res[1]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", choices=["sipfleet", "kamailio"])
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    kinds = [a.only] if a.only else ["sipfleet", "kamailio"]
    results: dict[str, dict[int, dict[str, float]]] = {k: {} for k in kinds}
    for n in sizes:
        for kind in kinds:
            r = measure(kind, n, a.repeat)
            results[kind][n] = r
            print(
                f"{kind:9s} {n:>7,} destinations: reload same {r['same_ms']:8.1f} ms, "
                f"edited {r['edited_ms']:8.1f} ms",
                flush=True,
            )
    print()
    print(
        "| destinations | "
        + " | ".join(f"{k} same / edited (ms)" for k in kinds)
        + (" | ratio (same, edited) |" if len(kinds) == 2 else " |")
    )
    print("|---:|" + "---:|" * len(kinds) + ("---:|" if len(kinds) == 2 else ""))
    for n in sizes:
        cells = [
            f"{results[k][n]['same_ms']:.1f} / {results[k][n]['edited_ms']:.1f}" for k in kinds
        ]
        row = f"| {n:,} | " + " | ".join(cells) + " |"
        if len(kinds) == 2:
            s, k = results["sipfleet"][n], results["kamailio"][n]
            row += f" {s['same_ms'] / k['same_ms']:.2f}, {s['edited_ms'] / k['edited_ms']:.2f} |"
        print(row)
    print()
    print("selection cost per call (us): set size, round-robin, hash Call-ID")
    for size, rr, h in selection_cost():
        print(f"  {size:>7,}: {rr:.2f}  {h:.2f}")
    print()
    print("    " + " ".join(["bench/reload_bench.py", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
