"""Client transactions against RFC 3261 17.1 (figures 5 and 6) and RFC 6026 7.2.

Each case drives one transaction with a fake clock: an int is a response from
the next hop, "transport" a transport error, a float that many seconds of
timers; the expected state, what reached the transaction user, the ACKs sent
and the end of the transaction are then checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import pytest
from txn_harness import ACK, EPSILON, REQUEST, T1, T2, T4, Harness, response

from sipfleet.transaction.client import TIMEOUT, TRANSPORT
from sipfleet.transaction.server import ServerState as S

Step = int | float | str


@dataclass(frozen=True)
class Case:
    doc: str  # the RFC text the case checks
    invite: bool
    reliable: bool
    steps: tuple[Step, ...]
    state: S
    passed: tuple[int, ...] = ()
    failures: tuple[int, ...] = ()
    acks: int = 0
    terminated: bool = False


def drive(case: Case) -> Harness:
    h = Harness()
    txn = h.client(case.invite, case.reliable)
    h.txn = txn  # type: ignore[attr-defined]
    for step in case.steps:
        if step == "transport":
            txn.transport_error(h.clock.now)
        elif isinstance(step, float):
            h.run_until(h.clock.now + step)
        else:
            assert isinstance(step, int)
            txn.receive(response(step, "INVITE" if case.invite else "OPTIONS"), h.clock.now)
    return h


INVITE_CASES = [
    Case(
        "17.1.1.2: a provisional response moves Calling to Proceeding and goes to the TU",
        True,
        False,
        (180,),
        S.PROCEEDING,
        passed=(180,),
    ),
    Case(
        "17.1.1.2: further provisionals in Proceeding go to the TU",
        True,
        False,
        (100, 180, 183),
        S.PROCEEDING,
        passed=(100, 180, 183),
    ),
    Case(
        "17.1.1.2: Timer B fires only in Calling: Proceeding waits for the TU",
        True,
        False,
        (180, 64 * T1 + 1.0),
        S.PROCEEDING,
        passed=(180,),
    ),
    Case(
        "17.1.1.2: Timer B (64*T1) in Calling: Terminated, the TU hears of a timeout",
        True,
        False,
        (64 * T1,),
        S.TERMINATED,
        failures=(TIMEOUT,),
        terminated=True,
    ),
    Case(
        "17.1.1.2: Timer B also runs on a reliable transport",
        True,
        True,
        (64 * T1,),
        S.TERMINATED,
        failures=(TIMEOUT,),
        terminated=True,
    ),
    Case(
        "17.1.1.2 / RFC 6026 7.2: a 2xx in Calling goes to the TU and to Accepted",
        True,
        False,
        (200,),
        S.ACCEPTED,
        passed=(200,),
    ),
    Case(
        "RFC 6026 7.2: a 2xx in Proceeding goes to the TU and to Accepted",
        True,
        False,
        (180, 200),
        S.ACCEPTED,
        passed=(180, 200),
    ),
    Case(
        "RFC 6026 7.2: retransmitted and forked 2xx in Accepted go to the TU",
        True,
        False,
        (180, 200, 200, 200),
        S.ACCEPTED,
        passed=(180, 200, 200, 200),
    ),
    Case(
        "RFC 6026 7.2: Timer M (64*T1) ends Accepted",
        True,
        False,
        (200, 64 * T1),
        S.TERMINATED,
        passed=(200,),
        terminated=True,
    ),
    Case(
        "RFC 6026 7.2: Timer M (64*T1) runs on reliable transports too",
        True,
        True,
        (200, 64 * T1),
        S.TERMINATED,
        passed=(200,),
        terminated=True,
    ),
    Case(
        "RFC 6026 figure 4: a non-2xx final in Accepted is not passed on",
        True,
        False,
        (200, 486),
        S.ACCEPTED,
        passed=(200,),
    ),
    Case(
        "RFC 6026 7.2: Timer B no longer applies in Accepted (2xx at 10 s, B due at 32 s)",
        True,
        False,
        (10.0, 200, 64 * T1 - EPSILON),
        S.ACCEPTED,
        passed=(200,),
    ),
    Case(
        "17.1.1.2: 300-699 in Calling: ACK, to the TU, Completed",
        True,
        False,
        (486,),
        S.COMPLETED,
        passed=(486,),
        acks=1,
    ),
    Case(
        "17.1.1.2: 300-699 in Proceeding: ACK, to the TU, Completed",
        True,
        False,
        (180, 603),
        S.COMPLETED,
        passed=(180, 603),
        acks=1,
    ),
    Case(
        "17.1.1.2: a retransmitted final in Completed is ACKed again, not passed up",
        True,
        False,
        (486, 486, 486),
        S.COMPLETED,
        passed=(486,),
        acks=3,
    ),
    Case(
        "17.1.1.2: provisionals and 2xx in Completed are ignored",
        True,
        False,
        (486, 180, 200),
        S.COMPLETED,
        passed=(486,),
        acks=1,
    ),
    Case(
        "17.1.1.2: Timer D (>= 32 s unreliable) still running just before 32 s",
        True,
        False,
        (486, 32.0 - EPSILON),
        S.COMPLETED,
        passed=(486,),
        acks=1,
    ),
    Case(
        "17.1.1.2: Timer D (>= 32 s unreliable) ends Completed",
        True,
        False,
        (486, 32.0),
        S.TERMINATED,
        passed=(486,),
        acks=1,
        terminated=True,
    ),
    Case(
        "17.1.1.2: Timer D is zero on a reliable transport",
        True,
        True,
        (486,),
        S.TERMINATED,
        passed=(486,),
        acks=1,
        terminated=True,
    ),
    Case(
        "17.1.1.2 / figure 5: a transport error in Calling informs the TU",
        True,
        False,
        ("transport",),
        S.TERMINATED,
        failures=(TRANSPORT,),
        terminated=True,
    ),
    Case(
        "8.1.3.1: a transport error in Proceeding informs the TU (beyond figure 5)",
        True,
        True,
        (180, "transport"),
        S.TERMINATED,
        passed=(180,),
        failures=(TRANSPORT,),
        terminated=True,
    ),
    Case(
        "RFC 6026 7.2: a transport error in Accepted changes nothing",
        True,
        False,
        (200, "transport"),
        S.ACCEPTED,
        passed=(200,),
    ),
]

NON_INVITE_CASES = [
    Case(
        "17.1.2.2: a provisional moves Trying to Proceeding and goes to the TU",
        False,
        False,
        (100,),
        S.PROCEEDING,
        passed=(100,),
    ),
    Case(
        "17.1.2.2: a final (200-699, 2xx included) in Trying: to the TU, Completed",
        False,
        False,
        (200,),
        S.COMPLETED,
        passed=(200,),
    ),
    Case(
        "17.1.2.2: a final in Proceeding: to the TU, Completed",
        False,
        False,
        (100, 180, 404),
        S.COMPLETED,
        passed=(100, 180, 404),
    ),
    Case(
        "17.1.2.2: retransmitted finals and late provisionals in Completed are absorbed",
        False,
        False,
        (200, 200, 180, 500),
        S.COMPLETED,
        passed=(200,),
    ),
    Case(
        "17.1.2.2: no ACK for a non-INVITE final", False, False, (486,), S.COMPLETED, passed=(486,)
    ),
    Case(
        "17.1.2.2: Timer K (T4) still running just before T4",
        False,
        False,
        (200, T4 - EPSILON),
        S.COMPLETED,
        passed=(200,),
    ),
    Case(
        "17.1.2.2: Timer K (T4 unreliable) ends Completed",
        False,
        False,
        (200, T4),
        S.TERMINATED,
        passed=(200,),
        terminated=True,
    ),
    Case(
        "17.1.2.2: Timer K is zero on a reliable transport",
        False,
        True,
        (200,),
        S.TERMINATED,
        passed=(200,),
        terminated=True,
    ),
    Case(
        "17.1.2.2: Timer F (64*T1) in Trying: Terminated, the TU hears of a timeout",
        False,
        False,
        (64 * T1,),
        S.TERMINATED,
        failures=(TIMEOUT,),
        terminated=True,
    ),
    Case(
        "17.1.2.2: Timer F in Proceeding too",
        False,
        False,
        (100, 64 * T1),
        S.TERMINATED,
        passed=(100,),
        failures=(TIMEOUT,),
        terminated=True,
    ),
    Case(
        "17.1.2.2: Timer F on a reliable transport",
        False,
        True,
        (64 * T1,),
        S.TERMINATED,
        failures=(TIMEOUT,),
        terminated=True,
    ),
    Case(
        "17.1.2.2: no timeout once Completed: Timer F was cancelled",
        False,
        True,
        (200, 64 * T1),
        S.TERMINATED,
        passed=(200,),
        terminated=True,
    ),
    Case(
        "17.1.2.2: a transport error in Trying informs the TU",
        False,
        False,
        ("transport",),
        S.TERMINATED,
        failures=(TRANSPORT,),
        terminated=True,
    ),
    Case(
        "17.1.2.2: a transport error in Proceeding informs the TU",
        False,
        True,
        (100, "transport"),
        S.TERMINATED,
        passed=(100,),
        failures=(TRANSPORT,),
        terminated=True,
    ),
    Case(
        "figure 6: a transport error in Completed changes nothing",
        False,
        False,
        (200, "transport"),
        S.COMPLETED,
        passed=(200,),
    ),
]


@pytest.mark.parametrize("case", INVITE_CASES + NON_INVITE_CASES, ids=lambda c: c.doc)
def test_client_transaction_table(case: Case) -> None:
    """RFC 3261 17.1.1.2 (figure 5), 17.1.2.2 (figure 6), RFC 6026 7.2 (figure 4)."""
    h = drive(case)
    txn = h.txn  # type: ignore[attr-defined]
    assert txn.state is case.state
    assert tuple(h.passed) == case.passed
    assert tuple(code for code, _ in h.failures) == case.failures
    assert len(h.sends(ACK)) == case.acks
    assert bool(h.terminated) == case.terminated
    assert len(h.terminated) <= 1  # the TU hears of the end once
    if case.terminated:
        assert len(h.timers) == 0  # nothing left armed that points at the transaction


def test_invite_timer_a_doubles_without_cap_until_timer_b() -> None:
    """RFC 3261 17.1.1.2: Timer A starts at T1 and doubles on each firing (no T2
    cap for INVITE); Timer B = 64*T1 ends it: seven transmissions in all."""
    h = Harness()
    txn = h.client(invite=True, reliable=False)
    h.run_until(64 * T1 + 1)
    assert h.sends(REQUEST) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert txn.state is S.TERMINATED
    assert h.failures == [(TIMEOUT, 64 * T1)]


def test_non_invite_timer_e_doubles_up_to_t2_until_timer_f() -> None:
    """RFC 3261 17.1.2.2: Timer E starts at T1 and doubles up to T2 while Trying;
    Timer F = 64*T1 ends the transaction."""
    h = Harness()
    h.client(invite=False, reliable=False)
    h.run_until(64 * T1 + 1)
    intervals = [round(b - a, 6) for a, b in pairwise(h.sends())]
    assert intervals == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert max(intervals) == T2
    assert h.failures == [(TIMEOUT, 64 * T1)]


def test_non_invite_timer_e_is_t2_in_proceeding() -> None:
    """RFC 3261 17.1.2.2: if Timer E fires in Proceeding, the request is resent and
    Timer E is reset to T2."""
    h = Harness()
    txn = h.client(invite=False, reliable=False)
    h.run_until(0.1)
    txn.receive(response(100, "OPTIONS"), h.clock.now)
    h.run_until(13.0)
    assert h.sends(REQUEST) == [0.0, 0.5, 4.5, 8.5, 12.5]


@pytest.mark.parametrize("invite", [True, False], ids=["INVITE", "non-INVITE"])
def test_reliable_transport_never_retransmits(invite: bool) -> None:
    """RFC 3261 17.1.1.2 / 17.1.2.2: Timers A and E are set only for unreliable
    transports; B and F still bound the wait."""
    h = Harness()
    h.client(invite=invite, reliable=True)
    h.run_until(64 * T1 + 1)
    assert h.sends(REQUEST) == [0.0]
    assert h.failures == [(TIMEOUT, 64 * T1)]


def test_provisional_stops_invite_retransmissions() -> None:
    """RFC 3261 17.1.1.2: in Proceeding the client stops retransmitting (Timer A
    is for Calling only)."""
    h = Harness()
    txn = h.client(invite=True, reliable=False)
    h.run_until(1.0)
    txn.receive(response(100), h.clock.now)
    h.run_until(60.0)
    assert h.sends(REQUEST) == [0.0, 0.5]
    assert txn.state is S.PROCEEDING and not h.failures


def test_final_stops_non_invite_retransmissions() -> None:
    """RFC 3261 17.1.2.2: Completed: Timers E and F are cancelled."""
    h = Harness()
    txn = h.client(invite=False, reliable=False)
    h.run_until(1.0)
    txn.receive(response(200, "OPTIONS"), h.clock.now)
    h.run_until(60.0)
    assert h.sends(REQUEST) == [0.0, 0.5]
    assert not h.failures


def test_ack_is_built_once_and_resent_as_the_same_bytes() -> None:
    """RFC 3261 17.1.1.3: the ACK for a non-2xx final is built by the transaction
    (same Request-URI, Call-ID, From, top Via); retransmitted finals get it again."""
    h = Harness()
    txn = h.client(invite=True, reliable=False)
    for _ in range(3):
        txn.receive(response(486), h.clock.now)
    assert h.acks_built == 1
    assert h.sends(ACK) == [0.0, 0.0, 0.0]


def test_no_ack_for_2xx() -> None:
    """RFC 3261 17.1.1.2 / 13.2.2.4: the ACK of a 2xx is the TU's, not the transaction's."""
    h = Harness()
    txn = h.client(invite=True, reliable=False)
    txn.receive(response(200), h.clock.now)
    assert h.acks_built == 0 and h.sends(ACK) == []


def test_stop_retransmitting_keeps_timer_b() -> None:
    """RFC 3261 16.8 / 16.10: a proxy that gives up on a branch stops retransmitting;
    Timer B still ends the transaction."""
    h = Harness()
    txn = h.client(invite=True, reliable=False)
    h.run_until(0.6)
    txn.stop_retransmitting()
    h.run_until(64 * T1 + 1)
    assert h.sends(REQUEST) == [0.0, 0.5]
    assert h.failures == [(TIMEOUT, 64 * T1)]


def test_status_keeps_the_final_over_later_provisionals() -> None:
    """RFC 3261 17.1.1.2: after a final answer the transaction's outcome is that final."""
    h = Harness()
    txn = h.client(invite=True, reliable=False)
    txn.receive(response(180), h.clock.now)
    assert txn.status == 180
    txn.receive(response(486), h.clock.now)
    txn.receive(response(183), h.clock.now)
    assert txn.status == 486


@pytest.mark.parametrize("t1", [0.1, 0.5, 2.0])
def test_timers_scale_with_t1(t1: float) -> None:
    """RFC 3261 17.1.1.2 / table 4: Timer A starts at T1 and Timer B is 64*T1 for any T1."""
    h = Harness()
    h.cfg.t1 = t1
    txn = h.client(invite=True, reliable=False)
    h.run_until(64 * t1 - EPSILON)
    assert txn.state is S.TRYING
    assert h.sends(REQUEST)[:2] == [0.0, round(t1, 6)]
    h.run_until(64 * t1)
    assert h.failures == [(TIMEOUT, 64 * t1)]
