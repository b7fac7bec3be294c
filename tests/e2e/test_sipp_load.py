"""Issue 2's load acceptance, opt-in (about 25 s each): 20,000 SIPp calls at 1,000
calls/s through ``sipfleet run`` to two SIPp UAS, zero failed, over UDP and over TCP.

    SIPFLEET_E2E_LOAD=1 .venv/bin/pytest tests/e2e/test_sipp_load.py

Beyond zero failed calls, the proxy must keep up all along: no SIPp retransmission
and no INVITE->200 of 200 ms or more (an event-loop stall, such as a full garbage
collection over every live transaction, shows up here first).
"""

from __future__ import annotations

import os

import pytest
import sipp as harness

sipp_env = harness.sipp_env
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.environ.get("SIPFLEET_E2E_LOAD") != "1", reason="load test: set SIPFLEET_E2E_LOAD=1"
    ),
]
CALLS = 20_000
RATE = 1_000


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_20000_calls_at_1000_per_second(sipp_env, transport):
    a = sipp_env.uas("uas_rr.xml", transport)
    b = sipp_env.uas("uas_rr.xml", transport)
    proxy = sipp_env.proxy([a, b], first_response_timeout=2.0)

    result = sipp_env.uac("uac_rr.xml", proxy, calls=CALLS, rate=RATE, transport=transport)

    assert (result.successful, result.failed) == (CALLS, 0), result.summary()
    assert result.stats.retransmissions == 0, result.summary()
    assert result.stats.slower_than(200) == 0, result.stats.row
    sa, sb = a.stop(), b.stop()
    assert (sa.failed, sb.failed) == (0, 0), (sa.summary(), sb.summary())
    assert sa.successful + sb.successful == CALLS
