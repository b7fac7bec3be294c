"""Which destinations an operation names, and finding them.

A ``DestTarget`` says explicitly how it names destinations: by URI, by duid, or
every destination of a set; the caller chooses (an RPC method knows which
parameter it was given). ``set_id`` None means every set. URIs compare
case-insensitively and name the first entry with that URI in each set, as
Kamailio's ``ds_get_index`` walks; a duid names every entry carrying it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sipfleet.dispatch.destination import Destination
from sipfleet.dispatch.runtime import SetRun
from sipfleet.dispatch.state import DestState

__all__ = ["BY_DUID", "BY_URI", "WHOLE_SET", "DestTarget", "locate", "lookup"]

BY_URI = "uri"
BY_DUID = "duid"
WHOLE_SET = "set"


@dataclass(frozen=True, slots=True)
class DestTarget:
    """Destinations named by URI, by duid, or a whole set (``kind``)."""

    kind: str
    set_id: int | None
    name: str = ""

    @classmethod
    def uri(cls, set_id: int | None, uri: str) -> DestTarget:
        """The entry with this URI in ``set_id`` (in every set when None)."""
        return cls(BY_URI, set_id, uri)

    @classmethod
    def duid(cls, set_id: int | None, duid: str) -> DestTarget:
        """The entries with this duid in ``set_id`` (in every set when None)."""
        return cls(BY_DUID, set_id, duid)

    @classmethod
    def whole_set(cls, set_id: int) -> DestTarget:
        """Every destination of a set (Kamailio's ``all``)."""
        return cls(WHOLE_SET, set_id)


def lookup(runs: Mapping[int, SetRun], target: DestTarget) -> list[tuple[Destination, DestState]]:
    """The destinations ``target`` names, with their state, in set order."""
    out: list[tuple[Destination, DestState]] = []
    set_id, name = target.set_id, target.name
    for sid, run in runs.items():
        if set_id is not None and sid != set_id:
            continue
        if target.kind == BY_URI:
            i = run.dset.find_uri(name)
            if i is not None:
                out.append((run.entries[i], run.states[i]))
        elif target.kind == BY_DUID:
            for d, st in zip(run.entries, run.states, strict=True):
                if d.attrs.duid == name:
                    out.append((d, st))
        else:
            out.extend(zip(run.entries, run.states, strict=True))
    return out


def locate(
    runs: Mapping[int, SetRun], dest: Destination
) -> tuple[SetRun, DestState, Destination] | None:
    """A destination's set, state and current entry: itself, or for one of
    an older snapshot the entry with its URI now; None once it is gone."""
    run = runs.get(dest.set_id)
    if run is None:
        return None
    i = dest.index
    if 0 <= i < run.nr and run.entries[i] is dest:
        return run, run.states[i], dest
    j = run.dset.find_uri(dest.uri)
    if j is None:
        return None
    return run, run.states[j], run.entries[j]
