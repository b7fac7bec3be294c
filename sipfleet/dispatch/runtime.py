"""Per-set runtime of one snapshot: cursors, weight tables, entry states.

A ``SetRun`` pairs an immutable ``DestSet`` with the ``DestState`` of each
entry (same order) and the mutable selection state Kamailio keeps in
``ds_set_t``: the round-robin cursor ``last``, and the 100-slot weight
(``wlist``, algorithm 9) and relative-weight (``rwlist``, algorithm 11)
tables with their cursors. A reload starts new cursors, as in Kamailio.
"""

from __future__ import annotations

import random

from sipfleet.dispatch.snapshot import DestSet
from sipfleet.dispatch.state import DestState

__all__ = ["SetRun"]

_SLOTS = 100


class SetRun:
    """One set of the current generation."""

    __slots__ = (
        "_rwlist",
        "_wlist",
        "dset",
        "entries",
        "last",
        "nr",
        "rw_dirty",
        "rwlast",
        "states",
        "wlast",
    )

    def __init__(self, dset: DestSet, states: list[DestState]) -> None:
        self.dset = dset
        self.entries = dset.entries
        self.states = states
        self.nr = len(dset.entries)
        self.last = 0
        self.wlast = 0
        self.rwlast = 0
        self._wlist: list[int] | None = None
        self._rwlist: list[int] | None = None
        self.rw_dirty = True

    def copy(self) -> SetRun:
        """The same entries and states with cursors and tables of its own: a
        selection on the copy leaves this one as it was (dry runs)."""
        other = SetRun(self.dset, self.states)
        other.last = self.last
        other.wlast = self.wlast
        other.rwlast = self.rwlast
        other._wlist = self._wlist
        other._rwlist = self._rwlist
        other.rw_dirty = self.rw_dirty
        return other

    def wlist(self, rng: random.Random) -> list[int]:
        """Algorithm 9's table, built once per snapshot (``dp_init_weights``).

        Each entry gets ``weight`` slots in set order until 100 are taken; a
        shortfall goes to the last entry; then the table is shuffled. When
        the first entry has no weight Kamailio leaves the table zeroed, so
        every pick starts at entry 0. Never rebuilt on state changes.
        """
        if self._wlist is None:
            if self.entries[0].attrs.weight == 0:
                self._wlist = [0] * _SLOTS
            else:
                table: list[int] = []
                for j, d in enumerate(self.entries):
                    room = _SLOTS - len(table)
                    if room <= 0:
                        break
                    table.extend([j] * min(d.attrs.weight, room))
                table.extend([self.nr - 1] * (_SLOTS - len(table)))
                rng.shuffle(table)
                self._wlist = table
        return self._wlist

    def rwlist(self, rng: random.Random) -> list[int]:
        """Algorithm 11's table over usable entries (``dp_init_relative_weights``).

        Each usable entry gets ``rweight * 100 // sum`` slots; the shortfall
        goes to the last one inserted; then shuffled. Rebuilt (lazily, on the
        next pick) after an entry with rweight goes up or down. With one
        entry, or no usable rweight at all, Kamailio keeps the old table
        (zeroed at first).
        """
        if self.rw_dirty:
            self.rw_dirty = False
            if self._rwlist is None:
                self._rwlist = [0] * _SLOTS
            if self.nr >= 2:
                rw_sum = sum(st.rweight for st in self.states if not st.skip)
                if rw_sum > 0:
                    table: list[int] = []
                    for j, st in enumerate(self.states):
                        if not st.skip:
                            table.extend([j] * (st.rweight * _SLOTS // rw_sum))
                    last_insert = table[-1] if table else self.nr - 1
                    table.extend([last_insert] * (_SLOTS - len(table)))
                    rng.shuffle(table)
                    self._rwlist = table
        assert self._rwlist is not None
        return self._rwlist
