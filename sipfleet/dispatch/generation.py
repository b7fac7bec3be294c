"""A generation: one snapshot with the runtime of its sets, and how a reload
makes the next one.

A reload builds a new ``Snapshot`` (maybe in a worker thread); the next
generation pairs it with a ``SetRun`` per set and the ``DestState`` of every
entry, swapped in by the ``Dispatcher`` with one assignment. Destinations
that remain (same set and URI, compared case-insensitively, else same set
and duid) keep their state object: health, admin state, probing counters,
latency, overload data. Kamailio resets all of that on a full reload;
sipfleet keeps it, except that an entry whose state flags changed in the
file takes the new flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sipfleet.dispatch.destination import Address, Destination, StateKey
from sipfleet.dispatch.flags import DS_STATE_BITS
from sipfleet.dispatch.health import DST_DOWN, DST_UP, DstEvent
from sipfleet.dispatch.runtime import SetRun
from sipfleet.dispatch.snapshot import Snapshot
from sipfleet.dispatch.state import AdminState, DestState

__all__ = ["Generation", "ReloadResult", "next_generation"]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload, add or remove changed."""

    added: int
    removed: int
    kept: int
    warnings: tuple[str, ...] = ()
    events: tuple[DstEvent, ...] = ()


class Generation:
    """A snapshot with its runtime: swapped in one assignment."""

    __slots__ = ("runs", "snapshot")

    def __init__(self, snapshot: Snapshot, runs: dict[int, SetRun]) -> None:
        self.snapshot = snapshot
        self.runs = runs

    def ordered(self) -> list[SetRun]:
        """The sets in Kamailio's walk order."""
        return [self.runs[s] for s in self.snapshot.set_order]

    def restore_admin(self, admin_states: Mapping[StateKey, AdminState]) -> None:
        """Apply persisted admin states (a start from a store)."""
        for run in self.runs.values():
            for d, st in zip(run.entries, run.states, strict=True):
                admin = admin_states.get(d.key)
                if admin is not None:
                    st.set_admin(admin)
                    run.rw_dirty = True


def _event(d: Destination, st: DestState, reason: str) -> DstEvent:
    return DstEvent(DST_DOWN if st.skip else DST_UP, d.set_id, d.uri, d.attrs.duid, reason)


def next_generation(snapshot: Snapshot, prev: Generation | None) -> tuple[Generation, ReloadResult]:
    """The generation of ``snapshot``, carrying the state of ``prev``'s
    remaining destinations; new ones get a dst-up or dst-down "added"
    event (none at all for the first generation)."""
    resolved = snapshot.resolved
    runs: dict[int, SetRun] = {}
    if prev is None or not prev.runs:
        for set_id, dset in snapshot.sets.items():
            runs[set_id] = SetRun(dset, [DestState(d, resolved.get(d)) for d in dset.entries])
        events: tuple[DstEvent, ...] = ()
        if prev is not None:  # everything is new
            events = tuple(
                _event(d, st, "added")
                for run in runs.values()
                for d, st in zip(run.entries, run.states, strict=True)
            )
        result = ReloadResult(snapshot.count, 0, 0, snapshot.warnings, events)
        return Generation(snapshot, runs), result
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
                added.append(_event(d, st, "added"))
            else:
                claimed.add(id(st))
                kept += 1
                _carry(st, d, resolved.get(d), moved)
            states.append(st)
        runs[set_id] = SetRun(dset, states)
    removed = sum(r.nr for r in prev.runs.values()) - kept
    result = ReloadResult(snapshot.count - kept, removed, kept, snapshot.warnings, tuple(added))
    return Generation(snapshot, runs), result


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
