"""Destination selection: every Kamailio algorithm, plus consistent hashing.

A port of ``ds_manage_routes`` (dispatch.c): an algorithm gives a first
slot; the common step takes it modulo the set size (``nr - 1`` with
``use_default``, which keeps the last entry as fallback) and, while the
entry is inactive or disabled, moves to the next slot, wrapping. With
failover on, the candidates are the chosen entry, then the following ones
in set order, wrapping, skipping unusable ones (and full ones for
algorithm 10), capped by ``limit``; with ``use_default`` the last entry
closes the list.

Per-call cost is flat in the set size for algorithms 0-9, 11, 12, 14 and
64 (one hash or one table slot, then the skip walk over unusable entries
only); algorithm 10 (least loaded), 13 (latency order) and the
consistent-hash mode look at every entry of the set by nature.
"""

from __future__ import annotations

import enum
import heapq
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Protocol

from sipfleet.dispatch.destination import Destination
from sipfleet.dispatch.hashing import (
    ds_get_hash,
    hrw_key,
    hrw_score,
    hrw_weighted_score,
    uri_hash_keys,
)
from sipfleet.dispatch.runtime import SetRun
from sipfleet.dispatch.state import DestState

__all__ = [
    "HASH_ALGORITHMS",
    "MAX_CANDIDATES",
    "Keys",
    "LoadView",
    "NoDestination",
    "NoDestinationReason",
    "SelectKeys",
    "Selection",
    "concat",
    "select_in_set",
    "select_routes",
    "select_set",
]

#: Algorithms whose first pick is a hash of the request: the ones the
#: consistent-hash mode replaces.
HASH_ALGORITHMS = frozenset({0, 1, 2, 3, 5, 7})

#: Hard bound of a candidate list (Kamailio's limit 0 means "unlimited"):
#: a proxy never tries more, and a 100k-entry set must not cost 100k.
MAX_CANDIDATES = 256

_BIG = 0x7FFFFFFF


class SelectKeys(Protocol):
    """What selection reads from a request; the proxy provides it."""

    @property
    def method(self) -> str: ...
    @property
    def call_id(self) -> str: ...
    @property
    def from_uri(self) -> str: ...
    @property
    def to_uri(self) -> str: ...
    @property
    def ruri(self) -> str: ...
    @property
    def auth_username(self) -> str | None:
        """Proxy-Authorization username, else Authorization username (alg 5)."""
        ...


@dataclass(frozen=True, slots=True)
class Keys:
    """A plain SelectKeys, for tests, RPC and tools."""

    method: str = "INVITE"
    call_id: str = ""
    from_uri: str = ""
    to_uri: str = ""
    ruri: str = ""
    auth_username: str | None = None


class LoadView(Protocol):
    """Open dialogs per load key (a duid, or the URI of a duid-less entry)."""

    def load(self, duid: str) -> int: ...


class NoDestinationReason(enum.Enum):
    NO_SET = "no such set"
    ALL_UNUSABLE = "no usable destination"
    NO_CAPACITY = "every usable destination is at maxload"
    BAD_KEY = "no hash key"


@dataclass(frozen=True, slots=True)
class NoDestination:
    """Selection found nothing; ``detail`` says why in words."""

    set_id: int
    reason: NoDestinationReason
    detail: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen destination first, then failover candidates in order.

    ``parallel`` (algorithm 12): fork to every candidate at once instead of
    one after another. ``track_load`` (algorithm 10 on an INVITE): the call
    counts against ``destination.load_key``, and moves with failover.
    """

    set_id: int
    algorithm: int
    candidates: tuple[Destination, ...]
    parallel: bool = False
    track_load: bool = False

    def __bool__(self) -> bool:
        return True

    @property
    def destination(self) -> Destination:
        return self.candidates[0]


def _no(run: SetRun, reason: NoDestinationReason, detail: str) -> NoDestination:
    return NoDestination(run.dset.set_id, reason, detail)


def _hash_keys(
    alg: int, keys: SelectKeys, hash_string: str | None, user_only: bool
) -> tuple[str | None, str | None] | str | None:
    """The (key1, key2) an algorithm hashes; a str is an error; None means
    algorithm 5 found no username (round-robin instead)."""
    if alg == 0:
        return keys.call_id.strip(), None
    if alg in (1, 2, 3):
        uri = keys.from_uri if alg == 1 else keys.to_uri if alg == 2 else keys.ruri
        try:
            return uri_hash_keys(uri, user_only)
        except ValueError as exc:
            return str(exc)
    if alg == 5:
        user = (keys.auth_username or "").strip()
        return (user, None) if user else None
    text = (hash_string or "").strip()
    if not text:
        return "String is empty!"
    return text, None


def _least_loaded(run: SetRun, load: LoadView | None) -> int:
    """``ds_get_leastloaded``: fewest open calls among usable, non-full entries."""
    best = -1
    best_load = _BIG
    for j, st in enumerate(run.states):
        if st.skip:
            continue
        d = run.entries[j]
        n = load.load(d.load_key) if load is not None else 0
        if (d.attrs.maxload == 0 or n < d.attrs.maxload) and n < best_load:
            best = j
            best_load = n
    return best


def _oc_skip(st: DestState, now: float) -> bool:
    return st.oc is not None and st.oc.skip(now)


def _full(d: Destination, load: LoadView | None) -> bool:
    return d.attrs.maxload != 0 and load is not None and load.load(d.load_key) >= d.attrs.maxload


def _failover_list(
    run: SetRun, chosen: int, alg: int, cap: int, use_default: bool, load: LoadView | None
) -> list[Destination]:
    """``ds_manage_routes_fill_xavp`` plus the default entry at the end."""
    entries, states, nr = run.entries, run.states, run.nr
    out = [entries[chosen]]
    last = nr - 1 if use_default else -1
    for j in chain(range(chosen + 1, nr), range(chosen)):
        if len(out) >= cap:
            break
        if states[j].skip or j == last:
            continue
        if alg == 10 and _full(entries[j], load):
            continue
        out.append(entries[j])
    if use_default and chosen != nr - 1 and len(out) < cap:
        out.append(entries[nr - 1])
    return out


def _select_latency(
    run: SetRun, cap: int, use_default: bool, failover: bool
) -> Selection | NoDestination:
    """Algorithm 13 (``ds_manage_route_algo13``).

    From the round-robin cursor, each usable entry's priority is lowered by
    ``latency_estimate // priority`` (by the congestion, EST - AVG, with
    cc=1), not below 1; entries are then ordered by that priority (stable)
    and the first is chosen. There is no skip step.
    """
    entries, states, nr = run.entries, run.states, run.nr
    mod = nr - 1 if use_default and nr != 1 else nr
    z = run.last % nr
    ranked: list[tuple[int, int]] = []
    for _ in range(nr):
        st = states[z]
        if st.skip:
            ranked.append((-1, -1))
        else:
            prio = entries[z].priority
            lat = 0
            if st.has_latency:
                est = st.latency.estimate
                lat = int(est - st.latency.average) if entries[z].attrs.cc else int(est)
            handicap = lat // prio if lat > prio and prio > 0 else 0
            rprio = prio - handicap
            if rprio < 1 and prio > 0:
                rprio = 1
            ranked.append((z, rprio))
        z = (z + 1) % mod
    ranked.sort(key=lambda r: r[1], reverse=True)
    chosen = ranked[0][0]
    run.last = (chosen + 1) % nr
    if chosen < 0:
        return _no(run, NoDestinationReason.ALL_UNUSABLE, "no active destination")
    if not failover:
        return Selection(run.dset.set_id, 13, (entries[chosen],))
    out: list[Destination] = []
    seen: set[int] = set()
    for idx, _ in ranked:
        if len(out) >= cap:
            break
        # Kamailio can list an entry twice here when use_default shortens the
        # wrap; sipfleet lists each once.
        if idx < 0 or idx in seen or states[idx].skip or (use_default and idx == nr - 1):
            continue
        seen.add(idx)
        out.append(entries[idx])
    if use_default and chosen != nr - 1 and len(out) < cap:
        out.append(entries[nr - 1])
    return Selection(run.dset.set_id, 13, tuple(out))


def _select_consistent(
    run: SetRun,
    alg: int,
    key1: str | None,
    key2: str | None,
    cap: int,
    use_default: bool,
    failover: bool,
) -> Selection | NoDestination:
    """sipfleet's consistent mode: rendezvous hashing over usable entries.

    Every usable entry scores the key; the highest wins and the rest follow
    by score. A destination going away (removed, disabled, inactive) gives
    its keys to their second choices, spread evenly, and no other key
    moves. ``weight`` attributes, when they differ, weight the shares.
    """
    entries, states, nr = run.entries, run.states, run.nr
    n = nr - 1 if use_default and nr != 1 else nr
    key = hrw_key(key1, key2)
    seeds = run.dset.hrw_seeds()
    weights = run.dset.hrw_weights()
    scored: list[tuple[float, int]] = []
    if weights is None:
        for j in range(n):
            if not states[j].skip:
                scored.append((hrw_score(key, seeds[j]), j))
    else:
        for j in range(n):
            if not states[j].skip:
                scored.append((hrw_weighted_score(key, seeds[j], weights[j]), j))
    default = entries[nr - 1] if use_default and nr != 1 else None
    if not scored:
        if default is not None and not states[nr - 1].skip:
            return Selection(run.dset.set_id, alg, (default,))
        return _no(run, NoDestinationReason.ALL_UNUSABLE, "no active destination")
    if not failover:
        return Selection(run.dset.set_id, alg, (entries[max(scored)[1]],))
    out = [entries[j] for _, j in heapq.nlargest(cap, scored)]
    if default is not None and len(out) < cap:
        out.append(default)
    return Selection(run.dset.set_id, alg, tuple(out))


def select_in_set(
    run: SetRun,
    alg: int,
    keys: SelectKeys,
    *,
    now: float,
    rng: random.Random,
    limit: int = 0,
    hash_string: str | None = None,
    load: LoadView | None = None,
    consistent: bool = False,
    use_default: bool = False,
    failover: bool = True,
    user_only: bool = False,
) -> Selection | NoDestination:
    """Choose from one set with algorithm ``alg``; see the module docstring.

    ``limit`` caps the candidates (0 = Kamailio's unlimited, bounded here by
    MAX_CANDIDATES). Raises ValueError for an unknown algorithm.
    """
    nr = run.nr
    cap = min(limit, MAX_CANDIDATES) if limit > 0 else MAX_CANDIDATES
    states = run.states
    eff = alg
    track_load = False
    rr = False
    if consistent and alg in HASH_ALGORITHMS:
        got = _hash_keys(alg, keys, hash_string, user_only)
        if isinstance(got, str):
            return _no(run, NoDestinationReason.BAD_KEY, got)
        if got is not None:
            return _select_consistent(run, alg, got[0], got[1], cap, use_default, failover)
        rr = True  # algorithm 5 without a username: round-robin, as Kamailio
    if rr:
        h = run.last
    elif alg in HASH_ALGORITHMS:
        got = _hash_keys(alg, keys, hash_string, user_only)
        if isinstance(got, str):
            return _no(run, NoDestinationReason.BAD_KEY, got)
        if got is None:
            rr = True
            h = run.last
        else:
            h = ds_get_hash(got[0], got[1])
    elif alg == 4 or alg == 64:
        rr = True
        h = run.last
    elif alg == 6:
        h = rng.getrandbits(31)  # kam_rand(): 0..2^31-1
    elif alg == 8 or alg == 12:
        h = 0
    elif alg == 9:
        wl = run.wlist(rng)
        h = wl[run.wlast]
        run.wlast = (run.wlast + 1) % 100
    elif alg == 10:
        if keys.method.upper() != "INVITE":
            # Only an INVITE starts a call; other requests are hashed on
            # their Call-ID (algorithm 0) and carry no load.
            eff = 0
            h = ds_get_hash(keys.call_id.strip(), None)
        else:
            h = _least_loaded(run, load)
            if h < 0:
                return _no(run, NoDestinationReason.NO_CAPACITY, "every destination is full")
            track_load = True
    elif alg == 11:
        rw = run.rwlist(rng)
        h = rw[run.rwlast]
        run.rwlast = (run.rwlast + 1) % 100
    elif alg == 13:
        return _select_latency(run, cap, use_default, failover)
    elif alg == 14:
        if run.dset.rr14:
            rr = True
            h = run.last
        else:
            h = 0
    else:
        raise ValueError(f"unknown algorithm {alg}")
    if rr:
        run.last = (run.last + 1) % nr

    mod = nr - 1 if use_default and nr != 1 else nr
    h %= mod
    i = h
    oc = eff == 64
    while states[i].skip or (oc and _oc_skip(states[i], now)):
        i = (i + 1) % mod
        if i == h:
            if use_default:
                i = nr - 1
                if states[i].skip or (oc and _oc_skip(states[i], now)):
                    return _no(run, NoDestinationReason.ALL_UNUSABLE, "no active destination")
                break
            return _no(run, NoDestinationReason.ALL_UNUSABLE, "no active destination")
    if rr:
        run.last = (i + 1) % nr

    entries = run.entries
    if alg == 12:
        # Parallel forking (ds_add_branches): every entry after the chosen
        # one becomes a branch, whatever its state.
        return Selection(run.dset.set_id, 12, entries[i : i + MAX_CANDIDATES], parallel=True)
    if not failover:
        return Selection(run.dset.set_id, eff, (entries[i],), track_load=track_load)
    cands = _failover_list(run, i, eff, cap, use_default, load)
    return Selection(run.dset.set_id, eff, tuple(cands), track_load=track_load)


def concat(selections: Sequence[Selection], cap: int) -> Selection:
    """Join per-set selections in order (primary set, then backup sets)."""
    out: list[Destination] = []
    for sel in selections:
        out.extend(sel.candidates)
    first = selections[0]
    return Selection(
        first.set_id, first.algorithm, tuple(out[:cap]), first.parallel, first.track_load
    )


def select_set(
    runs: Mapping[int, SetRun],
    set_id: int,
    alg: int,
    keys: SelectKeys,
    *,
    now: float,
    rng: random.Random,
    limit: int,
    hash_string: str | None,
    load: LoadView | None,
    consistent: bool,
    use_default: bool,
    failover: bool,
    user_only: bool,
) -> Selection | NoDestination:
    """``select_in_set`` on set ``set_id`` of ``runs``; NO_SET when absent."""
    run = runs.get(set_id)
    if run is None:
        return NoDestination(
            set_id, NoDestinationReason.NO_SET, f"destination set [{set_id}] not found"
        )
    return select_in_set(
        run,
        alg,
        keys,
        now=now,
        rng=rng,
        limit=limit,
        hash_string=hash_string,
        load=load,
        consistent=consistent,
        use_default=use_default,
        failover=failover,
        user_only=user_only,
    )


def select_routes(
    runs: Mapping[int, SetRun],
    rules: Sequence[tuple[int, int]],
    keys: SelectKeys,
    *,
    now: float,
    rng: random.Random,
    limit: int,
    hash_string: str | None,
    load: LoadView | None,
    consistent: bool,
    use_default: bool,
    failover: bool,
    user_only: bool,
) -> Selection | NoDestination:
    """Select over several (set, algorithm) rules in order, like
    ``ds_select_routes``: candidates of the primary set first, then of the
    backup sets; a set with nothing usable is passed over. Raises
    ValueError for no rules."""
    found: list[Selection] = []
    last: Selection | NoDestination | None = None
    for set_id, alg in rules:
        last = select_set(
            runs,
            set_id,
            alg,
            keys,
            now=now,
            rng=rng,
            limit=limit,
            hash_string=hash_string,
            load=load,
            consistent=consistent,
            use_default=use_default,
            failover=failover,
            user_only=user_only,
        )
        if isinstance(last, Selection):
            found.append(last)
    if found:
        return concat(found, limit if limit > 0 else 1 << 30)
    if last is None:
        raise ValueError("no routing rules")
    return last
