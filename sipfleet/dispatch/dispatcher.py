"""The Dispatcher: the current generation and runtime state, and the one
facade the rest of sipfleet calls.

Pure: no sockets, no event loop, no clock; whatever depends on time takes
``now`` (monotonic seconds). The adapter sends the probes it is told to,
reports results, and feeds reloads. Each concern lives in its own module;
this class owns the current generation and delegates:

- generation.py: a snapshot with its runtime, and what a reload carries over
- select.py: choosing destinations (every algorithm)
- probing.py: probe rounds and replies; health.py: state transitions
- latency.py: latency statistics and congestion control
- overload.py: overload control (algorithm 64)
- target.py and admin.py: naming destinations and setting their state
- listing.py: ``dispatcher.list``

Lifecycle of a reload: ``begin_reload(now)`` applies ``reload_delta`` (and
stamps the time even if the reload then fails, as Kamailio does);
``build`` may run in a worker thread; ``install`` swaps the new generation
in with one assignment.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from sipfleet.dispatch._gc import gc_paused
from sipfleet.dispatch.admin import admin_states as _admin_states
from sipfleet.dispatch.admin import set_state as _set_state
from sipfleet.dispatch.destination import (
    Destination,
    DestinationSpec,
    StateKey,
    make_destination,
    normalize_uri,
)
from sipfleet.dispatch.errors import DestinationError, DispatcherError
from sipfleet.dispatch.flags import DS_INACTIVE, DS_PROBING, parse_mark_state
from sipfleet.dispatch.generation import Generation, ReloadResult, next_generation
from sipfleet.dispatch.health import (
    DST_DOWN,
    DST_UP,
    PROBE_ALL,
    DstEvent,
    ProbeRequest,
    apply_state,
)
from sipfleet.dispatch.listing import list_records, parse_mode
from sipfleet.dispatch.overload import oc_records, oc_set_attrs
from sipfleet.dispatch.probing import Prober
from sipfleet.dispatch.runtime import SetRun
from sipfleet.dispatch.select import LoadView, NoDestination, Selection, SelectKeys
from sipfleet.dispatch.select import select_routes as _select_routes
from sipfleet.dispatch.select import select_set as _select_set
from sipfleet.dispatch.settings import DispatcherSettings
from sipfleet.dispatch.snapshot import Resolver, Snapshot, build_snapshot
from sipfleet.dispatch.state import AdminState, DestState, OverloadState
from sipfleet.dispatch.target import DestTarget, locate, lookup

__all__ = ["Dispatcher", "SpecSource"]


class SpecSource(Protocol):
    """What ``Dispatcher.from_store`` needs of a store."""

    def load(self) -> list[DestinationSpec]: ...
    def load_admin_states(self) -> dict[StateKey, AdminState]: ...


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
        self._prober = Prober(now)
        self.reconfigure(config)
        self._reload_time: float | None = None
        snapshot = build_snapshot(specs, resolver=resolver, skip_bad=config.skip_bad_destinations)
        self._gen, _ = next_generation(snapshot, None)
        if admin_states:
            self._gen.restore_admin(admin_states)

    def reconfigure(self, config: DispatcherSettings) -> None:
        """Take new ``[dispatcher]`` settings (a SIGHUP); sets and state stay."""
        self.config = config
        self._prober.configure(
            config, config.reply_codes(), config.latency_estimator_alpha / 1000.0
        )
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

    def lookup(self, target: DestTarget) -> list[tuple[Destination, DestState]]:
        """The destinations ``target`` names (by URI, by duid, or a whole set)."""
        return lookup(self._gen.runs, target)

    def state(self, dest: Destination) -> DestState:
        """Runtime state of a destination (also one from an older snapshot)."""
        found = locate(self._gen.runs, dest)
        if found is None:
            raise KeyError(f"{dest!r} is not loaded")
        return found[1]

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
        cfg = self.config
        return _select_set(
            self._gen.runs,
            set_id,
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
        return self._select_routes(
            self._gen.runs, self._rng, rules, keys, now, limit, hash_string, load, consistent
        )

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
        runs = dict(self._gen.runs)
        saved_oc: list[tuple[OverloadState, int]] = []
        for set_id, _ in rules:
            run = runs.get(set_id)
            if run is not None:
                runs[set_id] = run.copy()
                for st in run.states:
                    if st.oc is not None:
                        saved_oc.append((st.oc, st.oc.ocidx))
        shadow = random.Random()
        shadow.setstate(self._rng.getstate())
        try:
            return self._select_routes(
                runs, shadow, rules, keys, now, limit, hash_string, load, consistent
            )
        finally:
            for oc, idx in saved_oc:
                oc.ocidx = idx

    def _select_routes(
        self,
        runs: Mapping[int, SetRun],
        rng: random.Random,
        rules: Sequence[tuple[int, int]],
        keys: SelectKeys,
        now: float,
        limit: int,
        hash_string: str | None,
        load: LoadView | None,
        consistent: bool | None,
    ) -> Selection | NoDestination:
        cfg = self.config
        return _select_routes(
            runs,
            rules,
            keys,
            now=now,
            rng=rng,
            limit=limit,
            hash_string=hash_string,
            load=load,
            consistent=cfg.consistent_hash if consistent is None else consistent,
            use_default=cfg.use_default,
            failover=cfg.failover,
            user_only=cfg.hash_user_only,
        )

    # -- health: probes, branches, marks -------------------------------------

    def next_probe_at(self) -> float | None:
        """When ``due_probes`` next has work, or None while probing is off."""
        return self._prober.next_at()

    def due_probes(self, now: float) -> list[ProbeRequest]:
        """The OPTIONS to send now (one round every ``ping_interval``).

        A destination whose last probe is unanswered for less than
        ``ping_timeout`` is not probed again this round.
        """
        return self._prober.due(self._gen.runs.values(), now)

    def on_probe_result(
        self, dest: Destination, code: int | None, rtt: float | None, now: float, reason: str = ""
    ) -> list[DstEvent]:
        """Apply an OPTIONS outcome; return dst-up/dst-down events.

        ``code`` None is a timeout or a transport failure (a locally made
        408: always a failure, whatever ``ping_reply_codes`` says); ``rtt``
        is seconds from send to reply, None when unknown.
        """
        found = locate(self._gen.runs, dest)
        if found is None:
            return []
        run, st, d = found
        return self._prober.on_result(run, st, d, code, rtt, reason)

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
        found = locate(self._gen.runs, dest)
        if found is None:
            return []
        run, st, d = found
        reason = "branch timeout" if code is None else f"branch reply {code}"
        cfg = self.config
        return apply_state(
            run,
            st,
            d,
            self._mark_state,
            1,
            reason,
            code,
            cfg.probing_threshold,
            cfg.inactive_threshold,
        )

    def mark(
        self, set_id: int, uri: str, state: str = "", *, reason: str = "marked"
    ) -> list[DstEvent]:
        """``ds_mark_addr``: set a state with thresholds bypassed (T means I).

        ``state`` in ds_mark_dst letters; empty means inactive (plus probing
        in probing mode 1). Raises ValueError for bad letters or an unknown
        destination.
        """
        cfg = self.config
        bits = (
            parse_mark_state(state)
            if state
            else DS_INACTIVE | (DS_PROBING if cfg.probing_mode == PROBE_ALL else 0)
        )
        run = self._gen.runs.get(set_id)
        i = run.dset.find_uri(uri) if run is not None else None
        if run is None or i is None:
            raise ValueError(f"destination {uri!r} not found in set {set_id}")
        return apply_state(
            run,
            run.states[i],
            run.entries[i],
            bits,
            1,
            reason,
            None,
            cfg.probing_threshold,
            cfg.inactive_threshold,
        )

    def initial_events(self, reason: str = "startup") -> list[DstEvent]:
        """A dst-up or dst-down for every destination's current state.

        Kamailio emits none at startup; sipfleet's gauges need a first value.
        """
        out: list[DstEvent] = []
        for run in self._gen.ordered():
            for d, st in zip(run.entries, run.states, strict=True):
                out.append(
                    DstEvent(DST_DOWN if st.skip else DST_UP, d.set_id, d.uri, d.attrs.duid, reason)
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
        gen: Generation
        with gc_paused():
            gen, result = next_generation(snapshot, self._gen)
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

    # -- admin state ----------------------------------------------------------

    def set_state(
        self,
        target: DestTarget,
        state: AdminState | int,
        *,
        since: float | None = None,
        by: str = "",
    ) -> list[Destination]:
        """The one admin setter: an ``AdminState`` (drain, undrain, disable)
        or Kamailio state bits (``dispatcher.set_state``; see admin.py).

        Returns the destinations whose admin state changed, stamped with
        ``since`` and ``by``, for the caller to persist. Raises
        DispatcherError(500, "State Update Failed") for a named destination
        that is not loaded.
        """
        return _set_state(self._gen.runs, target, state, since=since, by=by)

    def admin_states(self) -> dict[StateKey, AdminState]:
        """Every destination whose admin state is not ``enabled``."""
        return _admin_states(self._gen.runs)

    def ping_active(self, value: int | None = None) -> dict[str, int]:
        """``dispatcher.ping_active``: read, or set and return old and new."""
        return self._prober.ping_active(value)

    @property
    def probing_active(self) -> bool:
        return bool(self._prober.active)

    # -- listings and overload control ----------------------------------------

    def list_records(self, mode: object = None, *, load: LoadView | None = None) -> dict[str, Any]:
        """``dispatcher.list`` [short|full], as sent; RUNTIME needs the load view.

        Raises DispatcherError(500, "No Destination Sets") when empty.
        """
        return list_records(
            self._gen.ordered(),
            parse_mode(mode),
            latency=self.config.ping_latency_stats,
            load=load,
        )

    def oc_set_attrs(
        self, set_id: int, uri: str, rate: int, interval_ms: int, seq: int, now: float
    ) -> bool:
        """``ds_oc_set_attrs``: start overload control on a destination
        (see overload.py). Returns whether an entry was updated."""
        run = self._gen.runs.get(set_id)
        if run is None:
            return False
        return oc_set_attrs(run, uri, rate, interval_ms, seq, now, self._rng)

    def oclist(self, set_id: int) -> list[dict[str, Any]]:
        """``dispatcher.oclist``; DispatcherError(404, ...) for an unknown set."""
        run = self._gen.runs.get(set_id)
        if run is None:
            raise DispatcherError(404, "Destination Group Not Found")
        return oc_records(run)
