"""The immutable snapshot of destination sets, built in one pass.

Within a set, entries are ordered by priority, highest first; equal
priorities end up in reverse input order, as Kamailio's ``add_dest2list``
plus ``reindex_dests`` leave them. Sets are walked in Kamailio's AVL
post-order (``avl.py``), which is the order ``dispatcher.list`` prints.

Building does no per-entry work beyond validating the spec (cached by URI
and attrs text) and at most one resolver call for host names; tables that
only some algorithms use (weights, URI indexes, rendezvous seeds) are built
on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter

from sipfleet.dispatch._gc import gc_paused
from sipfleet.dispatch.avl import avl_postorder
from sipfleet.dispatch.destination import (
    Address,
    Destination,
    DestinationSpec,
    make_destination,
)
from sipfleet.dispatch.errors import DestinationError
from sipfleet.dispatch.flags import DS_NODNS
from sipfleet.dispatch.hashing import hrw_seed

__all__ = ["DestSet", "Resolver", "Snapshot", "build_snapshot"]

#: Resolves a host name to a next hop: (host, port or None, transport) ->
#: Address, or None when it does not resolve. Injected by the adapter (DNS);
#: called only at build time, for names, unless the entry has flag 16.
Resolver = Callable[[str, int | None, str], Address | None]

#: Bound of the warnings a snapshot keeps (the count is always exact).
MAX_WARNINGS = 100

_by_priority = attrgetter("priority")


class DestSet:
    """One destination set: its entries in Kamailio's set order. Immutable."""

    __slots__ = (
        "_duid_index",
        "_hrw_seeds",
        "_hrw_weights",
        "_uri_index",
        "entries",
        "rr14",
        "set_id",
    )

    def __init__(self, set_id: int, entries: tuple[Destination, ...]) -> None:
        self.set_id = set_id
        self.entries = entries
        first = entries[0].priority
        # Algorithm 14 (6.1): round-robin when every entry shares one
        # priority above 0, serial otherwise.
        self.rr14 = first > 0 and all(d.priority == first for d in entries)
        self._uri_index: dict[str, int] | None = None
        self._duid_index: dict[str, int] | None = None
        self._hrw_seeds: tuple[int, ...] | None = None
        self._hrw_weights: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def find_uri(self, uri: str) -> int | None:
        """Index of the first entry whose URI matches, case-insensitively."""
        if self._uri_index is None:
            index: dict[str, int] = {}
            for i, d in enumerate(self.entries):
                index.setdefault(d.key[1], i)
            self._uri_index = index
        return self._uri_index.get(uri.lower())

    def find_duid(self, duid: str) -> int | None:
        """Index of the first entry whose duid matches, case-insensitively."""
        if self._duid_index is None:
            index: dict[str, int] = {}
            for i, d in enumerate(self.entries):
                if d.attrs.duid is not None:
                    index.setdefault(d.attrs.duid.lower(), i)
            self._duid_index = index
        return self._duid_index.get(duid.lower())

    def hrw_seeds(self) -> tuple[int, ...]:
        """Per-entry rendezvous seeds: from the duid, else the URI (lower-case)."""
        if self._hrw_seeds is None:
            self._hrw_seeds = tuple(
                hrw_seed("duid:" + d.attrs.duid.lower() if d.attrs.duid else d.key[1])
                for d in self.entries
            )
        return self._hrw_seeds

    def hrw_weights(self) -> tuple[int, ...] | None:
        """Per-entry weights for weighted rendezvous, None when all are equal."""
        if self._hrw_weights is None:
            weights = tuple(d.attrs.weight or 1 for d in self.entries)
            self._hrw_weights = weights if len(set(weights)) > 1 else ()
        return self._hrw_weights or None


class Snapshot:
    """Every destination set at one moment. Never mutated after build."""

    __slots__ = (
        "_by_spec",
        "_set_order",
        "count",
        "insertion_order",
        "resolved",
        "sets",
        "warning_count",
        "warnings",
    )

    def __init__(
        self,
        sets: dict[int, DestSet],
        insertion_order: tuple[int, ...],
        resolved: dict[Destination, Address],
        warnings: tuple[str, ...] = (),
        warning_count: int = 0,
    ) -> None:
        self.sets = sets
        self.insertion_order = insertion_order
        self._set_order: tuple[int, ...] | None = None
        self._by_spec: dict[DestinationSpec, Destination] | None = None
        self.resolved = resolved
        self.warnings = warnings
        self.warning_count = warning_count
        self.count = sum(len(s) for s in sets.values())

    @property
    def set_order(self) -> tuple[int, ...]:
        """Set ids in Kamailio's walk order (computed on first use)."""
        if self._set_order is None:
            self._set_order = tuple(avl_postorder(self.insertion_order))
        return self._set_order

    def destinations(self) -> Iterable[Destination]:
        """Every destination, sets in Kamailio's walk order."""
        for set_id in self.set_order:
            yield from self.sets[set_id].entries

    def by_spec(self) -> dict[DestinationSpec, Destination]:
        """Each destination by the spec it was built from (for the next build)."""
        if self._by_spec is None:
            self._by_spec = {d.spec: d for s in self.sets.values() for d in s.entries}
        return self._by_spec

    def walk_specs(self) -> list[DestinationSpec]:
        """Specs in Kamailio's walk order, as ``dispatcher.add``/``remove`` re-add them."""
        return [d.spec for d in self.destinations()]


def build_snapshot(
    specs: Iterable[DestinationSpec],
    *,
    resolver: Resolver | None = None,
    skip_bad: bool = False,
    reuse: Mapping[DestinationSpec, Destination] | None = None,
) -> Snapshot:
    """Build a snapshot from specs in input order.

    Raises DestinationError on the first bad spec, unless ``skip_bad``
    (Kamailio's ``ds_load_mode`` 0), which skips it with a warning. A host
    name that the resolver cannot resolve is kept, unresolved, with a
    warning (Kamailio drops it; sipfleet resolves again at send time).

    ``reuse`` (the previous snapshot's ``by_spec()``) hands unchanged
    entries their Destination object again instead of building a new one.
    """
    with gc_paused():
        return _build(specs, resolver, skip_bad, reuse)


def _build(
    specs: Iterable[DestinationSpec],
    resolver: Resolver | None,
    skip_bad: bool,
    reuse: Mapping[DestinationSpec, Destination] | None,
) -> Snapshot:
    groups: dict[int, list[Destination]] = {}
    warnings: list[str] = []
    nwarn = 0
    # A copy to pop from: a spec listed twice gets a second, distinct object.
    pool = dict(reuse) if reuse else None
    for spec in specs:
        try:
            d = pool.pop(spec, None) if pool is not None else None
            if d is None:
                d = make_destination(spec)
        except DestinationError as exc:
            if not skip_bad:
                raise
            nwarn += 1
            if len(warnings) < MAX_WARNINGS:
                warnings.append(str(exc))
            continue
        group = groups.get(spec.set_id)
        if group is None:
            groups[spec.set_id] = [d]
        else:
            group.append(d)
    resolved: dict[Destination, Address] = {}
    if resolver is not None:
        for group in groups.values():
            for d in group:
                if d.address is None and not d.flags & DS_NODNS:
                    addr = resolver(d.host_name, d.port, d.transport)
                    if addr is None:
                        nwarn += 1
                        if len(warnings) < MAX_WARNINGS:
                            warnings.append(
                                f"could not resolve {d.host_name} (set {d.set_id} {d.uri})"
                            )
                    else:
                        resolved[d] = addr
    sets: dict[int, DestSet] = {}
    for set_id, group in groups.items():
        # Highest priority first; reverse=True keeps ties in (reversed) order.
        group.reverse()
        group.sort(key=_by_priority, reverse=True)
        for i, d in enumerate(group):
            d.index = i
        sets[set_id] = DestSet(set_id, tuple(group))
    return Snapshot(sets, tuple(groups), resolved, tuple(warnings), nwarn)
