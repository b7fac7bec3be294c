"""Real calls through ``sipfleet run`` between SIPp peers: the call flows of issue 2's
acceptance (basic, CANCEL, 486, no answer, callee BYE), re-INVITE, and failover,
each over UDP and TCP."""

from __future__ import annotations

import pytest
import sipp as harness

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]
TRANSPORTS = pytest.mark.parametrize("transport", ["udp", "tcp"])


def _balanced(counts: list[int], total: int) -> bool:
    """Round-robin over two: each got about half (strictly alternating today)."""
    return sum(counts) == total and all(abs(c - total / 2) <= total * 0.1 for c in counts)


@TRANSPORTS
def test_calls_alternate_between_two_uas(sipp_env, transport):
    a = sipp_env.uas("uas_rr.xml", transport)
    b = sipp_env.uas("uas_rr.xml", transport)
    proxy = sipp_env.proxy([a, b])

    result = sipp_env.uac("uac_rr.xml", proxy, calls=400, rate=200, transport=transport)

    assert (result.successful, result.failed) == (400, 0), result.summary()
    sa, sb = a.stop(), b.stop()
    assert (sa.failed, sb.failed) == (0, 0), (sa.summary(), sb.summary())
    assert _balanced([sa.successful, sb.successful], 400), (sa.summary(), sb.summary())


@pytest.mark.parametrize(("uac_transport", "uas_transport"), [("tcp", "udp"), ("udp", "tcp")])
def test_calls_across_transports(sipp_env, uac_transport, uas_transport):
    """The UAC on one transport, the UAS on the other: the proxy double-record-routes
    (RFC 5658) so ACK and BYE cross back correctly."""
    a = sipp_env.uas("uas_rr.xml", uas_transport)
    b = sipp_env.uas("uas_rr.xml", uas_transport)
    proxy = sipp_env.proxy([a, b])

    result = sipp_env.uac("uac_rr.xml", proxy, calls=200, rate=200, transport=uac_transport)

    assert (result.successful, result.failed) == (200, 0), result.summary()
    sa, sb = a.stop(), b.stop()
    assert (sa.failed, sb.failed) == (0, 0), (sa.summary(), sb.summary())
    assert sa.successful + sb.successful == 200


@TRANSPORTS
def test_cancel_while_ringing(sipp_env, transport):
    """UAC: INVITE, 180, CANCEL, 200/CANCEL, 487/INVITE, ACK. UAS: sees the CANCEL,
    answers 200 and 487, gets the proxy's hop-by-hop ACK."""
    a = sipp_env.uas("uas_cancel.xml", transport)
    b = sipp_env.uas("uas_cancel.xml", transport)
    proxy = sipp_env.proxy([a, b])

    result = sipp_env.uac("uac_cancel.xml", proxy, calls=100, rate=100, transport=transport)

    assert (result.successful, result.failed) == (100, 0), result.summary()
    sa, sb = a.stop(), b.stop()
    assert (sa.failed, sb.failed) == (0, 0), (sa.summary(), sb.summary())
    assert sa.successful + sb.successful == 100


@TRANSPORTS
def test_busy_486_reaches_the_uac(sipp_env, transport):
    """486 is no failover code: the UAC gets it and ACKs; each UAS gets the proxy's ACK
    and no INVITE is tried twice."""
    a = sipp_env.uas("uas_busy.xml", transport)
    b = sipp_env.uas("uas_busy.xml", transport)
    proxy = sipp_env.proxy([a, b])

    result = sipp_env.uac("uac_busy.xml", proxy, calls=100, rate=100, transport=transport)

    assert (result.successful, result.failed) == (100, 0), result.summary()
    sa, sb = a.stop(), b.stop()
    assert (sa.failed, sb.failed) == (0, 0), (sa.summary(), sb.summary())
    assert (sa.incoming + sb.incoming, sa.successful + sb.successful) == (100, 100)


@TRANSPORTS
def test_no_answer_gives_408_after_first_response_timeout(sipp_env, transport):
    silent = sipp_env.uas("uas_silent.xml", transport)
    proxy = sipp_env.proxy([silent], first_response_timeout=1.0)

    result = sipp_env.uac("uac_noanswer.xml", proxy, calls=10, rate=20, transport=transport)

    assert (result.successful, result.failed) == (10, 0), result.summary()
    # INVITE -> 408 is the proxy's first-response timer (1 s), give or take its tick, and
    # late timers on a loaded machine: never before it, nowhere near Timer B (32 s).
    assert 900 <= result.stats.response_time_ms() <= 2500, result.stats.row["ResponseTime1(C)"]
    assert silent.stop().incoming == 10


@TRANSPORTS
def test_failover_past_a_uas_that_never_answers(sipp_env, transport):
    silent = sipp_env.uas("uas_silent.xml", transport)
    good = sipp_env.uas("uas_rr.xml", transport)
    proxy = sipp_env.proxy([silent, good], first_response_timeout=1.0)

    result = sipp_env.uac("uac_rr.xml", proxy, calls=100, rate=100, transport=transport)

    assert (result.successful, result.failed) == (100, 0), result.summary()
    sg = good.stop()
    assert (sg.successful, sg.failed) == (100, 0), sg.summary()
    assert silent.stop().incoming > 0


@TRANSPORTS
def test_failover_past_a_destination_with_no_listener(sipp_env, transport):
    """Nothing listens on the first destination: ICMP port unreachable (UDP) or a refused
    connection (TCP), or at worst the first-response timer; the call goes on to the next."""
    good = sipp_env.uas("uas_rr.xml", transport)
    dead = f"sip:127.0.0.1:{harness.free_port()}" + (";transport=tcp" if transport == "tcp" else "")
    proxy = sipp_env.proxy([dead, good], first_response_timeout=1.0)

    result = sipp_env.uac("uac_rr.xml", proxy, calls=100, rate=100, transport=transport)

    assert (result.successful, result.failed) == (100, 0), result.summary()
    sg = good.stop()
    assert (sg.successful, sg.failed) == (100, 0), sg.summary()


@TRANSPORTS
def test_failover_past_a_uas_answering_503(sipp_env, transport):
    bad = sipp_env.uas("uas_503.xml", transport)
    good = sipp_env.uas("uas_rr.xml", transport)
    proxy = sipp_env.proxy([bad, good])

    result = sipp_env.uac("uac_rr.xml", proxy, calls=200, rate=200, transport=transport)

    assert (result.successful, result.failed) == (200, 0), result.summary()
    sg, sb = good.stop(), bad.stop()
    assert (sg.successful, sg.failed) == (200, 0), sg.summary()
    # Each 503 was ACKed hop by hop: the 503 UAS's calls all completed.
    assert sb.incoming > 0 and (sb.successful, sb.failed) == (sb.incoming, 0), sb.summary()


@TRANSPORTS
def test_bye_from_the_callee_follows_the_record_route(sipp_env, transport):
    a = sipp_env.uas("uas_callee_bye.xml", transport)
    b = sipp_env.uas("uas_callee_bye.xml", transport)
    proxy = sipp_env.proxy([a, b])

    result = sipp_env.uac("uac_callee_bye.xml", proxy, calls=200, rate=200, transport=transport)

    assert (result.successful, result.failed) == (200, 0), result.summary()
    sa, sb = a.stop(), b.stop()
    assert (sa.failed, sb.failed) == (0, 0), (sa.summary(), sb.summary())
    assert sa.successful + sb.successful == 200


@TRANSPORTS
def test_reinvite_reaches_the_same_uas(sipp_env, transport):
    """A re-INVITE sent to the other UAS would start a call there that fails its
    To-tag check; so zero failures on both means every re-INVITE stayed in its dialog."""
    a = sipp_env.uas("uas_reinvite.xml", transport)
    b = sipp_env.uas("uas_reinvite.xml", transport)
    proxy = sipp_env.proxy([a, b])

    result = sipp_env.uac("uac_reinvite.xml", proxy, calls=200, rate=200, transport=transport)

    assert (result.successful, result.failed) == (200, 0), result.summary()
    sa, sb = a.stop(), b.stop()
    assert (sa.failed, sb.failed) == (0, 0), (sa.summary(), sb.summary())
    assert _balanced([sa.successful, sb.successful], 200), (sa.summary(), sb.summary())
