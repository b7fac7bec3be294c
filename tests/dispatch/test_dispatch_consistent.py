"""sipfleet's consistent-hash mode: only a lost destination's keys move."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import Build

from sipfleet.dispatch import Keys, Selection
from sipfleet.dispatch.flags import parse_rpc_state
from sipfleet.dispatch.target import DestTarget

TEN = "".join(f"1 sip:10.0.0.{i}:5060 0 0 duid=m{i}\n" for i in range(10))
N_KEYS = 100_000


def assign(d, alg: int = 0) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(N_KEYS):
        sel = d.select(1, Keys(call_id=f"call-{i}@edge"), now=0, algorithm=alg, consistent=True)
        assert isinstance(sel, Selection)
        out.append(sel.destination.uri)
    return out


@pytest.fixture(scope="module")
def baseline() -> list[str]:
    import random

    from sipfleet.config import DispatcherConfig
    from sipfleet.dispatch import Dispatcher, parse_list

    d = Dispatcher(DispatcherConfig().to_settings(), parse_list(TEN), rng=random.Random(1))
    return assign(d)


def _check_moves(before: list[str], after: list[str], gone: str) -> None:
    moved = Counter(a for b, a in zip(before, after, strict=True) if b != a)
    # Nothing but the lost destination's keys moved ...
    assert all(b == gone for b, a in zip(before, after, strict=True) if b != a)
    assert sum(moved.values()) == before.count(gone)
    assert gone not in after
    # ... and they spread over the other nine within 20% of even.
    even = before.count(gone) / 9
    assert len(moved) == 9
    for uri, n in moved.items():
        assert abs(n - even) <= 0.2 * even, (uri, n, even)


def test_even_spread_to_start_with(baseline: list[str]) -> None:
    counts = Counter(baseline)
    assert len(counts) == 10
    for n in counts.values():
        assert abs(n - N_KEYS / 10) <= 0.05 * N_KEYS / 10


def test_disable_one_of_ten(build: Build, baseline: list[str]) -> None:
    d = build(TEN)
    gone = "sip:10.0.0.3:5060"
    d.set_state(DestTarget.uri(1, gone), parse_rpc_state("d"))
    _check_moves(baseline, assign(d), gone)


def test_remove_one_of_ten_by_reload(build: Build, baseline: list[str]) -> None:
    d = build(TEN.replace("1 sip:10.0.0.7:5060 0 0 duid=m7\n", ""))
    _check_moves(baseline, assign(d), "sip:10.0.0.7:5060")


def test_kamailio_modulo_moves_all_to_the_neighbour(build: Build) -> None:
    """The contrast: plain modulo hashing gives a dead node's calls to one neighbour."""
    d = build(TEN)
    before = [
        d.select(1, Keys(call_id=f"c{i}"), now=0, algorithm=0).destination.uri for i in range(5000)
    ]  # type: ignore[union-attr]
    d.set_state(DestTarget.uri(1, "sip:10.0.0.3:5060"), parse_rpc_state("i"))
    after = [
        d.select(1, Keys(call_id=f"c{i}"), now=0, algorithm=0).destination.uri for i in range(5000)
    ]  # type: ignore[union-attr]
    receivers = {a for b, a in zip(before, after, strict=True) if b != a}
    assert len(receivers) == 1


@pytest.mark.parametrize("alg", [1, 2, 3, 5, 7])
def test_other_hash_algorithms_are_consistent_too(build: Build, alg: int) -> None:
    d = build(TEN)
    keys = Keys(from_uri="sip:alice@x", to_uri="sip:bob@y", ruri="sip:bob@z", auth_username="carol")
    first = d.select(1, keys, now=0, algorithm=alg, hash_string="s", consistent=True)
    assert isinstance(first, Selection) and len(first.candidates) == 10
    assert len({c.uri for c in first.candidates}) == 10  # failover order: next best scores
    d.set_state(DestTarget.uri(1, first.destination.uri), parse_rpc_state("i"))
    second = d.select(1, keys, now=0, algorithm=alg, hash_string="s", consistent=True)
    assert isinstance(second, Selection)
    assert second.destination is first.candidates[1]


def test_weights_shape_the_shares(build: Build) -> None:
    d = build("1 sip:big 0 0 weight=75\n1 sip:small 0 0 weight=25\n")
    counts = Counter(
        d.select(1, Keys(call_id=f"k{i}"), now=0, algorithm=0, consistent=True).destination.uri  # type: ignore[union-attr]
        for i in range(20_000)
    )
    assert abs(counts["sip:big"] / 20_000 - 0.75) < 0.02


def test_config_switch_and_use_default(build: Build) -> None:
    d = build("1 sip:a\n1 sip:b\n1 sip:dflt 0 -1\n", consistent_hash=True, use_default=True)
    sel = d.select(1, Keys(call_id="x"), now=0, algorithm=0)
    assert isinstance(sel, Selection)
    assert [c.uri for c in sel.candidates][-1] == "sip:dflt"
    d.set_state(DestTarget.uri(1, "sip:a"), parse_rpc_state("i"))
    d.set_state(DestTarget.uri(1, "sip:b"), parse_rpc_state("i"))
    assert [c.uri for c in d.select(1, Keys(call_id="x"), now=0, algorithm=0).candidates] == [
        "sip:dflt"
    ]  # type: ignore[union-attr]
