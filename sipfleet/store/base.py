"""The store interfaces: ``DestinationStore`` (synchronous: list file,
SQLite) and ``AsyncStore`` (what the running process uses: every backend,
the synchronous ones through ``sipfleet.store.local.LocalStore``).

Synchronous stores may block on file or database I/O: call them from a
worker thread, never from the event loop. ``sipfleet.store.open.open_store``
picks the backend from the configured URL.

Errors:

    StoreError          the backend failed or holds data it cannot serve
                        (unreadable file, wrong table version, value too
                        long for its column)
    ListFileError       (from sipfleet.dispatch) a list file line is bad
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sipfleet.dispatch.destination import DestinationSpec, StateKey
from sipfleet.dispatch.state import AdminState

if TYPE_CHECKING:
    from sipfleet.store.dialogs import DialogRecord

__all__ = ["EXAMPLE_SPECS", "AdminDetail", "AsyncStore", "DestinationStore", "StoreError"]

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


class AsyncStore(Protocol):
    """The store as the running process sees it: destinations, admin states,
    open dialogs, and a signal when the destinations changed under us.

    Writes that a backend can retry on its own (a database server that is
    unreachable) are kept and retried by the backend, which says so in
    ``status()``; reads raise StoreError.
    """

    async def init(self) -> None:
        """Create the tables unless present (Kamailio's, then sipfleet's)."""
        ...

    async def load(self) -> list[DestinationSpec]:
        """Every destination, in stored order (file order, or table id order)."""
        ...

    async def replace(self, specs: Iterable[DestinationSpec]) -> None:
        """Replace every destination at once (atomically where the backend can)."""
        ...

    async def add(self, spec: DestinationSpec) -> None:
        """Store one more destination."""
        ...

    async def remove(self, set_id: int, uri: str) -> int:
        """Drop the destinations of a set with this URI; return how many."""
        ...

    async def load_admin_details(self) -> dict[StateKey, AdminDetail]:
        """Persisted admin states, with when (wall clock) and by whom each was set."""
        ...

    async def save_admin_state(
        self, key: StateKey, state: AdminState | None, since: float | None = None, by: str = ""
    ) -> None:
        """Persist an admin state; None or ENABLED forgets it."""
        ...

    async def load_dialogs(self, now_wall: float) -> list[DialogRecord]:
        """Every open dialog not yet expired (expired ones are dropped)."""
        ...

    async def apply_dialogs(
        self, puts: Sequence[DialogRecord], deletes: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """One batch: write these dialogs, forget those (keyed by call-id, from-tag)."""
        ...

    async def checkpoint(self) -> None:
        """Housekeeping the backend wants now and then (SQLite: write the log back)."""
        ...

    def changes(self) -> AsyncIterator[None]:
        """Yields each time the destinations changed under us (another writer),
        or may have (the server came back); one consumer."""
        ...

    def status(self) -> dict[str, Any]:
        """``{"url": ..., "ok": bool, "error": str | None, ...}`` for status RPCs."""
        ...

    async def close(self) -> None:
        """Release files, connections and background tasks."""
        ...
