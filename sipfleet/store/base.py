"""The destination store interface every backend fits (list file, SQLite, PostgreSQL).

Stores are synchronous and may block on file or database I/O: the adapter
calls them from a worker thread, never from the event loop.

Errors:

    StoreError          the backend failed or holds data it cannot serve
                        (unreadable file, wrong table version, value too
                        long for its column)
    ListFileError       (from sipfleet.dispatch) a list file line is bad
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sipfleet.dispatch.destination import DestinationSpec, StateKey
from sipfleet.dispatch.state import AdminState

__all__ = ["EXAMPLE_SPECS", "AdminDetail", "DestinationStore", "StoreError"]

#: A persisted admin state, when it was set (wall clock) and by whom.
AdminDetail = tuple[AdminState, "float | None", str]

#: The two example destinations of KAMAILIO.md, for seeding a new store.
EXAMPLE_SPECS: tuple[DestinationSpec, ...] = (
    DestinationSpec(1, "sip:10.0.0.11:5060", 0, 10, "duid=media-1;weight=50;maxload=200"),
    DestinationSpec(
        1, "sip:10.0.0.12:5060", 8, 10, "duid=media-2;weight=50;ping_from=sip:lb@edge.example"
    ),
)


class StoreError(Exception):
    """A store could not do what was asked; the message says what and where."""


class DestinationStore(Protocol):
    """Where destinations and their persisted admin states live."""

    def load(self) -> list[DestinationSpec]:
        """Every destination, in stored order (file order, or table id order)."""
        ...

    def replace(self, specs: Iterable[DestinationSpec]) -> None:
        """Replace every destination at once (atomically where the backend can)."""
        ...

    def add(self, spec: DestinationSpec) -> None:
        """Store one more destination."""
        ...

    def remove(self, set_id: int, uri: str) -> int:
        """Drop the destinations of a set with this URI; return how many.

        URIs compare case-insensitively, ``sip:`` added where missing.
        """
        ...

    def load_admin_states(self) -> dict[StateKey, AdminState]:
        """Admin states that survive restarts, by (set id, lower-case URI)."""
        ...

    def load_admin_details(self) -> dict[StateKey, AdminDetail]:
        """The same, with when (wall clock) and by whom each was set."""
        ...

    def save_admin_state(
        self, key: StateKey, state: AdminState | None, since: float | None = None, by: str = ""
    ) -> None:
        """Persist an admin state; None or ENABLED forgets it."""
        ...

    def close(self) -> None:
        """Release files or connections."""
        ...
