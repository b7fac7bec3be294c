"""Probing: who is probed, thresholds, transitions, events, latency statistics."""

from __future__ import annotations

import math

import pytest
from conftest import Build

from sipfleet.dispatch import Dispatcher, DstEvent, Health, Keys, LatencyStats
from sipfleet.dispatch.flags import parse_rpc_state
from sipfleet.dispatch.settings import ReplyCodes
from sipfleet.dispatch.target import DestTarget

TWO = "1 sip:a 0\n1 sip:b 8\n"  # a: no P flag, b: probing (P)


def probed(d: Dispatcher, now: float) -> list[str]:
    return sorted(p.destination.uri for p in d.due_probes(now))


@pytest.mark.parametrize(
    ("mode", "text", "expected"),
    [
        (1, TWO, ["sip:a", "sip:b"]),  # all
        (0, TWO, ["sip:b"]),  # P only
        (3, TWO, ["sip:b"]),  # P only
        (2, TWO, []),  # P and I only
        (2, "1 sip:a 9\n1 sip:b 8\n", ["sip:a"]),  # flags 9 = I|P
        (
            1,
            "1 sip:a 4\n1 sip:b 32\n1 sip:c 16\n1 sip:d 1\n",
            ["sip:d"],
        ),  # D, no-ping, no-DNS skipped
    ],
)
def test_who_is_probed(build: Build, mode: int, text: str, expected: list[str]) -> None:
    assert probed(build(text, probing_mode=mode), 0.0) == expected


def test_rounds_follow_ping_interval_and_ping_active(build: Build) -> None:
    d = build(TWO, ping_interval=10)
    assert d.next_probe_at() == 0.0
    assert len(d.due_probes(0.0)) == 2
    assert d.due_probes(5.0) == []
    assert d.next_probe_at() == 10.0
    # Unanswered probes (ping_timeout 32 s) hold back the next round's probe.
    assert d.due_probes(10.0) == []
    for p in d.due_probes(40.0):
        d.on_probe_result(p.destination, 200, 0.01, 40.0)
    assert d.ping_active(0) == {"NewPingState": 0, "OldPingState": 1}
    assert d.ping_active() == {"OldPingState": 0}
    assert d.next_probe_at() is None and d.due_probes(60.0) == []
    d.ping_active(1)
    assert len(d.due_probes(60.0)) == 2
    assert build(TWO, ping_interval=0).due_probes(0.0) == []


def test_probe_request_fields(build: Build) -> None:
    d = build("1 sip:a 0 0 ping_from=sip:me@x;obproxy=sip:proxy\n1 sip:b\n", ping_method="INFO")
    reqs = {p.destination.uri: p for p in d.due_probes(3.0)}
    assert (reqs["sip:a"].from_uri, reqs["sip:a"].obproxy, reqs["sip:a"].method) == (
        "sip:me@x",
        "sip:proxy",
        "INFO",
    )
    assert reqs["sip:b"].from_uri == "sip:dispatcher@localhost"
    assert reqs["sip:b"].sent_at == 3.0


def letters(d: Dispatcher, uri: str) -> str:
    for rec in d.list_records()["RECORDS"]:
        for t in rec["SET"]["TARGETS"]:
            if t["DEST"]["URI"] == uri:
                return str(t["DEST"]["FLAGS"])
    raise KeyError(uri)


def test_threshold_trying_then_inactive_then_back(build: Build) -> None:
    d = build("1 sip:a\n", probing_threshold=3, inactive_threshold=2, probing_mode=1)
    a = d.find(1, "sip:a")
    assert a is not None
    assert d.on_probe_result(a, None, None, 1) == []
    assert letters(d, "sip:a") == "TP" and d.state(a).health is Health.TRYING
    assert d.on_probe_result(a, 503, 0.01, 2) == []
    assert letters(d, "sip:a") == "TP"
    events = d.on_probe_result(a, None, None, 3)
    assert events == [DstEvent("dst-down", 1, "sip:a", None, "probe timeout", None)]
    assert letters(d, "sip:a") == "IP" and d.state(a).health is Health.INACTIVE
    assert d.on_probe_result(a, None, None, 4) == []  # stays inactive
    assert d.on_probe_result(a, 200, 0.01, 5) == []  # 1 of 2 successes
    assert letters(d, "sip:a") == "IP"
    events = d.on_probe_result(a, 200, 0.01, 6)
    assert [e.kind for e in events] == ["dst-up"] and events[0].code == 200
    assert letters(d, "sip:a") == "AP"
    assert d.state(a).probing_count == 0


def test_success_resets_failure_count(build: Build) -> None:
    d = build("1 sip:a\n", probing_threshold=2)
    a = d.find(1, "sip:a")
    assert a is not None
    d.on_probe_result(a, None, None, 1)
    d.on_probe_result(a, 200, 0.01, 2)
    d.on_probe_result(a, None, None, 3)
    assert letters(d, "sip:a") == "TP"


def test_mode0_drops_probing_flag_after_a_reply(build: Build) -> None:
    d = build("1 sip:a 8\n1 sip:b 8\n", probing_mode=0)
    a, b = d.find(1, "sip:a"), d.find(1, "sip:b")
    assert a is not None and b is not None
    d.on_probe_result(a, 200, 0.01, 1)
    assert letters(d, "sip:a") == "AX"  # answered: no longer probed in mode 0
    d.on_probe_result(b, None, None, 1)
    assert letters(d, "sip:b") == "IX"
    assert probed(d, 0.0) == []


def test_mode3_keeps_probing_flag(build: Build) -> None:
    d = build("1 sip:a 8\n", probing_mode=3)
    a = d.find(1, "sip:a")
    assert a is not None
    d.on_probe_result(a, 200, 0.01, 1)
    assert letters(d, "sip:a") == "AP"
    d.set_state(
        DestTarget.uri(1, "sip:a"), parse_rpc_state("a")
    )  # P dropped by the operator meanwhile
    assert d.on_probe_result(a, None, None, 2) == []
    assert letters(d, "sip:a") == "AX"


def test_disabled_meanwhile_ignores_result(build: Build) -> None:
    d = build("1 sip:a\n")
    a = d.find(1, "sip:a")
    assert a is not None
    d.set_state(DestTarget.uri(1, "sip:a"), parse_rpc_state("d"))
    assert d.on_probe_result(a, None, None, 1) == []
    assert letters(d, "sip:a") == "DX"


@pytest.mark.parametrize(
    ("codes", "code", "ok"),
    [
        ("", 200, True),
        ("", 299, True),
        ("", 404, False),
        ("code=404", 404, True),
        ("code=404;class=3", 302, True),
        ("class=4", 480, True),
        ("class=4", 408, True),  # a 408 reply from the destination matches its class
        ("class=4", None, False),  # a locally generated 408 (timeout) never does
    ],
)
def test_reply_codes(build: Build, codes: str, code: int | None, ok: bool) -> None:
    d = build("1 sip:a\n", ping_reply_codes=codes)
    a = d.find(1, "sip:a")
    assert a is not None
    events = d.on_probe_result(a, code, 0.01, 1)
    assert (events == []) is ok


@pytest.mark.parametrize("bad", ["code=99", "class=7", "code=abc", "cod=404", "404"])
def test_reply_codes_validation(bad: str) -> None:
    with pytest.raises(ValueError):
        ReplyCodes(bad)


def test_initial_events(build: Build) -> None:
    d = build("1 sip:a 0 0 duid=A\n1 sip:b 1\n2 sip:c 4\n")
    assert d.initial_events() == [
        DstEvent("dst-down", 2, "sip:c", None, "startup"),
        DstEvent("dst-down", 1, "sip:b", None, "startup"),
        DstEvent("dst-up", 1, "sip:a", "A", "startup"),
    ]


def test_set_state_emits_no_events_and_ignores_thresholds(build: Build) -> None:
    d = build("1 sip:a\n", probing_threshold=5)
    assert d.set_state(DestTarget.uri(1, "sip:a"), parse_rpc_state("t")) == []
    assert letters(d, "sip:a") == "TX"


def test_mark_bypasses_thresholds(build: Build) -> None:
    d = build("1 sip:a\n", probing_threshold=5, probing_mode=1)
    events = d.mark(1, "sip:a")
    assert [e.kind for e in events] == ["dst-down"]
    assert letters(d, "sip:a") == "IP"
    d.mark(1, "sip:a", "a")
    assert letters(d, "sip:a") == "AX"
    d.mark(1, "sip:a", "tp")  # ds_mark_dst("tp"): trying becomes inactive at once
    assert letters(d, "sip:a") == "IP"
    with pytest.raises(ValueError):
        d.mark(1, "sip:a", "x")
    with pytest.raises(ValueError):
        d.mark(1, "sip:nope", "i")


def test_branch_results(build: Build) -> None:
    d = build("1 sip:a\n1 sip:b\n", mark_on_failure="ip")
    a, b = d.find(1, "sip:a"), d.find(1, "sip:b")
    assert a is not None and b is not None
    assert d.on_branch_result(a, 486, 1) == []  # not a failover code
    assert letters(d, "sip:a") == "AX"
    assert [e.reason for e in d.on_branch_result(a, 503, 1)] == ["branch reply 503"]
    assert [e.reason for e in d.on_branch_result(b, None, 1)] == ["branch timeout"]
    assert build("1 sip:a\n").on_branch_result(a, 503, 1) == []  # marking off by default


def test_latency_stats_math() -> None:
    s = LatencyStats()
    samples = [20, 22, 18, 25, 19, 21, 20, 23, 17, 24, 30, 20]
    for x in samples:
        s.update(x, 0.9)
    n = len(samples)
    mean = sum(samples) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in samples) / (n - 1))
    assert s.count == n
    assert s.average == pytest.approx(mean)
    assert s.stdev == pytest.approx(std)
    assert (s.min, s.max) == (17, 30)
    # EST follows the average for 9 samples, then EWMA with new weight 0.1.
    est = sum(samples[:9]) / 9
    for x in samples[9:]:
        est = est * 0.9 + x * 0.1
    assert s.estimate == pytest.approx(est)


def test_latency_stable_average_trains_estimator() -> None:
    s = LatencyStats()
    for _ in range(11):
        s.update(50, 0.9)
    assert s.count == 10000  # stdev < 0.5 after 10 samples: trained
    s.update(150, 0.9)
    assert s.average == pytest.approx(50 + 100 / 10001)
    assert s.estimate == pytest.approx(50 * 0.9 + 150 * 0.1)


def test_latency_from_probes_and_timeouts(build: Build) -> None:
    d = build("1 sip:a 8 0 latency=40\n1 sip:b 0\n", probing_mode=3)
    a, b = d.find(1, "sip:a"), d.find(1, "sip:b")
    assert a is not None and b is not None
    st = d.state(a)
    assert (st.latency.estimate, st.latency.count) == (40.0, 10000)  # initial estimate attr
    d.on_probe_result(a, 200, 0.060, 1)
    assert st.latency.max == 60
    assert st.latency.estimate == pytest.approx(40 * 0.9 + 60 * 0.1)
    d.on_probe_result(a, None, None, 2)
    d.on_probe_result(a, 408, 0.5, 3)  # a 408 reply counts as a timeout too
    assert st.latency.timeout == 2
    d.on_probe_result(b, 200, 0.010, 1)  # no P flag: no statistics (mode 3)
    assert not d.state(b).has_latency
    rec = d.list_records()["RECORDS"][0]["SET"]["TARGETS"]
    lat = {t["DEST"]["URI"]: t["DEST"]["LATENCY"] for t in rec}
    assert lat["sip:a"]["TIMEOUT"] == 2 and lat["sip:a"]["MAX"] == 60
    assert lat["sip:b"] == {"AVG": 0.0, "STD": 0.0, "EST": 0.0, "MAX": 0, "TIMEOUT": 0}


def test_congestion_control_lowers_rweight(build: Build) -> None:
    d = build(
        "1 sip:a 8 0 cc=1;weight=50;rweight=50\n1 sip:b 8 0 cc=1;weight=50;rweight=50\n",
        probing_mode=1,
    )
    a = d.find(1, "sip:a")
    assert a is not None
    st = d.state(a)
    for _ in range(10):
        d.on_probe_result(a, 200, 0.020, 1)
    assert st.rweight == 50  # estimate == average: no congestion
    for _ in range(3):
        d.on_probe_result(a, 200, 0.400, 2)  # EST rises above AVG: congested
    assert st.rweight < 50
    sel = [d.select(1, Keys(), now=3, algorithm=11).destination.uri for _ in range(100)]  # type: ignore[union-attr]
    assert sel.count("sip:a") < 50


def test_result_for_a_destination_of_an_older_snapshot(build: Build) -> None:
    d = build("1 sip:a\n1 sip:b\n", reload_delta=0, probing_threshold=1)
    old = d.find(1, "sip:a")
    assert old is not None
    from sipfleet.dispatch import parse_list

    d.reload(parse_list("1 sip:a 0 1\n1 sip:b\n1 sip:c\n"), now=1)  # a's line changed
    assert d.find(1, "sip:a") is not old
    assert [e.kind for e in d.on_probe_result(old, None, None, 2)] == ["dst-down"]
    assert letters(d, "sip:a") == "IP"
    d.reload(parse_list("1 sip:b\n"), now=3)
    assert d.on_probe_result(old, 200, 0.01, 4) == []  # gone: ignored
