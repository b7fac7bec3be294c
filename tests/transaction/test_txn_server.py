"""Server transactions against RFC 3261 17.2 (figures 7 and 8) and RFC 6026 7.1.

Each case drives one transaction with a fake clock: an int is a response the
transaction user hands down, "req" a retransmission of the request, "ack" an
ACK, a float that many seconds of timers. The responses written to the wire,
which hand-downs were refused, the state and the end are then checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import pytest
from txn_harness import EPSILON, T1, T2, T4, Harness

from sipfleet.transaction.server import ServerState as S
from sipfleet.transaction.server import ServerTransaction

Step = int | float | str


def wire(status: int) -> bytes:
    return b"SIP/2.0 %d X\r\n\r\n" % status


def sent_statuses(h: Harness) -> tuple[int, ...]:
    return tuple(int(d.split(b" ")[1]) for _, d in h.sink.sent)


@dataclass(frozen=True)
class Case:
    doc: str
    invite: bool
    reliable: bool
    steps: tuple[Step, ...]
    state: S
    sent: tuple[int, ...] = ()
    refused: tuple[int, ...] = ()  # responses respond() declined
    terminated: tuple[bool, ...] = ()  # timed_out flag of each on_terminated call


def drive(case: Case) -> tuple[Harness, ServerTransaction, list[int]]:
    h = Harness()
    txn = h.server(case.invite, case.reliable)
    refused = []
    for step in case.steps:
        if step == "req":
            txn.on_request(h.clock.now)
        elif step == "ack":
            txn.on_ack(h.clock.now)
        elif isinstance(step, float):
            h.run_until(h.clock.now + step)
        else:
            assert isinstance(step, int)
            if not txn.respond(step, wire(step), h.clock.now):
                refused.append(step)
    return h, txn, refused


INVITE_CASES = [
    Case("17.2.1: the transaction starts in Proceeding", True, False, (), S.PROCEEDING),
    Case(
        "17.2.1: a retransmitted INVITE before any response: nothing to resend",
        True,
        False,
        ("req",),
        S.PROCEEDING,
    ),
    Case(
        "17.2.1: provisionals from the TU are sent; Proceeding",
        True,
        False,
        (100, 180),
        S.PROCEEDING,
        sent=(100, 180),
    ),
    Case(
        "17.2.1: a retransmitted INVITE in Proceeding gets the last provisional again",
        True,
        False,
        (100, 180, "req"),
        S.PROCEEDING,
        sent=(100, 180, 180),
    ),
    Case(
        "RFC 6026 7.1: a 2xx from the TU is sent and moves to Accepted",
        True,
        False,
        (180, 200),
        S.ACCEPTED,
        sent=(180, 200),
    ),
    Case(
        "RFC 6026 7.1: retransmitted INVITEs in Accepted are absorbed",
        True,
        False,
        (200, "req", "req"),
        S.ACCEPTED,
        sent=(200,),
    ),
    Case(
        "RFC 6026 7.1: further 2xx from the TU in Accepted are sent",
        True,
        False,
        (200, 200),
        S.ACCEPTED,
        sent=(200, 200),
    ),
    Case(
        "RFC 6026 figure 5: a non-2xx final in Accepted is refused",
        True,
        False,
        (200, 486),
        S.ACCEPTED,
        sent=(200,),
        refused=(486,),
    ),
    Case(
        "RFC 6026 7.1: Timer L (64*T1) still running just before",
        True,
        False,
        (200, 64 * T1 - EPSILON),
        S.ACCEPTED,
        sent=(200,),
    ),
    Case(
        "RFC 6026 7.1: Timer L (64*T1) ends Accepted, no timeout reported",
        True,
        False,
        (200, 64 * T1),
        S.TERMINATED,
        sent=(200,),
        terminated=(False,),
    ),
    Case(
        "RFC 6026 7.1: Timer L runs on reliable transports too",
        True,
        True,
        (200, 64 * T1),
        S.TERMINATED,
        sent=(200,),
        terminated=(False,),
    ),
    Case(
        "17.2.1: a 300-699 from the TU is sent and moves to Completed",
        True,
        True,
        (180, 486),
        S.COMPLETED,
        sent=(180, 486),
    ),
    Case(
        "17.2.1: a retransmitted INVITE in Completed gets the final again",
        True,
        True,
        (486, "req", "req"),
        S.COMPLETED,
        sent=(486, 486, 486),
    ),
    Case(
        "17.2.1: once Completed, more responses from the TU are refused",
        True,
        True,
        (486, 180, 200, 500),
        S.COMPLETED,
        sent=(486,),
        refused=(180, 200, 500),
    ),
    Case(
        "17.2.1: Timer H (64*T1) without an ACK: Terminated, the TU hears of a timeout",
        True,
        True,
        (486, 64 * T1),
        S.TERMINATED,
        sent=(486,),
        terminated=(True,),
    ),
    Case(
        "17.2.1: an ACK in Completed moves to Confirmed",
        True,
        False,
        (486, "ack"),
        S.CONFIRMED,
        sent=(486,),
    ),
    Case(
        "17.2.1: an ACK cancels Timer G and H: no resends, no timeout",
        True,
        False,
        (486, 0.1, "ack", T4 - 0.1 - EPSILON),
        S.CONFIRMED,
        sent=(486,),
    ),
    Case(
        "17.2.1: ACKs and INVITEs in Confirmed are absorbed",
        True,
        False,
        (486, "ack", "ack", "req"),
        S.CONFIRMED,
        sent=(486,),
    ),
    Case(
        "17.2.1: in Confirmed the TU's responses are refused",
        True,
        False,
        (486, "ack", 500),
        S.CONFIRMED,
        sent=(486,),
        refused=(500,),
    ),
    Case(
        "17.2.1: Timer I (T4 unreliable) ends Confirmed",
        True,
        False,
        (486, "ack", T4),
        S.TERMINATED,
        sent=(486,),
        terminated=(False,),
    ),
    Case(
        "17.2.1: Timer I is zero on a reliable transport",
        True,
        True,
        (486, "ack"),
        S.TERMINATED,
        sent=(486,),
        terminated=(False,),
    ),
    Case(
        "17.2.1: an ACK before any final is not for this transaction's Completed state",
        True,
        False,
        (180, "ack"),
        S.PROCEEDING,
        sent=(180,),
    ),
]

NON_INVITE_CASES = [
    Case("17.2.2: the transaction starts in Trying", False, False, (), S.TRYING),
    Case("17.2.2: retransmissions in Trying are discarded", False, False, ("req", "req"), S.TRYING),
    Case(
        "17.2.2: a provisional from the TU is sent and moves to Proceeding",
        False,
        False,
        (100,),
        S.PROCEEDING,
        sent=(100,),
    ),
    Case(
        "17.2.2: a retransmission in Proceeding gets the last provisional again",
        False,
        False,
        (100, "req"),
        S.PROCEEDING,
        sent=(100, 100),
    ),
    Case(
        "17.2.2: a final (200-699) in Trying is sent and moves to Completed",
        False,
        False,
        (200,),
        S.COMPLETED,
        sent=(200,),
    ),
    Case(
        "17.2.2: a final in Proceeding is sent and moves to Completed",
        False,
        False,
        (100, 404),
        S.COMPLETED,
        sent=(100, 404),
    ),
    Case(
        "17.2.2: a retransmission in Completed gets the final again",
        False,
        False,
        (200, "req", "req"),
        S.COMPLETED,
        sent=(200, 200, 200),
    ),
    Case(
        "17.2.2: other finals from the TU in Completed are discarded",
        False,
        False,
        (200, 500, "req"),
        S.COMPLETED,
        sent=(200, 200),
        refused=(500,),
    ),
    Case(
        "17.2.2: provisionals in Completed are refused",
        False,
        False,
        (200, 180),
        S.COMPLETED,
        sent=(200,),
        refused=(180,),
    ),
    Case(
        "17.2.2: Timer J (64*T1 unreliable) still running just before",
        False,
        False,
        (200, 64 * T1 - EPSILON),
        S.COMPLETED,
        sent=(200,),
    ),
    Case(
        "17.2.2: Timer J (64*T1 unreliable) ends Completed",
        False,
        False,
        (200, 64 * T1),
        S.TERMINATED,
        sent=(200,),
        terminated=(False,),
    ),
    Case(
        "17.2.2: Timer J is zero on a reliable transport",
        False,
        True,
        (200,),
        S.TERMINATED,
        sent=(200,),
        terminated=(False,),
    ),
    Case(
        "17.2.2: a non-INVITE server transaction never retransmits on its own",
        False,
        False,
        (100, 30.0),
        S.PROCEEDING,
        sent=(100,),
    ),
]


@pytest.mark.parametrize("case", INVITE_CASES + NON_INVITE_CASES, ids=lambda c: c.doc)
def test_server_transaction_table(case: Case) -> None:
    """RFC 3261 17.2.1 (figure 7), 17.2.2 (figure 8), RFC 6026 7.1 (figure 5)."""
    h, txn, refused = drive(case)
    assert txn.state is case.state
    assert sent_statuses(h) == case.sent
    assert tuple(refused) == case.refused
    assert tuple(t for _, t in h.terminated) == case.terminated
    if case.terminated:
        assert len(h.timers) == 0


def test_timer_g_doubles_up_to_t2_until_timer_h() -> None:
    """RFC 3261 17.2.1: over an unreliable transport the final is resent on Timer G,
    which starts at T1 and doubles up to T2; Timer H (64*T1) ends it with a timeout."""
    h = Harness()
    txn = h.server(invite=True, reliable=False)
    txn.respond(486, wire(486), h.clock.now)
    h.run_until(64 * T1 + 1)
    times = h.sends()
    intervals = [round(b - a, 6) for a, b in pairwise(times)]
    assert intervals[:4] == [0.5, 1.0, 2.0, 4.0]
    assert set(intervals[3:]) == {T2}
    assert times[-1] < 64 * T1
    assert h.terminated == [(64 * T1, True)]


def test_timer_g_is_not_set_on_a_reliable_transport() -> None:
    """RFC 3261 17.2.1: Timer G only for unreliable transports; Timer H is set for all."""
    h = Harness()
    txn = h.server(invite=True, reliable=True)
    txn.respond(486, wire(486), h.clock.now)
    h.run_until(64 * T1 + 1)
    assert h.sends() == [0.0]
    assert h.terminated == [(64 * T1, True)]


def test_ack_stops_timer_g() -> None:
    """RFC 3261 17.2.1: in Confirmed, Timer G is ignored (the final is not resent)."""
    h = Harness()
    txn = h.server(invite=True, reliable=False)
    txn.respond(486, wire(486), h.clock.now)
    h.run_until(1.6)  # two resends: 0.5, 1.5
    txn.on_ack(h.clock.now)
    h.run_until(60.0)
    assert h.sends() == [0.0, 0.5, 1.5]
    assert h.terminated == [(1.6 + T4, False)]


def test_final_sent_follows_status() -> None:
    """RFC 3261 17.2.1: the TU's view: has a final response gone out?"""
    h = Harness()
    txn = h.server(invite=True, reliable=False)
    txn.respond(180, wire(180), h.clock.now)
    assert not txn.final_sent
    txn.respond(486, wire(486), h.clock.now)
    assert txn.final_sent and txn.status == 486
