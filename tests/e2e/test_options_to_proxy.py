"""OPTIONS sent to sipfleet itself (a carrier's keep-alive): ``[proxy] answer_options``
(on by default) says sipfleet answers them, whatever its back ends do.

Found while writing the acceptance tests of issues 3 and 5: only a Max-Forwards 0
OPTIONS was answered; any other was dispatched to a back end like a new call
(sipfleet/proxy/core.py ``_route_request``: the first branch took every request
without a Route of ours and without a To tag, so the final ``else`` holding the
answer_options check, and the graceful stop's 503, was never reached). Fixed in
84f6750; this keeps it fixed.
"""

from __future__ import annotations

import socket
import time

import fleet
import pytest
import sipp as harness

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(30)]


def _options(port: int, max_forwards: int, timeout: float = 3.0) -> tuple[bytes, float]:
    """Send ``OPTIONS sip:127.0.0.1:<port>`` over UDP; its final response's status line
    and how long it took."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((fleet.HOST, 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bKka{max_forwards};rport\r\n"
            "From: <sip:carrier@127.0.0.1>;tag=ka\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: keepalive-{max_forwards}\r\nCSeq: 1 OPTIONS\r\n"
            f"Max-Forwards: {max_forwards}\r\nContent-Length: 0\r\n\r\n"
        )
        t0 = time.monotonic()
        s.sendto(msg.encode(), (fleet.HOST, port))
        while True:
            line = s.recv(65536).split(b"\r\n", 1)[0]
            if not line.startswith(b"SIP/2.0 1"):
                return line, time.monotonic() - t0


@pytest.mark.parametrize("max_forwards", [0, 70])
def test_options_to_the_proxy_is_answered_by_the_proxy(sipp_env, max_forwards):
    """The only back end never answers: an OPTIONS sipfleet forwarded would get 408
    after the 1 s first-response timeout; one it answers gets 200 at once. (Before
    84f6750, Max-Forwards 70 got that 408.)"""
    silent = fleet.uas(sipp_env, "uas_silent.xml")
    proxy = fleet.proxy(sipp_env, [fleet.Dest(silent)], first_response_timeout=1.0)

    status, took = _options(proxy.port, max_forwards)

    # At once: well inside the 1 s a forwarded one would wait (slack for a loaded machine).
    assert status == b"SIP/2.0 200 OK" and took < 0.9, (status, took)
