"""Selection: every Kamailio algorithm's first pick, skip step and failover list."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import Build, FakeLoad

from sipfleet.dispatch import Keys, NoDestination, NoDestinationReason, Selection
from sipfleet.dispatch.flags import parse_rpc_state
from sipfleet.dispatch.hashing import ds_get_hash, uri_hash_keys
from sipfleet.dispatch.target import DestTarget

# Equal priorities end up in reverse file order: the set order is c, b, a.
ABC = "1 sip:a.example\n1 sip:b.example\n1 sip:c.example\n"
ORDER = ["sip:c.example", "sip:b.example", "sip:a.example"]
FIVE = "".join(f"1 sip:h{i}.example\n" for i in range(5))  # order h4 .. h0


def uris(sel: Selection | NoDestination) -> list[str]:
    assert isinstance(sel, Selection), sel
    return [d.uri for d in sel.candidates]


def pick(sel: Selection | NoDestination) -> str:
    return uris(sel)[0]


def test_set_order_priority_then_reverse_file_order(build: Build) -> None:
    d = build("1 sip:p0a 0 0\n1 sip:p5 0 5\n1 sip:p0b 0 0\n1 sip:p9 0 9\n1 sip:p5b 0 5\n")
    assert [x.uri for x in d.destinations()] == [
        "sip:p9",
        "sip:p5b",
        "sip:p5",
        "sip:p0b",
        "sip:p0a",
    ]
    assert [x.index for x in d.destinations()] == [0, 1, 2, 3, 4]


def test_round_robin_alternates_exactly(build: Build) -> None:
    d = build(ABC)
    picks = [pick(d.select(1, Keys(), now=0, algorithm=4)) for _ in range(30)]
    assert picks == ORDER * 10


def test_round_robin_skips_unusable_and_resumes_after_pick(build: Build) -> None:
    d = build(FIVE)  # h4 h3 h2 h1 h0
    d.set_state(DestTarget.uri(1, "sip:h3.example"), parse_rpc_state("i"))
    picks = [pick(d.select(1, Keys(), now=0, algorithm=4)) for _ in range(8)]
    assert picks == ["sip:h4.example", "sip:h2.example", "sip:h1.example", "sip:h0.example"] * 2


def test_round_robin_failover_list(build: Build) -> None:
    d = build(FIVE)
    d.set_state(DestTarget.uri(1, "sip:h2.example"), parse_rpc_state("d"))
    d.select(1, Keys(), now=0, algorithm=4)  # h4
    sel = d.select(1, Keys(), now=0, algorithm=4)
    # After h3: the following entries in set order, wrapping, skipping h2.
    assert uris(sel) == ["sip:h3.example", "sip:h1.example", "sip:h0.example", "sip:h4.example"]
    assert uris(d.select(1, Keys(), now=0, algorithm=8, limit=2)) == [
        "sip:h4.example",
        "sip:h3.example",
    ]


CALL_IDS = [f"{i}-a84b4c76e66710@pc33.atlanta.example.com" for i in range(50)]


@pytest.mark.parametrize("call_id", CALL_IDS[:10])
def test_hash_callid_pick_and_reinvite(build: Build, call_id: str) -> None:
    d = build(FIVE)
    sel = d.select(1, Keys(call_id=f"  {call_id} "), now=0, algorithm=0)
    expected = ds_get_hash(call_id) % 5
    assert pick(sel) == f"sip:h{4 - expected}.example"
    # A re-INVITE of the same call lands on the same destination.
    assert pick(d.select(1, Keys(method="INVITE", call_id=call_id), now=1, algorithm=0)) == pick(
        sel
    )


def test_hash_skips_to_next_slot_wrapping(build: Build) -> None:
    d = build(FIVE)
    for call_id in CALL_IDS:
        slot = ds_get_hash(call_id) % 5
        d.set_state(DestTarget.whole_set(1), parse_rpc_state("a"))
        d.set_state(DestTarget.uri(1, f"sip:h{4 - slot}.example"), parse_rpc_state("i"))
        got = pick(d.select(1, Keys(call_id=call_id), now=0, algorithm=0))
        assert got == f"sip:h{4 - (slot + 1) % 5}.example"  # the neighbour takes it all


@pytest.mark.parametrize(("alg", "field"), [(1, "from_uri"), (2, "to_uri"), (3, "ruri")])
def test_hash_uri_algorithms(build: Build, alg: int, field: str) -> None:
    d = build(FIVE)
    uri = "sip:alice@server.com:5060;transport=udp"
    sel = d.select(1, Keys(**{field: uri}), now=0, algorithm=alg)
    slot = ds_get_hash(*uri_hash_keys(uri)) % 5
    assert pick(sel) == f"sip:h{4 - slot}.example"
    assert isinstance(sel, Selection) and sel.algorithm == alg


def test_hash_uri_user_only(build: Build) -> None:
    d = build(FIVE, hash_user_only=True)
    a = pick(d.select(1, Keys(from_uri="sip:alice@one.example"), now=0, algorithm=1))
    b = pick(d.select(1, Keys(from_uri="sip:alice@two.example:5070"), now=0, algorithm=1))
    assert a == b == f"sip:h{4 - ds_get_hash('alice') % 5}.example"


def test_hash_bad_uri_is_no_destination(build: Build) -> None:
    sel = build(FIVE).select(1, Keys(from_uri="<garbage>"), now=0, algorithm=1)
    assert isinstance(sel, NoDestination) and sel.reason is NoDestinationReason.BAD_KEY
    assert not sel


def test_hash_auth_username_or_round_robin(build: Build) -> None:
    d = build(FIVE)
    sel = d.select(1, Keys(auth_username=" bob "), now=0, algorithm=5)
    assert pick(sel) == f"sip:h{4 - ds_get_hash('bob') % 5}.example"
    rr = [pick(d.select(1, Keys(), now=0, algorithm=5)) for _ in range(5)]
    assert rr == [f"sip:h{i}.example" for i in (4, 3, 2, 1, 0)]


def test_hash_configured_string(build: Build) -> None:
    d = build(FIVE)
    assert pick(d.select(1, Keys(), now=0, algorithm=7, hash_string="tenant-42")) == (
        f"sip:h{4 - ds_get_hash('tenant-42') % 5}.example"
    )
    for empty in (None, "", "  "):
        sel = d.select(1, Keys(), now=0, algorithm=7, hash_string=empty)
        assert isinstance(sel, NoDestination) and sel.detail == "String is empty!"


def test_random_is_uniform_and_skips(build: Build) -> None:
    d = build(FIVE, seed=7)
    d.set_state(DestTarget.uri(1, "sip:h0.example"), parse_rpc_state("d"))
    counts = Counter(pick(d.select(1, Keys(), now=0, algorithm=6)) for _ in range(5000))
    assert "sip:h0.example" not in counts
    # h1 takes its own slot and h0's (next slot, wrapping to h4? no: h0 is last)
    assert counts["sip:h4.example"] == pytest.approx(2000, rel=0.1)
    for h in ("sip:h3.example", "sip:h2.example", "sip:h1.example"):
        assert counts[h] == pytest.approx(1000, rel=0.15)


def test_serial_first_usable(build: Build) -> None:
    d = build("1 sip:low 0 1\n1 sip:high 0 9\n1 sip:mid 0 5\n")
    assert uris(d.select(1, Keys(), now=0, algorithm=8)) == ["sip:high", "sip:mid", "sip:low"]
    d.set_state(DestTarget.uri(1, "sip:high"), parse_rpc_state("i"))
    assert uris(d.select(1, Keys(), now=0, algorithm=8)) == ["sip:mid", "sip:low"]


def test_weight_80_20_within_2_percent(build: Build) -> None:
    d = build("1 sip:big 0 0 weight=80\n1 sip:small 0 0 weight=20\n")
    counts = Counter(pick(d.select(1, Keys(), now=0, algorithm=9)) for _ in range(10_000))
    assert abs(counts["sip:big"] / 10_000 - 0.8) <= 0.02
    assert abs(counts["sip:small"] / 10_000 - 0.2) <= 0.02


def test_weight_table_shortfall_and_not_rebuilt(build: Build) -> None:
    d = build("1 sip:w30 0 0 weight=30\n1 sip:w10 0 0 weight=10\n1 sip:last 0 0 weight=5\n")
    first = Counter(pick(d.select(1, Keys(), now=0, algorithm=9)) for _ in range(100))
    # Set order is last, w10, w30 (reverse file order): 5 + 10 + 30 slots,
    # the 55 missing ones go to the last entry of the set (w30).
    assert first == {"sip:last": 5, "sip:w10": 10, "sip:w30": 85}
    table = list(d._gen.runs[1].wlist(d._rng))
    d.set_state(DestTarget.uri(1, "sip:w30"), parse_rpc_state("i"))
    second = Counter(pick(d.select(1, Keys(), now=0, algorithm=9)) for _ in range(100))
    # Not rebuilt: w30's 85 slots fall to the next slot, wrapping to "last".
    assert d._gen.runs[1].wlist(d._rng) == table
    assert second == {"sip:last": 90, "sip:w10": 10}


def test_weight_first_entry_without_weight_means_first_entry(build: Build) -> None:
    d = build("1 sip:b 0 0 weight=90\n1 sip:a 0 0\n")  # order: a (no weight), b
    assert {pick(d.select(1, Keys(), now=0, algorithm=9)) for _ in range(50)} == {"sip:a"}


def test_rweight_distribution_and_rebuild_on_down(build: Build) -> None:
    d = build("1 sip:a 0 0 rweight=50\n1 sip:b 0 0 rweight=30\n1 sip:c 0 0 rweight=20\n")
    counts = Counter(pick(d.select(1, Keys(), now=0, algorithm=11)) for _ in range(1000))
    assert counts == {"sip:a": 500, "sip:b": 300, "sip:c": 200}
    d.mark(1, "sip:a", "ip")  # down: the table is rebuilt over b and c
    counts = Counter(pick(d.select(1, Keys(), now=0, algorithm=11)) for _ in range(1000))
    assert counts == {"sip:b": 600, "sip:c": 400}
    d.mark(1, "sip:a", "a")  # up again
    counts = Counter(pick(d.select(1, Keys(), now=0, algorithm=11)) for _ in range(1000))
    assert counts == {"sip:a": 500, "sip:b": 300, "sip:c": 200}


def test_rweight_truncation_goes_to_last_active(build: Build) -> None:
    d = build("1 sip:a 0 0 rweight=1\n1 sip:b 0 0 rweight=1\n1 sip:c 0 0 rweight=1\n")
    counts = Counter(pick(d.select(1, Keys(), now=0, algorithm=11)) for _ in range(100))
    # 33 slots each; the one left over goes to the last inserted (a).
    assert counts == {"sip:c": 33, "sip:b": 33, "sip:a": 34}


def test_call_load_least_loaded_and_maxload(build: Build, fake_load: FakeLoad) -> None:
    d = build(
        "1 sip:a 0 0 duid=A;maxload=5\n1 sip:b 0 0 duid=B;maxload=5\n1 sip:c 0 0 duid=C;maxload=5\n"
    )
    invite = Keys(method="INVITE", call_id="x")
    opened: list[str] = []
    for _ in range(15):
        sel = d.select(1, invite, now=0, algorithm=10, load=fake_load)
        assert isinstance(sel, Selection) and sel.track_load
        key = sel.destination.load_key
        fake_load.open(key)
        opened.append(key)
        assert all(n <= 5 for n in fake_load.loads.values())
    assert fake_load.loads == {"A": 5, "B": 5, "C": 5}
    full = d.select(1, invite, now=0, algorithm=10, load=fake_load)
    assert isinstance(full, NoDestination) and full.reason is NoDestinationReason.NO_CAPACITY
    fake_load.close("B")
    sel = d.select(1, invite, now=0, algorithm=10, load=fake_load)
    assert uris(sel) == ["sip:b"]  # the full ones are not failover candidates


def test_call_load_random_churn_never_exceeds_maxload(build: Build, fake_load: FakeLoad) -> None:
    import random

    rng = random.Random(3)
    d = build("".join(f"1 sip:m{i} 0 0 duid=M{i};maxload=5\n" for i in range(3)))
    open_calls: list[str] = []
    for _ in range(2000):
        if open_calls and rng.random() < 0.45:
            fake_load.close(open_calls.pop(rng.randrange(len(open_calls))))
            continue
        sel = d.select(1, Keys(method="INVITE"), now=0, algorithm=10, load=fake_load)
        if isinstance(sel, Selection):
            fake_load.open(sel.destination.load_key)
            open_calls.append(sel.destination.load_key)
        assert max(fake_load.loads.values(), default=0) <= 5


def test_call_load_ties_take_first_and_non_invite_hashes_call_id(
    build: Build, fake_load: FakeLoad
) -> None:
    d = build("1 sip:a 0 0 duid=A\n1 sip:b 0 0 duid=B\n1 sip:c\n")  # order c, b, a
    fake_load.loads = {"sip:c": 2, "B": 1, "A": 1}
    assert pick(d.select(1, Keys(), now=0, algorithm=10, load=fake_load)) == "sip:b"
    sel = d.select(1, Keys(method="OPTIONS", call_id="cid-1"), now=0, algorithm=10, load=fake_load)
    assert isinstance(sel, Selection) and sel.algorithm == 0 and not sel.track_load
    assert pick(sel) == pick(d.select(1, Keys(call_id="cid-1"), now=0, algorithm=0))


def test_parallel_takes_first_usable_and_forks_to_the_rest(build: Build) -> None:
    d = build(FIVE)
    d.set_state(DestTarget.uri(1, "sip:h4.example"), parse_rpc_state("i"))
    d.set_state(DestTarget.uri(1, "sip:h2.example"), parse_rpc_state("i"))
    sel = d.select(1, Keys(), now=0, algorithm=12)
    assert isinstance(sel, Selection) and sel.parallel
    # From the first usable entry on, every entry, whatever its state (ds_add_branches).
    assert uris(sel) == ["sip:h3.example", "sip:h2.example", "sip:h1.example", "sip:h0.example"]


def _set_latency(d, uri: str, est: float, avg: float = 0.0) -> None:  # type: ignore[no-untyped-def]
    dest = d.find(1, uri)
    st = d.state(dest)
    st.latency.estimate = est
    st.latency.average = avg


def test_latency_orders_by_priority_lowered_by_latency(build: Build) -> None:
    d = build("1 sip:fast 0 10\n1 sip:slow 0 10\n1 sip:mid 0 10\n")
    _set_latency(d, "sip:slow", 95)  # 10 - 95//10 = 1
    _set_latency(d, "sip:mid", 35)  # 10 - 3 = 7
    _set_latency(d, "sip:fast", 5)  # not above priority: 10
    assert uris(d.select(1, Keys(), now=0, algorithm=13)) == ["sip:fast", "sip:mid", "sip:slow"]
    d.set_state(DestTarget.uri(1, "sip:fast"), parse_rpc_state("i"))
    assert uris(d.select(1, Keys(), now=0, algorithm=13)) == ["sip:mid", "sip:slow"]


def test_latency_round_robin_among_equals(build: Build) -> None:
    d = build(ABC.replace("example", "example 0 10"))
    picks = [pick(d.select(1, Keys(), now=0, algorithm=13)) for _ in range(6)]
    assert picks == [u + "" for u in ORDER] * 2


def test_latency_with_cc_uses_congestion(build: Build) -> None:
    d = build("1 sip:a 0 10 cc=1\n1 sip:b 0 10 cc=1\n")  # order b, a
    _set_latency(d, "sip:b", est=500, avg=480)  # congestion 20 -> 10 - 2 = 8
    _set_latency(d, "sip:a", est=40, avg=39)  # congestion 1 -> 10
    assert pick(d.select(1, Keys(), now=0, algorithm=13)) == "sip:a"


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("1 sip:a 0 5\n1 sip:b 0 5\n1 sip:c 0 5\n", ["sip:c", "sip:b", "sip:a", "sip:c"]),  # rr
        ("1 sip:a 0 0\n1 sip:b 0 0\n", ["sip:b", "sip:b", "sip:b", "sip:b"]),  # priority 0: serial
        ("1 sip:a 0 5\n1 sip:b 0 6\n", ["sip:b", "sip:b", "sip:b", "sip:b"]),  # mixed: serial
    ],
)
def test_rr_or_serial(build: Build, text: str, expect: list[str]) -> None:
    d = build(text)
    assert [pick(d.select(1, Keys(), now=0, algorithm=14)) for _ in range(4)] == expect


def test_overload_control_skips_ocrate_percent(build: Build) -> None:
    d = build("1 sip:a 0 0 ocmax=100\n1 sip:b\n")  # order b, a
    assert d.oc_set_attrs(1, "SIP:A", 40, 10_000, 1, now=100.0)
    assert not d.oc_set_attrs(1, "sip:a", 90, 10_000, 1, now=100.0)  # same seq: ignored
    counts = Counter(pick(d.select(1, Keys(), now=101.0, algorithm=64)) for _ in range(1000))
    # Round-robin offers a every other pick; a skip hands the pick to b and
    # leaves the cursor on a, so a is offered 1/1.6 of the picks and takes
    # 60% of its offers: 375 of 1000 (the 100-slot table is exact per cycle).
    assert 365 <= counts["sip:a"] <= 385
    assert counts["sip:a"] + counts["sip:b"] == 1000
    # After the validity interval, no more skipping.
    counts = Counter(pick(d.select(1, Keys(), now=200.0, algorithm=64)) for _ in range(1000))
    assert counts == {"sip:a": 500, "sip:b": 500}
    oc = d.oclist(1)
    assert oc[1]["uri"] == "sip:a" and oc[1]["ocrate"] == 40 and oc[1]["ocseq"] == 1


def test_use_default_reserves_last_entry(build: Build) -> None:
    d = build("1 sip:a 0 9\n1 sip:b 0 8\n1 sip:c 0 7\n1 sip:dflt 0 0\n", use_default=True)
    picks = [pick(d.select(1, Keys(), now=0, algorithm=4)) for _ in range(6)]
    assert "sip:dflt" not in picks
    for call_id in CALL_IDS[:20]:
        slot = ds_get_hash(call_id) % 3  # hashing over nr - 1
        sel = d.select(1, Keys(call_id=call_id), now=0, algorithm=0)
        assert pick(sel) == ["sip:a", "sip:b", "sip:c"][slot]
        assert uris(sel)[-1] == "sip:dflt"  # the default closes the failover list
        assert len(uris(sel)) == 4
    for u in ("sip:a", "sip:b", "sip:c"):
        d.set_state(DestTarget.uri(1, u), parse_rpc_state("i"))
    assert uris(d.select(1, Keys(call_id="x"), now=0, algorithm=0)) == ["sip:dflt"]
    d.set_state(DestTarget.uri(1, "sip:dflt"), parse_rpc_state("i"))
    assert isinstance(d.select(1, Keys(call_id="x"), now=0, algorithm=0), NoDestination)


def test_failover_off_gives_one_candidate(build: Build) -> None:
    d = build(FIVE, failover=False)
    assert len(uris(d.select(1, Keys(), now=0, algorithm=4))) == 1


def test_no_set_and_all_unusable(build: Build) -> None:
    d = build(ABC)
    sel = d.select(9, Keys(), now=0, algorithm=4)
    assert isinstance(sel, NoDestination) and sel.reason is NoDestinationReason.NO_SET
    d.set_state(DestTarget.whole_set(1), parse_rpc_state("i"))
    for alg in (0, 4, 6, 8, 9, 11, 12, 13, 14, 64):
        sel = d.select(1, Keys(), now=0, algorithm=alg, hash_string="x")
        assert isinstance(sel, NoDestination), alg
        assert sel.reason is NoDestinationReason.ALL_UNUSABLE


def test_trying_is_still_selected(build: Build) -> None:
    d = build(ABC)
    d.set_state(DestTarget.whole_set(1), parse_rpc_state("t"))
    assert uris(d.select(1, Keys(), now=0, algorithm=8)) == ORDER


def test_unknown_algorithm(build: Build) -> None:
    with pytest.raises(ValueError):
        build(ABC).select(1, Keys(), now=0, algorithm=15)


def test_select_routes_primary_then_backup(build: Build) -> None:
    d = build("1 sip:p1\n1 sip:p2\n2 sip:b1\n")
    sel = d.select_routes([(1, 4), (2, 8)], Keys(), now=0)
    assert uris(sel) == ["sip:p2", "sip:p1", "sip:b1"]
    d.set_state(DestTarget.whole_set(1), parse_rpc_state("i"))
    assert uris(d.select_routes([(1, 4), (2, 8)], Keys(), now=0)) == ["sip:b1"]
    assert uris(d.select_routes([(1, 4), (2, 8)], Keys(), now=0, limit=1)) == ["sip:b1"]


def test_candidates_are_bounded(build: Build) -> None:
    d = build("".join(f"1 sip:10.0.{i // 256}.{i % 256}\n" for i in range(1000)))
    assert len(uris(d.select(1, Keys(), now=0, algorithm=4))) == 256
