"""The Dispatcher: current snapshot, runtime state, and every operation on them.

Pure: no sockets, no event loop, no clock; whatever depends on time takes
``now`` (monotonic seconds). The adapter sends the probes it is told to,
reports results, and feeds reloads.

Lifecycle of a reload: ``begin_reload(now)`` applies ``reload_delta`` (and
stamps the time even if the reload then fails, as Kamailio does);
``build_snapshot`` may run in a worker thread; ``install`` swaps it in with
one assignment. Destinations that remain (same set and URI, compared
case-insensitively, else same set and duid) keep their runtime state object:
health, admin state, probing counters, latency, overload data. Kamailio
resets all of that on a full reload; sipfleet keeps it, except that an entry
whose state flags changed in the file takes the new flags.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sipfleet.dispatch._gc import gc_paused
from sipfleet.dispatch.destination import (
    Address,
    Destination,
    DestinationSpec,
    StateKey,
    make_destination,
    normalize_uri,
)
from sipfleet.dispatch.errors import DestinationError, DispatcherError
from sipfleet.dispatch.flags import (
    DS_INACTIVE,
    DS_PROBING,
    DS_STATE_BITS,
    DS_TRYING,
    parse_mark_state,
    parse_rpc_state,
    skip_dst,
)
from sipfleet.dispatch.health import (
    PROBE_ALL,
    DstEvent,
    ProbeRequest,
    event_for,
    probe_eligible,
    probe_result_state,
    update_state,
)
from sipfleet.dispatch.listing import MODE_FULL, MODE_NORMAL, MODE_SHORT, list_records
from sipfleet.dispatch.runtime import SetRun
from sipfleet.dispatch.select import (
    LoadView,
    NoDestination,
    NoDestinationReason,
    Selection,
    SelectKeys,
    concat,
    select_in_set,
)
from sipfleet.dispatch.settings import DispatcherSettings
from sipfleet.dispatch.snapshot import Resolver, Snapshot, build_snapshot
from sipfleet.dispatch.state import AdminState, DestState, LatencyStats, OverloadState

__all__ = ["Dispatcher", "ReloadResult", "SpecSource"]

_UINT32_MAX = 0xFFFFFFFF


class SpecSource(Protocol):
    """What ``Dispatcher.from_store`` needs of a store."""

    def load(self) -> list[DestinationSpec]: ...
    def load_admin_states(self) -> dict[StateKey, AdminState]: ...


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload, add or remove changed."""

    added: int
    removed: int
    kept: int
    warnings: tuple[str, ...] = ()
    events: tuple[DstEvent, ...] = ()


class _Generation:
    """A snapshot with its runtime: swapped in one assignment."""

    __slots__ = ("runs", "snapshot")

    def __init__(self, snapshot: Snapshot, runs: dict[int, SetRun]) -> None:
        self.snapshot = snapshot
        self.runs = runs

    def ordered(self) -> list[SetRun]:
        return [self.runs[s] for s in self.snapshot.set_order]


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


class Dispatcher:
    """Destination sets, selection, health and admin operations.

    ``rng`` drives algorithm 6 and the shuffles of the weight tables; give a
    seeded one for reproducible tests.
    """

    def __init__(
        self,
        config: DispatcherSettings,
        specs: Iterable[DestinationSpec] = (),
        *,
        now: float = 0.0,
        resolver: Resolver | None = None,
        rng: random.Random | None = None,
        admin_states: Mapping[StateKey, AdminState] | None = None,
    ) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._resolver = resolver
        self.reconfigure(config)
        self._ping_active = 1
        self._reload_time: float | None = None
        self._next_round = now
        snapshot = build_snapshot(specs, resolver=resolver, skip_bad=config.skip_bad_destinations)
        self._gen, _ = self._generation(snapshot, None)
        if admin_states:
            for run in self._gen.runs.values():
                for d, st in zip(run.entries, run.states, strict=True):
                    admin = admin_states.get(d.key)
                    if admin is not None:
                        st.set_admin(admin)
                        run.rw_dirty = True

    def reconfigure(self, config: DispatcherSettings) -> None:
        """Take new ``[dispatcher]`` settings (a SIGHUP); sets and state stay."""
        self.config = config
        self._reply_codes = config.reply_codes()
        self._alpha = config.latency_estimator_alpha / 1000.0
        self._failover_codes = frozenset(config.failover_codes)
        self._mark_state = (
            parse_mark_state(config.mark_on_failure) if config.mark_on_failure else None
        )

    @classmethod
    def from_store(
        cls,
        store: SpecSource,
        config: DispatcherSettings,
        *,
        now: float = 0.0,
        resolver: Resolver | None = None,
        rng: random.Random | None = None,
    ) -> Dispatcher:
        """Load destinations and persisted admin states from a store."""
        return cls(
            config,
            store.load(),
            now=now,
            resolver=resolver,
            rng=rng,
            admin_states=store.load_admin_states(),
        )

    # -- snapshot and lookups -------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._gen.snapshot

    def destinations(self) -> Iterable[Destination]:
        """Every destination, sets in Kamailio's walk order."""
        return self._gen.snapshot.destinations()

    def find(self, set_id: int, uri: str) -> Destination | None:
        """The first destination of a set with this URI (case-insensitive)."""
        run = self._gen.runs.get(set_id)
        if run is None:
            return None
        i = run.dset.find_uri(uri)
        return None if i is None else run.entries[i]

    def state(self, dest: Destination) -> DestState:
        """Runtime state of a destination (also one from an older snapshot)."""
        found = self._locate(dest)
        if found is None:
            raise KeyError(f"{dest!r} is not loaded")
        return found[1]

    def _locate(self, dest: Destination) -> tuple[SetRun, DestState, Destination] | None:
        gen = self._gen
        run = gen.runs.get(dest.set_id)
        if run is None:
            return None
        i = dest.index
        if 0 <= i < run.nr and run.entries[i] is dest:
            return run, run.states[i], dest
        # A destination of an older snapshot: the entry with its URI now.
        j = run.dset.find_uri(dest.uri)
        if j is None:
            return None
        return run, run.states[j], run.entries[j]

    # -- selection ------------------------------------------------------------

    def select(
        self,
        set_id: int,
        keys: SelectKeys,
        *,
        now: float,
        algorithm: int | None = None,
        limit: int = 0,
        hash_string: str | None = None,
        load: LoadView | None = None,
        consistent: bool | None = None,
    ) -> Selection | NoDestination:
        """Choose a destination and its failover candidates from one set.

        ``algorithm`` defaults to the configured one; ``limit`` caps the
        candidates (0 = no cap but MAX_CANDIDATES); ``hash_string`` is what
        algorithm 7 hashes; ``load`` is the dialog table (algorithm 10 and
        ``maxload``); ``consistent`` overrides the configured hash mode.
        """
        run = self._gen.runs.get(set_id)
        if run is None:
            return NoDestination(
                set_id, NoDestinationReason.NO_SET, f"destination set [{set_id}] not found"
            )
        cfg = self.config
        return select_in_set(
            run,
            cfg.algorithm if algorithm is None else algorithm,
            keys,
            now=now,
            rng=self._rng,
            limit=limit,
            hash_string=hash_string,
            load=load,
            consistent=cfg.consistent_hash if consistent is None else consistent,
            use_default=cfg.use_default,
            failover=cfg.failover,
            user_only=cfg.hash_user_only,
        )

    def select_routes(
        self,
        rules: Sequence[tuple[int, int]],
        keys: SelectKeys,
        *,
        now: float,
        limit: int = 0,
        hash_string: str | None = None,
        load: LoadView | None = None,
        consistent: bool | None = None,
    ) -> Selection | NoDestination:
        """Select over several (set, algorithm) rules in order, like
        ``ds_select_routes``: candidates of the primary set first, then of
        the backup sets; a set with nothing usable is passed over."""
        found: list[Selection] = []
        last: Selection | NoDestination | None = None
        for set_id, alg in rules:
            last = self.select(
                set_id,
                keys,
                now=now,
                algorithm=alg,
                limit=limit,
                hash_string=hash_string,
                load=load,
                consistent=consistent,
            )
            if isinstance(last, Selection):
                found.append(last)
        if found:
            return concat(found, limit if limit > 0 else 1 << 30)
        if last is None:
            raise ValueError("no routing rules")
        return last

    def preview(
        self,
        rules: Sequence[tuple[int, int]],
        keys: SelectKeys,
        *,
        now: float,
        limit: int = 0,
        hash_string: str | None = None,
        load: LoadView | None = None,
        consistent: bool | None = None,
    ) -> Selection | NoDestination:
        """``select_routes`` that changes nothing: the round-robin and weight
        cursors, the random generator and overload-control slots it moves are
        copies, so the next real pick is the one it would have been."""
        gen, rng = self._gen, self._rng
        runs = dict(gen.runs)
        saved_oc: list[tuple[OverloadState, int]] = []
        for set_id, _ in rules:
            run = runs.get(set_id)
            if run is not None:
                runs[set_id] = run.copy()
                for st in run.states:
                    if st.oc is not None:
                        saved_oc.append((st.oc, st.oc.ocidx))
        shadow = random.Random()
        shadow.setstate(rng.getstate())
        self._gen, self._rng = _Generation(gen.snapshot, runs), shadow
        try:
            return self.select_routes(
                rules,
                keys,
                now=now,
                limit=limit,
                hash_string=hash_string,
                load=load,
                consistent=consistent,
            )
        finally:
            self._gen, self._rng = gen, rng
            for oc, idx in saved_oc:
                oc.ocidx = idx

    # -- health: probes, branches, marks -------------------------------------

    def next_probe_at(self) -> float | None:
        """When ``due_probes`` next has work, or None while probing is off."""
        if self.config.ping_interval <= 0 or not self._ping_active:
            return None
        return self._next_round

    def due_probes(self, now: float) -> list[ProbeRequest]:
        """The OPTIONS to send now (one round every ``ping_interval``).

        A destination whose last probe is unanswered for less than
        ``ping_timeout`` is not probed again this round.
        """
        cfg = self.config
        if cfg.ping_interval <= 0 or not self._ping_active or now < self._next_round:
            return []
        self._next_round = now + cfg.ping_interval
        mode, timeout = cfg.probing_mode, cfg.ping_timeout
        out: list[ProbeRequest] = []
        for run in self._gen.runs.values():
            for d, st in zip(run.entries, run.states, strict=True):
                if not probe_eligible(st.flags(), d.flags, mode):
                    continue
                if st.probe_sent_at is not None and now - st.probe_sent_at < timeout:
                    continue
                st.probe_sent_at = now
                out.append(
                    ProbeRequest(
                        d, cfg.ping_method, d.attrs.ping_from or cfg.ping_from, d.attrs.obproxy, now
                    )
                )
        return out

    def on_probe_result(
        self, dest: Destination, code: int | None, rtt: float | None, now: float, reason: str = ""
    ) -> list[DstEvent]:
        """Apply an OPTIONS outcome; return dst-up/dst-down events.

        ``code`` None is a timeout or a transport failure (a locally made
        408: always a failure, whatever ``ping_reply_codes`` says); ``rtt``
        is seconds from send to reply, None when unknown.
        """
        found = self._locate(dest)
        if found is None:
            return []
        run, st, d = found
        st.probe_sent_at = None
        if self.config.ping_latency_stats:
            self._update_latency(run, st, d, code, rtt)
        ok = code is not None and self._reply_codes.accepts(code)
        state = probe_result_state(ok, st.flags(), self.config.probing_mode)
        if state is None:
            return []
        if not reason:
            reason = "probe timeout" if code is None else f"probe reply {code}"
        return self._apply(run, st, d, state, 0, reason, code)

    def on_branch_result(self, dest: Destination, code: int | None, now: float) -> list[DstEvent]:
        """Report how a forwarded request ended on a destination.

        With ``mark_on_failure`` set, a failover code or a timeout (None)
        marks the destination as Kamailio's ``ds_mark_dst`` would in a
        failure route.
        """
        if self._mark_state is None:
            return []
        if code is not None and code not in self._failover_codes:
            return []
        found = self._locate(dest)
        if found is None:
            return []
        run, st, d = found
        reason = "branch timeout" if code is None else f"branch reply {code}"
        return self._apply(run, st, d, self._mark_state, 1, reason, code)

    def mark(
        self, set_id: int, uri: str, state: str = "", *, reason: str = "marked"
    ) -> list[DstEvent]:
        """``ds_mark_addr``: set a state with thresholds bypassed (T means I).

        ``state`` in ds_mark_dst letters; empty means inactive (plus probing
        in probing mode 1). Raises ValueError for bad letters or an unknown
        destination.
        """
        bits = (
            parse_mark_state(state)
            if state
            else DS_INACTIVE | (DS_PROBING if self.config.probing_mode == PROBE_ALL else 0)
        )
        run = self._gen.runs.get(set_id)
        i = run.dset.find_uri(uri) if run is not None else None
        if run is None or i is None:
            raise ValueError(f"destination {uri!r} not found in set {set_id}")
        return self._apply(run, run.states[i], run.entries[i], bits, 1, reason, None)

    def _apply(
        self,
        run: SetRun,
        st: DestState,
        d: Destination,
        state: int,
        mode: int,
        reason: str,
        code: int | None,
    ) -> list[DstEvent]:
        cfg = self.config
        old, new = update_state(st, state, mode, cfg.probing_threshold, cfg.inactive_threshold)
        ev = event_for(d, old, new, reason, code)
        if ev is None:
            return []
        if st.rweight > 0:
            run.rw_dirty = True
        return [ev]

    def _update_latency(
        self, run: SetRun, st: DestState, d: Destination, code: int | None, rtt: float | None
    ) -> None:
        """``ds_update_latency``: statistics, and congestion control (cc=1)."""
        if not st.probing:
            return
        lat = st.latency
        timeout = code is None or code == 408
        if timeout and lat.timeout < _UINT32_MAX:
            lat.timeout += 1
        if rtt is None:
            return
        if not timeout:
            lat.update(int(rtt * 1000), self._alpha)
        entries, states = run.entries, run.states
        if not d.attrs.cc or d.attrs.weight <= 0:
            return
        if not all(e.attrs.cc for e in entries):
            # Kamailio recomputes only this entry's rweight and does not
            # rebuild the table unless every entry of the set has cc=1.
            st.rweight = self._cc_weight(d.attrs.weight, lat)[0]
            return
        total = congested = normal = 0
        apply = False
        for e, s in zip(entries, states, strict=True):
            if e.attrs.weight <= 0:
                continue
            aw, cms = self._cc_weight(
                e.attrs.weight, s.latency if s.has_latency else LatencyStats()
            )
            total += cms
            if aw == 0:
                congested += 1
            else:
                normal += 1
            if s is st and s.rweight != aw:
                s.rweight = aw
                apply = True
        if congested > 1 and normal == 0:
            # Every destination is congested: share by congestion ratio.
            for s in states:
                cms = int(s.latency.estimate - s.latency.average) if s.has_latency else 0
                aw = _cdiv(total << 4, cms or 1)
                if s.rweight != aw:
                    s.rweight = aw
                    apply = True
        if apply:
            run.rw_dirty = True

    @staticmethod
    def _cc_weight(weight: int, lat: LatencyStats) -> tuple[int, int]:
        """``ds_update_weighted_congestion_control``: (active weight, congestion ms)."""
        cms = max(int(lat.estimate - lat.average), 0)
        return max(weight - cms, 0), cms

    def initial_events(self, reason: str = "startup") -> list[DstEvent]:
        """A dst-up or dst-down for every destination's current state.

        Kamailio emits none at startup; sipfleet's gauges need a first value.
        """
        out: list[DstEvent] = []
        for run in self._gen.ordered():
            for d, st in zip(run.entries, run.states, strict=True):
                out.append(
                    DstEvent(
                        "dst-down" if st.skip else "dst-up", d.set_id, d.uri, d.attrs.duid, reason
                    )
                )
        return out

    # -- reload, add, remove --------------------------------------------------

    def begin_reload(self, now: float) -> None:
        """Apply ``reload_delta`` shared by reload, add and remove.

        Raises DispatcherError(500, "Ongoing reload") inside the window;
        otherwise stamps the time (kept even if the reload then fails).
        """
        delta = self.config.reload_delta
        if self._reload_time is not None and delta > 0 and now - self._reload_time < delta:
            raise DispatcherError(500, "Ongoing reload")
        self._reload_time = now

    def build(self, specs: Iterable[DestinationSpec]) -> Snapshot:
        """Build a snapshot with this dispatcher's resolver and load mode.

        Safe to run in a worker thread. Raises DestinationError.
        """
        return build_snapshot(
            specs,
            resolver=self._resolver,
            skip_bad=self.config.skip_bad_destinations,
            reuse=self._gen.snapshot.by_spec(),
        )

    def install(self, snapshot: Snapshot) -> ReloadResult:
        """Swap in a snapshot, carrying the state of remaining destinations."""
        with gc_paused():
            gen, result = self._generation(snapshot, self._gen)
        self._gen = gen
        return result

    def reload(self, specs: Iterable[DestinationSpec], now: float) -> ReloadResult:
        """``dispatcher.reload``: rate-limit, build, swap.

        Raises DispatcherError(500, "Ongoing reload") or (500, "Reload
        Failed") with the reason in ``detail``; the old sets stay in place.
        """
        self.begin_reload(now)
        try:
            snapshot = self.build(specs)
        except DestinationError as exc:
            raise DispatcherError(500, "Reload Failed", str(exc)) from exc
        return self.install(snapshot)

    def add(
        self,
        set_id: int,
        uri: str,
        flags: int = 0,
        priority: int = 0,
        attrs: str = "",
        *,
        now: float,
    ) -> ReloadResult:
        """``dispatcher.add``: add a destination in memory, keeping all state."""
        self.begin_reload(now)
        spec = DestinationSpec(set_id, uri, flags, priority, attrs)
        try:
            make_destination(spec)
        except DestinationError as exc:
            raise DispatcherError(500, "Adding dispatcher dst failed", str(exc)) from exc
        # Kamailio re-adds every entry in its walk order, then the new one.
        return self.install(self.build([*self._gen.snapshot.walk_specs(), spec]))

    def remove(self, set_id: int, uri: str, *, now: float) -> ReloadResult:
        """``dispatcher.remove``: drop every entry of the set with this URI.

        The match is exact (case-sensitive) after ``sip:`` is added, as in
        Kamailio's ``ds_remove_dst``; no match is not an error.
        """
        self.begin_reload(now)
        try:
            target = normalize_uri(uri)
        except ValueError as exc:
            raise DispatcherError(500, "Removing dispatcher dst failed", str(exc)) from exc
        keep = [
            d.spec
            for d in self._gen.snapshot.destinations()
            if not (d.set_id == set_id and d.uri == target)
        ]
        return self.install(self.build(keep))

    def _generation(
        self, snapshot: Snapshot, prev: _Generation | None
    ) -> tuple[_Generation, ReloadResult]:
        resolved = snapshot.resolved
        runs: dict[int, SetRun] = {}
        if prev is None or not prev.runs:
            for set_id, dset in snapshot.sets.items():
                runs[set_id] = SetRun(dset, [DestState(d, resolved.get(d)) for d in dset.entries])
            events: tuple[DstEvent, ...] = ()
            if prev is not None:  # everything is new
                events = tuple(
                    DstEvent(
                        "dst-down" if st.skip else "dst-up", d.set_id, d.uri, d.attrs.duid, "added"
                    )
                    for run in runs.values()
                    for d, st in zip(run.entries, run.states, strict=True)
                )
            result = ReloadResult(snapshot.count, 0, 0, snapshot.warnings, events)
            return _Generation(snapshot, runs), result
        by_key: dict[StateKey, DestState] = {}
        by_duid: dict[tuple[int, str], DestState] = {}
        for old_run in prev.runs.values():
            for old, old_st in zip(old_run.entries, old_run.states, strict=True):
                by_key.setdefault(old.key, old_st)
                if old.attrs.duid is not None:
                    by_duid.setdefault((old.set_id, old.attrs.duid.lower()), old_st)
        claimed: set[int] = set()
        added: list[DstEvent] = []
        kept = 0
        for set_id, dset in snapshot.sets.items():
            states: list[DestState] = []
            for d in dset.entries:
                moved = False
                st = by_key.get(d.key)
                if st is None and by_duid and d.attrs.duid is not None:
                    st = by_duid.get((set_id, d.attrs.duid.lower()))
                    moved = True
                if st is None or id(st) in claimed:
                    st = DestState(d, resolved.get(d))
                    kind = "dst-down" if st.skip else "dst-up"
                    added.append(DstEvent(kind, set_id, d.uri, d.attrs.duid, "added"))
                else:
                    claimed.add(id(st))
                    kept += 1
                    self._carry(st, d, resolved.get(d), moved)
                states.append(st)
            runs[set_id] = SetRun(dset, states)
        removed = sum(r.nr for r in prev.runs.values()) - kept
        result = ReloadResult(snapshot.count - kept, removed, kept, snapshot.warnings, tuple(added))
        return _Generation(snapshot, runs), result

    @staticmethod
    def _carry(st: DestState, d: Destination, addr: Address | None, moved: bool) -> None:
        flags = d.flags & DS_STATE_BITS
        if flags != st.config_flags:
            # The operator changed the entry's state in the source: obey it.
            st.set_flags(d.flags)
            st.probing_count = 0
            st.config_flags = flags
        if d.attrs.rweight != st.config_rweight:
            st.rweight = st.config_rweight = d.attrs.rweight
        if addr is not None or moved:
            # A duid found under a new URI: the old resolved address is stale.
            st.resolved = addr

    # -- RPC operations -------------------------------------------------------

    def set_state(self, state: str, set_id: int, address: str) -> list[StateKey]:
        """``dispatcher.set_state``: overwrite state bits; no thresholds, no events.

        ``address`` ``all`` means the whole set (an unknown set is then not an
        error, as in Kamailio). Returns the keys whose admin state changed,
        for the caller to persist. Raises DispatcherError with Kamailio's
        fault text.
        """
        bits = parse_rpc_state(state)
        run = self._gen.runs.get(set_id)
        if address == "all":
            return [] if run is None else self._reinit(run, range(run.nr), bits)
        i = run.dset.find_uri(address) if run is not None else None
        if run is None or i is None:
            raise DispatcherError(500, "State Update Failed")
        return self._reinit(run, (i,), bits)

    def set_duid_state(self, state: str, set_id: int, duid: str) -> list[StateKey]:
        """``dispatcher.set_duid_state``: as set_state, matching the duid."""
        bits = parse_rpc_state(state)
        run = self._gen.runs.get(set_id)
        if duid == "all":
            return [] if run is None else self._reinit(run, range(run.nr), bits)
        i = run.dset.find_duid(duid) if run is not None else None
        if run is None or i is None:
            raise DispatcherError(500, "State Update Failed")
        return self._reinit(run, (i,), bits)

    @staticmethod
    def _reinit(run: SetRun, indexes: Iterable[int], bits: int) -> list[StateKey]:
        """``ds_reinit_state``: clear I, T, D, P and set ``bits``.

        An operator's ``a`` also ends a drain (the destination takes calls
        again); ``i``, ``t`` and ``p`` leave a drain in force; ``d`` turns
        it into disabled.
        """
        changed: list[StateKey] = []
        for i in indexes:
            st = run.states[i]
            old_flags, old_admin = st.flags(), st.admin
            if old_admin is AdminState.DRAINING and not bits & (DS_INACTIVE | DS_TRYING):
                st.set_admin(AdminState.ENABLED)
            st.set_flags(bits)
            if st.admin is not old_admin:
                changed.append(run.entries[i].key)
            if st.rweight > 0 and skip_dst(old_flags) != skip_dst(st.flags()):
                run.rw_dirty = True
        return changed

    def set_admin(self, set_id: int, uri: str, admin: AdminState) -> bool:
        """Set an admin state directly (sipfleet's own API); False if unknown."""
        run = self._gen.runs.get(set_id)
        i = run.dset.find_uri(uri) if run is not None else None
        if run is None or i is None:
            return False
        st = run.states[i]
        was = st.skip
        st.set_admin(admin)
        if st.rweight > 0 and was != st.skip:
            run.rw_dirty = True
        return True

    def locate(self, set_id: int | None, address: str) -> list[tuple[Destination, DestState]]:
        """Destinations named by URI (within ``set_id``) or by duid (within
        ``set_id``, or in every set when None); URIs compare case-insensitively."""
        out: list[tuple[Destination, DestState]] = []
        by_uri = ":" in address
        for sid, run in self._gen.runs.items():
            if set_id is not None and sid != set_id:
                continue
            if by_uri:
                i = run.dset.find_uri(address)
                if i is not None:
                    out.append((run.entries[i], run.states[i]))
                continue
            for d, st in zip(run.entries, run.states, strict=True):
                if d.attrs.duid == address:
                    out.append((d, st))
        return out

    def set_admin_of(
        self,
        set_id: int | None,
        address: str,
        admin: AdminState,
        *,
        since: float | None = None,
        by: str = "",
    ) -> list[Destination]:
        """Set the admin state of the destinations ``locate`` finds; return
        those whose state changed (the caller persists them)."""
        changed: list[Destination] = []
        for d, st in self.locate(set_id, address):
            if st.admin is admin:
                continue
            was = st.skip
            st.set_admin(admin)
            st.admin_since = since
            st.admin_by = by
            run = self._gen.runs[d.set_id]
            if st.rweight > 0 and was != st.skip:
                run.rw_dirty = True
            changed.append(d)
        return changed

    def admin_states(self) -> dict[StateKey, AdminState]:
        """Every destination whose admin state is not ``enabled``."""
        out: dict[StateKey, AdminState] = {}
        for run in self._gen.runs.values():
            for d, st in zip(run.entries, run.states, strict=True):
                if st.admin is not AdminState.ENABLED:
                    out.setdefault(d.key, st.admin)
        return out

    def ping_active(self, value: int | None = None) -> dict[str, int]:
        """``dispatcher.ping_active``: read, or set and return old and new."""
        old = self._ping_active
        if value is None:
            return {"OldPingState": old}
        self._ping_active = value
        return {"NewPingState": value, "OldPingState": old}

    @property
    def probing_active(self) -> bool:
        return bool(self._ping_active)

    def list_records(
        self, full: bool = False, *, short: bool = False, load: LoadView | None = None
    ) -> dict[str, Any]:
        """``dispatcher.list`` ([short|full]); RUNTIME needs the load view.

        Raises DispatcherError(500, "No Destination Sets") when empty.
        """
        gen = self._gen
        if not gen.runs:
            raise DispatcherError(500, "No Destination Sets")
        mode = MODE_FULL if full else MODE_SHORT if short else MODE_NORMAL
        return list_records(gen.ordered(), mode, latency=self.config.ping_latency_stats, load=load)

    def oc_set_attrs(
        self, set_id: int, uri: str, rate: int, interval_ms: int, seq: int, now: float
    ) -> bool:
        """``ds_oc_set_attrs``: start overload control on a destination.

        For ``interval_ms`` (500 when 0) the destination is skipped for
        ``rate`` percent of algorithm-64 picks, ``rate`` clamped into
        [ocmin, ocmax]; an update with a ``seq`` not above the last is
        ignored. Returns whether an entry was updated.
        """
        run = self._gen.runs.get(set_id)
        if run is None:
            return False
        key = uri.lower()
        updated = False
        for d, st in zip(run.entries, run.states, strict=True):
            if d.key[1] != key:
                continue
            oc = st.oc
            if oc is None:
                oc = st.oc = OverloadState(d.attrs.ocrate, d.attrs.ocmin, d.attrs.ocmax)
            if oc.ocseq >= seq:
                continue
            oc.ocrate = min(max(rate, oc.ocmin), oc.ocmax)
            oc.prepare(self._rng)
            oc.octime = now + (interval_ms if interval_ms > 0 else 500) / 1000.0
            oc.ocseq = seq
            updated = True
        return updated

    def oclist(self, set_id: int) -> list[dict[str, Any]]:
        """``dispatcher.oclist``; DispatcherError(404, ...) for an unknown set."""
        run = self._gen.runs.get(set_id)
        if run is None:
            raise DispatcherError(404, "Destination Group Not Found")
        out: list[dict[str, Any]] = []
        for d, st in zip(run.entries, run.states, strict=True):
            oc = st.oc
            octime = oc.octime if oc is not None else 0.0
            out.append(
                {
                    "group": set_id,
                    "uri": d.uri,
                    "flags": st.flags() | (d.flags & ~DS_STATE_BITS),
                    "priority": d.priority,
                    "ocrate": oc.ocrate if oc is not None else d.attrs.ocrate,
                    "ocidx": oc.ocidx if oc is not None else 0,
                    "ocseq": oc.ocseq if oc is not None else 0,
                    "octime_sec": int(octime),
                    "octime_usec": round((octime - int(octime)) * 1e6),
                    "ocmin": oc.ocmin if oc is not None else d.attrs.ocmin,
                    "ocmax": oc.ocmax if oc is not None else d.attrs.ocmax,
                }
            )
        return out
