"""The synchronous stores (SQLite, a list file) as an ``AsyncStore``.

Slow calls (reading the table, writes that commit) go to a worker thread,
as before; dialog batches run on the loop itself (see
``sipfleet.store.dialogs``: a WAL append is cheaper than a thread hop).
Nothing else writes under us that we could hear of, so ``changes()`` never
yields: a reload (RPC, SIGHUP) rereads the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from sipfleet.dispatch.destination import DestinationSpec, StateKey
from sipfleet.dispatch.state import AdminState
from sipfleet.store.base import AdminDetail, DestinationStore, StoreError
from sipfleet.store.dialogs import DialogRecord, DialogStore
from sipfleet.store.health import StoreHealth
from sipfleet.store.sqlite import SqliteStore

__all__ = ["LocalStore"]


class LocalStore:
    """``destinations`` (and ``dialogs`` when kept) behind the async interface."""

    def __init__(
        self, destinations: DestinationStore, dialogs: DialogStore | None = None, name: str = ""
    ) -> None:
        self.destinations = destinations
        self.dialogs = dialogs
        self.health = StoreHealth(name or repr(destinations))

    def __repr__(self) -> str:
        return repr(self.destinations)

    async def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            result = await asyncio.to_thread(fn, *args)
        except StoreError as e:
            self.health.failed(what, e)
            raise
        self.health.succeeded()
        return result

    async def init(self) -> None:
        if isinstance(self.destinations, SqliteStore):
            await self._call("init", self.destinations.init)

    async def load(self) -> list[DestinationSpec]:
        specs: list[DestinationSpec] = await self._call("load", self.destinations.load)
        return specs

    async def replace(self, specs: Iterable[DestinationSpec]) -> None:
        await self._call("replace", self.destinations.replace, list(specs))

    async def add(self, spec: DestinationSpec) -> None:
        await self._call("add", self.destinations.add, spec)

    async def remove(self, set_id: int, uri: str) -> int:
        n: int = await self._call("remove", self.destinations.remove, set_id, uri)
        return n

    async def load_admin_details(self) -> dict[StateKey, AdminDetail]:
        details: dict[StateKey, AdminDetail] = await self._call(
            "load_admin_details", self.destinations.load_admin_details
        )
        return details

    async def save_admin_state(
        self, key: StateKey, state: AdminState | None, since: float | None = None, by: str = ""
    ) -> None:
        await self._call(
            "save_admin_state", self.destinations.save_admin_state, key, state, since, by
        )

    async def load_dialogs(self, now_wall: float) -> list[DialogRecord]:
        if self.dialogs is None:
            return []
        records: list[DialogRecord] = await self._call("load_dialogs", self.dialogs.load, now_wall)
        return records

    async def apply_dialogs(
        self, puts: Sequence[DialogRecord], deletes: Sequence[tuple[bytes, bytes]]
    ) -> None:
        if self.dialogs is not None:
            self.dialogs.apply(puts, deletes)  # on the loop: see the module docstring

    async def checkpoint(self) -> None:
        if self.dialogs is not None:
            await asyncio.to_thread(self.dialogs.checkpoint)

    async def changes(self) -> AsyncIterator[None]:
        await asyncio.Event().wait()  # never: nobody tells us of edits to a file
        yield  # pragma: no cover

    def status(self) -> dict[str, Any]:
        return self.health.status()

    async def close(self) -> None:
        def close_all() -> None:
            try:
                if self.dialogs is not None:
                    self.dialogs.close()
            finally:
                self.destinations.close()

        await asyncio.to_thread(close_all)
