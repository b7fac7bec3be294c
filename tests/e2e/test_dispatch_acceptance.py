"""Issue 3's acceptance, end to end: ``sipfleet run`` between SIPp peers on loopback,
observed from both sides (which UAS logged which INVITE, when: scenarios/uas_logged.xml)
and through its own JSON-RPC (dispatcher.list FLAGS and DLGLOAD, dlg.list, statistics).

The weight split runs here over the issue's 10,000 calls. The call-load criterion's
50,000 calls run on the pure core (tests/proxy/test_dialogs.py) in milliseconds; with
SIPp the default run has about 2,400 mixed calls (the suite's time budget), and the
issue's 50,000 is opt-in: SIPFLEET_E2E_LOAD=1.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import fleet
import pytest
import sipp as harness

sipp_env = harness.sipp_env
Dest = fleet.Dest
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
LOAD = os.environ.get("SIPFLEET_E2E_LOAD") == "1"


def _who_got(uas_list: list[Any]) -> list[tuple[float, int, str]]:
    """Every INVITE the UAS logged: (time, index of the UAS, Call-ID), in time order."""
    seen = [(x.time, i, x.call_id) for i, u in enumerate(uas_list) for x in u.invites()]
    return sorted(seen)


def _max_overlap(lines: list[Any]) -> int:
    """Most calls open at once on a UAS, from its INVITE and BYE log lines."""
    edges = sorted((x.time, 1 if x.kind == "INVITE" else -1) for x in lines)
    # At equal times the BYE (-1) sorts first: a call ending as another starts is no overlap.
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_round_robin_over_three_uas_alternates_exactly(sipp_env):
    uas = [fleet.uas(sipp_env) for _ in range(3)]
    proxy = fleet.proxy(sipp_env, [Dest(u) for u in uas], dispatcher={"algorithm": 4})

    # One call at a time (-l 1): the order INVITEs reach the UAS is the order of picks.
    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=30, rate=50, limit=1).wait()
    assert (r.successful, r.failed) == (30, 0), r.summary()
    order = [i for _, i, _ in _who_got(uas)]
    assert len(order) == 30
    assert sorted(order[:3]) == [0, 1, 2], order
    assert order == order[:3] * 10, order

    # Concurrent calls: still exactly a third each.
    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=300, rate=300).wait()
    assert (r.successful, r.failed) == (300, 0), r.summary()
    assert [len(u.invites()) for u in uas] == [110, 110, 110]
    assert proxy.statistic("processed_dialogs") == 330
    assert set(proxy.loads().values()) == {0}


@pytest.mark.timeout(120)
def test_weight_80_20_within_2_percent_over_10000_calls(sipp_env):
    """Algorithm 9 over weight=80 and weight=20, the issue's 10,000 calls. Kamailio's
    weight algorithm cycles a 100-slot table, so the split is all but exact.

    The split is the point, not the rate: at 1,000 calls/s a loaded 2-core machine
    (SIPp, two SIPp UAS and sipfleet on it) once lost 26 calls to SIPp's own timeouts,
    so the calls go at 400/s (25 s). The speed is measured in bench/."""
    heavy, light = fleet.uas(sipp_env), fleet.uas(sipp_env)
    proxy = fleet.proxy(
        sipp_env,
        [Dest(heavy, attrs="duid=heavy;weight=80"), Dest(light, attrs="duid=light;weight=20")],
        dispatcher={"algorithm": 9},
    )

    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=10000, rate=400).wait()

    # Every INVITE must reach a back end (the sum below). Under a loaded machine SIPp
    # may still abort a call or two on a retransmitted 200 that arrives after its BYE
    # (its UAS saw the ACK late): allow 0.1 % of such calls, not more.
    assert r.successful + r.failed == 10000 and r.failed <= 10, r.summary()
    got = len(heavy.invites()), len(light.invites())
    print(f"weight 80/20 over 10000 calls: {got[0]}/{got[1]}")
    assert sum(got) == 10000
    assert abs(got[0] / 10000 - 0.80) <= 0.02, got


def test_hash_on_call_id_keeps_reinvites_on_the_same_uas(sipp_env):
    """uas_reinvite.xml fails a re-INVITE that is not in its dialog (no To tag of its
    own): zero failures on all three means every re-INVITE reached its call's UAS."""
    uas = [fleet.uas(sipp_env, "uas_reinvite.xml") for _ in range(3)]
    proxy = fleet.proxy(sipp_env, [Dest(u) for u in uas], dispatcher={"algorithm": 0})

    r = sipp_env.uac("uac_reinvite.xml", proxy, calls=150, rate=150)

    assert (r.successful, r.failed) == (150, 0), r.summary()
    stats = [u.stop() for u in uas]
    assert [s.failed for s in stats] == [0, 0, 0], [s.summary() for s in stats]
    assert sum(s.successful for s in stats) == 150
    assert all(s.successful > 0 for s in stats), [s.summary() for s in stats]


def test_hash_on_call_id_sends_the_same_call_id_to_the_same_uas(sipp_env):
    """Two runs with the same Call-IDs (-cid_str without the pid) and different From tags:
    60 pairs of distinct dialogs; each pair must land on one UAS. The UAS forget a call
    as soon as it ends (-deadcall_wait 0; SIPp's default of 33 s would swallow the second
    INVITE as a message of a dead call, and sipfleet would rightly fail over)."""
    uas = [fleet.uas(sipp_env, extra=["-deadcall_wait", "0"]) for _ in range(3)]
    proxy = fleet.proxy(sipp_env, [Dest(u) for u in uas], dispatcher={"algorithm": 0})
    same_ids = ["-cid_str", "e2e-hash-%u@127.0.0.1"]

    for run in (1, 2):
        r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=60, rate=100, extra=same_ids).wait()
        assert (r.successful, r.failed) == (60, 0), (run, r.summary())
        if run == 1:
            # Each UAS must forget the calls (their timewait) before the same Call-IDs
            # come back.
            done = time.time()
            for u in uas:
                u.wait_idle(done)

    where: dict[str, set[int]] = {}
    for _, i, call_id in _who_got(uas):
        where.setdefault(call_id, set()).add(i)
    assert len(where) == 60
    assert proxy.statistic("failovers") == 0  # each went where the hash sent it
    split = {c: w for c, w in where.items() if len(w) != 1}
    assert not split, split
    per_uas = Counter(next(iter(w)) for w in where.values())
    assert sorted(per_uas) == [0, 1, 2], per_uas  # the hash spreads them
    assert [len(u.invites()) for u in uas] == [2 * per_uas[i] for i in range(3)]


def test_call_load_never_exceeds_maxload(sipp_env):
    """Algorithm 10, two UAS with maxload=5, 20 calls of 3 s at once: 10 answered, never
    more than 5 open on a UAS (sipfleet's DLGLOAD and the UAS's own log agree), the
    other 10 refused with 503 and a Retry-After."""
    uas = [fleet.uas(sipp_env) for _ in range(2)]
    proxy = fleet.proxy(
        sipp_env,
        [Dest(u, attrs=f"duid=m{i};maxload=5") for i, u in enumerate(uas)],
        dispatcher={"algorithm": 10},
    )

    uac = fleet.uac(sipp_env, "uac_answer_or_503.xml", proxy, calls=20, rate=100, duration_ms=3000)
    peak: Counter[str] = Counter()
    while uac.alive():
        for uri, load in proxy.loads().items():
            peak[uri] = max(peak[uri], load)
        time.sleep(0.02)  # sleep-ok: the sampling interval while the UAC runs (bounded by it)
    r = uac.wait()

    assert (r.successful, r.failed) == (20, 0), r.summary()
    outcomes = Counter(x.kind for x in fleet.uac_log(uac))
    assert outcomes == {"ANSWERED": 10, "REJECTED": 10}, outcomes
    assert {x.fields[0] for x in fleet.uac_log(uac, "REJECTED")} == {"5"}  # route retry_after
    assert set(peak.values()) == {5}, peak
    assert [_max_overlap(u.log()) for u in uas] == [5, 5]
    assert set(proxy.loads().values()) == {0}


def test_failover_past_a_503_uas_and_a_silent_uas(sipp_env):
    """Round-robin over a UAS answering 503, one never answering and a good one: every
    call completes on the good one (after 1 s of silence at worst), none fails."""
    bad = fleet.uas(sipp_env, "uas_503.xml")
    silent = fleet.uas(sipp_env, "uas_silent.xml")
    good = fleet.uas(sipp_env)
    proxy = fleet.proxy(
        sipp_env,
        [Dest(bad), Dest(silent), Dest(good)],
        first_response_timeout=1.0,
        dispatcher={"algorithm": 4},
    )

    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=60, rate=60).wait()

    assert (r.successful, r.failed) == (60, 0), r.summary()
    assert len(good.invites()) == 60
    sb, ss = bad.stop(), silent.stop()
    assert sb.incoming > 0 and ss.incoming > 0, (sb.summary(), ss.summary())
    assert proxy.statistic("failovers") >= sb.incoming + ss.incoming
    assert set(proxy.loads().values()) == {0}


def test_probing_marks_a_silent_uas_inactive_and_back(sipp_env):
    """OPTIONS every 1 s, threshold 1, probe timeout 0.8 s: a UAS that stops answering
    (SIGSTOP keeps its port, so no ICMP error helps) is inactive within 1 x 1 + 1 s and
    gets no new call; answering again (SIGCONT), it is active after the next probe."""
    uas = [fleet.uas(sipp_env, probe=True) for _ in range(3)]
    proxy = fleet.proxy(
        sipp_env,
        [Dest(u, flags=8, attrs=f"duid=p{i}") for i, u in enumerate(uas)],
        dispatcher={
            "algorithm": 4,
            "ping_interval": 1,
            "probing_mode": 1,
            "probing_threshold": 1,
            "inactive_threshold": 1,
        },
    )
    victim = uas[2]
    fleet.wait_for(
        "every UAS active", lambda: set(proxy.flags().values()) == {"AP"}, 15, seen=proxy.flags
    )
    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=30, rate=60).wait()
    assert (r.successful, r.failed) == (30, 0), r.summary()
    assert len(victim.invites()) == 10

    victim.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        fleet.wait_for(
            "the stopped UAS to be inactive",
            lambda: proxy.flags()[victim.uri].startswith("I"),
            timeout=15,
            interval=0.02,
            seen=proxy.flags,
        )
        detected = time.monotonic() - stopped
        failovers = proxy.statistic("failovers")
        while_down = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=30, rate=60)
        r = while_down.wait()
        assert (r.successful, r.failed) == (30, 0), r.summary()
        assert proxy.statistic("failovers") == failovers  # nobody tried the inactive one
    finally:
        victim.signal(signal.SIGCONT)
    resumed = time.monotonic()
    fleet.wait_for(
        "the resumed UAS to be active",
        lambda: proxy.flags()[victim.uri].startswith("A"),
        timeout=15,
        interval=0.02,
        seen=proxy.flags,
    )
    recovered = time.monotonic() - resumed
    print(
        f"probing: inactive {detected:.2f} s after SIGSTOP, active {recovered:.2f} s after SIGCONT"
    )
    # + 0.5: the polling, the RPC and a late timer on a loaded machine.
    assert detected <= 1 * 1 + 1.0 + 0.5, detected
    assert recovered <= 1 + 1.0 + 0.5, recovered

    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=30, rate=60).wait()
    assert (r.successful, r.failed) == (30, 0), r.summary()
    down_ids = {x.call_id for x in fleet.uac_log(while_down, "START")}
    victim_ids = {x.call_id for x in victim.invites()}
    assert not down_ids & victim_ids  # not even queued while it was stopped
    assert len(victim.invites()) == 20, victim.invites()


#: Test 7's traffic: R-URI user -> (set, UAC scenario, calls, calls/s). 2,400 calls in 8 s.
MIX = {
    "rr": (1, "uac_random_hangup.xml", 800, 100),  # caller hangs up after 0-1.5 s
    "calleebye": (2, "uac_callee_bye.xml", 400, 50),  # callee hangs up
    "busy": (3, "uac_busy.xml", 320, 40),  # 486
    "cancel": (4, "uac_cancel.xml", 320, 40),  # CANCEL while ringing, 487
    "failover": (5, "uac_random_hangup.xml", 400, 50),  # half of them 503 first
    "noanswer": (6, "uac_noanswer.xml", 160, 20),  # silent UAS: 408 after 1 s
}
LONG_CALLS = 30


def test_call_load_is_the_open_dialog_count_after_mixed_traffic(sipp_env):
    _mixed_traffic_run(sipp_env, calls_x=1, rate_x=1)


@pytest.mark.skipif(not LOAD, reason="load test: set SIPFLEET_E2E_LOAD=1")
@pytest.mark.timeout(240)
def test_call_load_after_50000_mixed_calls(sipp_env):
    """The issue's size: the mix 21 times over (50,400 calls) at 5 times the rate."""
    _mixed_traffic_run(sipp_env, calls_x=21, rate_x=5)


def _mixed_traffic_run(sipp_env: Any, *, calls_x: int, rate_x: int) -> None:
    """Six SIPp UAC at once, each routed by its R-URI user to its own set (hang-ups either
    way, busy, CANCEL, failover after 503, no answer), plus 30 long calls. When the mix
    is over, each destination's DLGLOAD is exactly the long calls open on it (counted by
    dlg.list and by the UAS's own log); when those end, every load is 0. ``calls_x`` and
    ``rate_x`` scale the mix's calls and rates."""
    mix = {u: (s, sc, n * calls_x, r * rate_x) for u, (s, sc, n, r) in MIX.items()}
    mix_seconds = max(n / r for _, _, n, r in mix.values())
    # SIPp falls a little behind its rate when scaled up (35 s for the 33.6 s planned).
    # + 6 s: the mix falls behind on a loaded machine too, and the long calls must outlast it.
    long_ms = int(1000 * mix_seconds * (1 if rate_x == 1 else 1.3)) + 6000
    # A long call's BYE comes after the mix is over.
    patient = ["-recv_timeout", str(long_ms + 9000)]
    sets: dict[int, list[Any]] = {
        1: [fleet.uas(sipp_env, extra=patient), fleet.uas(sipp_env, extra=patient)],
        2: [fleet.uas(sipp_env, "uas_callee_bye.xml")],
        3: [fleet.uas(sipp_env, "uas_busy.xml")],
        4: [fleet.uas(sipp_env, "uas_cancel.xml")],
        5: [fleet.uas(sipp_env, "uas_503.xml"), fleet.uas(sipp_env)],
        6: [fleet.uas(sipp_env, "uas_silent.xml")],
    }
    routes = [
        {"name": user, "match": {"ruri_user": user}, "sets": [set_id]}
        for user, (set_id, *_) in mix.items()
    ]
    routes.insert(0, {"name": "long", "match": {"ruri_user": "long"}, "sets": [1]})
    proxy = fleet.proxy(
        sipp_env,
        [Dest(u, set_id=s) for s, members in sets.items() for u in members],
        first_response_timeout=1.0,
        dispatcher={"algorithm": 4},
        routes=routes,
    )

    long_uac = fleet.uac(
        sipp_env, "uac_logged.xml", proxy, calls=LONG_CALLS, rate=30, duration_ms=long_ms,
        service="long",
    )  # fmt: skip
    uacs = {
        user: fleet.uac(sipp_env, scenario, proxy, calls=n, rate=rate, service=user)
        for user, (_, scenario, n, rate) in mix.items()
    }
    results = {user: u.wait() for user, u in uacs.items()}
    print({user: r.summary() for user, r in results.items()})
    for user, r in results.items():
        assert (r.successful, r.failed) == (mix[user][2], 0), (user, r.summary())
    assert long_uac.alive(), "the long calls ended before the mix: make them longer"

    # Only the long calls are left, all on set 1.
    loads = proxy.loads()
    by_callee = proxy.dialogs_by_callee()
    assert proxy.rpc("dlg.stats_active")["all"] == LONG_CALLS
    for members in sets.values():
        for u in members:
            on_uas = Counter()
            for x in u.log():
                on_uas[x.call_id] += 1 if x.kind == "INVITE" else -1
            open_on_uas = sum(on_uas.values())
            assert loads[u.uri] == by_callee.get(u.port, 0) == open_on_uas, (
                u.name, loads[u.uri], by_callee, open_on_uas
            )  # fmt: skip
    assert sum(loads[u.uri] for u in sets[1]) == LONG_CALLS

    r = long_uac.wait()
    assert (r.successful, r.failed) == (LONG_CALLS, 0), r.summary()
    fleet.wait_for(
        "every load back to 0", lambda: set(proxy.loads().values()) == {0}, 10, seen=proxy.loads
    )
    assert proxy.rpc("dlg.list") == []
    assert proxy.statistic("active_dialogs") == 0
    assert proxy.statistic("early_dialogs") == 0
