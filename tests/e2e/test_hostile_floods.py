"""A running ``sipfleet run`` under the attacks of issue 9 items 4 and 5:
a browser page's ``text/plain`` POST to the control plane, a flood of
requests that are only an over-long start line, and a flood of TCP
connections past the limit. Each is refused or dropped, counted, and logged
at a bounded rate with a suppressed-count summary: no traceback, no line per
packet."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import fleet
import pytest
import sipp as harness

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

DESTS = [fleet.Dest("sip:127.0.0.1:5070"), fleet.Dest("sip:127.0.0.1:5071")]
LONG_START = b"INVITE sip:" + b"a" * 9000 + b"@127.0.0.1 SIP/2.0\r\n\r\n"


def _log(p: fleet.Fleet) -> str:
    return p.stderr_path.read_text(errors="replace")


def _post(p: fleet.Fleet, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(p.url, body, headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        with e:
            return int(e.code)


def test_a_cross_site_text_plain_post_changes_nothing(sipp_env):
    """What a page at any origin can send without a CORS preflight: a "simple"
    POST. Before the fix it disabled every destination."""
    p = fleet.proxy(sipp_env, DESTS)
    assert set(p.flags().values()) == {"AX"}
    body = json.dumps(
        {"jsonrpc": "2.0", "method": "dispatcher.set_state", "params": ["d", 1, "all"], "id": 1}
    ).encode()
    port = p.http_port
    attempts = [
        {"Content-Type": "text/plain", "Origin": "http://attacker.example"},
        {"Content-Type": "text/plain"},  # a page with no Origin (or curl without -H)
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/json", "Origin": "http://attacker.example"},
        {"Content-Type": "application/json", "Host": f"attacker.example:{port}"},  # rebinding
        {"Content-Type": "text/plain;charset=UTF-8", "Origin": "null"},
    ]
    assert [_post(p, body, h) for h in attempts] == [403, 415, 415, 403, 421, 403]
    assert set(p.flags().values()) == {"AX"}
    # The operator's own call, as curl -H 'Content-Type: application/json' sends it, works.
    assert _post(p, body, {"Content-Type": "application/json"}) == 200
    assert set(p.flags().values()) == {"DX"}
    assert "Traceback" not in _log(p)


def test_20000_long_start_lines_are_counted_not_logged_each(sipp_env):
    p = fleet.proxy(sipp_env, DESTS)
    sent, t0 = 0, time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((fleet.HOST, 0))
        # In batches the socket buffer holds, each counted before the next: the
        # count must match exactly, so no datagram may be lost on the way.
        for _ in range(50):
            for _ in range(400):
                s.sendto(LONG_START, (fleet.HOST, p.port))
            sent += 400
            fleet.wait_for(
                f"{sent} bad messages counted",
                lambda n=sent: p.statistic("bad_msg_hdr") >= n,
                10,
                0.005,
            )
            if sent >= 20_000:
                break
    elapsed = time.monotonic() - t0
    assert p.statistic("bad_msg_hdr") == sent == 20_000
    assert p.statistic("drop_requests") == 20_000
    assert p.statistic("internal_errors") == 0
    log = _log(p)
    assert "Traceback" not in log and "ValueError" not in log
    dropped = log.count("dropped bad message")
    # ~10 lines a second (and their summaries), not one a packet.
    assert 1 <= dropped <= 20 + 20 * elapsed, (dropped, elapsed)
    assert len(log.encode()) < 100_000 + 2_000 * elapsed


def test_refused_tcp_connections_are_logged_rate_limited(sipp_env):
    p = fleet.proxy(sipp_env, DESTS, tcp_max_connections=1)
    held = socket.create_connection((fleet.HOST, p.port), timeout=5)
    try:
        held.sendall(b"\r\n\r\n")  # a keep-alive ping: answered once the connection is ours
        assert held.recv(2) == b"\r\n"
        t0 = time.monotonic()
        refused = 0
        for _ in range(2000):
            with socket.create_connection((fleet.HOST, p.port), timeout=5) as c:
                try:
                    if c.recv(1) == b"":
                        refused += 1
                except ConnectionResetError:  # aborted by the proxy
                    refused += 1
        elapsed = time.monotonic() - t0
        assert refused == 2000

        def accounted() -> tuple[int, int] | None:
            lines = [ln for ln in _log(p).splitlines() if "tcp connection limit reached" in ln]
            written = sum("suppressed" not in ln for ln in lines)
            suppressed = sum(
                int(ln.split("suppressed ")[1].split()[0]) for ln in lines if "suppressed" in ln
            )
            return (written, suppressed) if written + suppressed == 2000 else None

        # The last summary comes with the next second's flush.
        written, suppressed = fleet.wait_for("every refusal written or counted", accounted, 15)
        assert 10 <= written <= 20 + 10 * elapsed, (written, elapsed)
        assert suppressed > 0
        assert "Traceback" not in _log(p)
    finally:
        held.close()
