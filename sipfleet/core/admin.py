"""The admin service: one path for every change of a destination's admin state.

``dispatcher.set_state`` / ``set_duid_state`` (Kamailio's flags) and
``dispatcher.drain`` / ``undrain`` (sipfleet's) all come here: the state
changes in memory, is stamped (when, by whom), written to the store under
one lock (so the last write is always the newest state), and announced by a
``state-changed`` event of one shape::

    {"set", "uri", "duid", "state", "admin_changed", "stored", "by"}

(``stored``: True written, False the store failed (a ``store-error`` event
too; the change holds in memory), None nothing to write or no store).
set_state names what the call named (one event per call); a drain names
each destination it changed (one event each), as before. A draining
destination with no calls left gives one ``drained`` event per drain.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from sipfleet.dispatch.destination import Destination, StateKey
from sipfleet.dispatch.dispatcher import Dispatcher
from sipfleet.dispatch.flags import parse_rpc_state
from sipfleet.dispatch.select import LoadView
from sipfleet.dispatch.state import AdminState, DestState
from sipfleet.dispatch.target import DestTarget

if TYPE_CHECKING:
    from sipfleet.store.base import AsyncStore

__all__ = ["AdminService", "Events", "LockFactory"]

log = logging.getLogger("sipfleet.rpc")

#: Makes the lock that serialises store writes (the adapter's: asyncio.Lock).
LockFactory = Callable[[], AbstractAsyncContextManager[Any]]


class Events(Protocol):
    """Where the core's events go (``sipfleet.aio.events.EventBus``): counted,
    the recent ones kept (bounded), handed on."""

    @property
    def counts(self) -> Counter[str]: ...
    @property
    def recent(self) -> deque[dict[str, Any]]: ...

    def emit(self, kind: str, data: dict[str, Any]) -> dict[str, Any]: ...


class AdminService:
    """set_state, set_duid_state, drain, undrain, drain_status, drained."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        load: LoadView,
        store: AsyncStore | None,
        events: Events,
        lock: LockFactory,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.dispatcher = dispatcher
        self.load = load
        self.store = store
        self.events = events
        self.wall = wall
        self._lock = lock()
        # The drain (by its start) each destination was last reported drained for.
        self._drained_reported: dict[StateKey, float | None] = {}

    # -- Kamailio's set_state ------------------------------------------------------
    async def set_state(self, method: str, state: str, group: int, target: str, by: str) -> None:
        """``dispatcher.set_state`` (target: a URI or "all") or ``set_duid_state``
        (a duid); raises DispatcherError as the dispatcher does."""
        bits = parse_rpc_state(state)  # the state is checked first
        if target == "all":
            named = DestTarget.whole_set(group)
        elif method == "set_state":
            named = DestTarget.uri(group, target)
        else:
            named = DestTarget.duid(group, target)
        changed = [x.key for x in self.dispatcher.set_state(named, bits, by=by)]
        stored = await self._persist(changed, by)
        duid = method == "set_duid_state"
        self._announce(
            group,
            None if duid else target,
            target if duid else None,
            state,
            len(changed),
            stored,
            by,
        )

    # -- drain -------------------------------------------------------------------
    async def drain(self, target: DestTarget, by: str) -> list[dict[str, Any]]:
        """No new calls to these destinations; calls on them finish."""
        return await self._set_admin(target, AdminState.DRAINING, by)

    async def undrain(self, target: DestTarget, by: str) -> list[dict[str, Any]]:
        return await self._set_admin(target, AdminState.ENABLED, by)

    async def _set_admin(
        self, target: DestTarget, admin: AdminState, by: str
    ) -> list[dict[str, Any]]:
        d = self.dispatcher
        found = d.lookup(target)
        changed = d.set_state(target, admin, by=by) if found else []
        stored = await self._persist([x.key for x in changed], by)
        for x in changed:
            self._announce(x.set_id, x.uri, x.duid, admin.value, 1, stored, by)
            if admin is AdminState.DRAINING:
                self.check_drained(x)
        return [self.entry(x, st) for x, st in found]

    def drain_status(self, target: DestTarget | None) -> list[dict[str, Any]]:
        d = self.dispatcher
        if target is None:
            return [
                self.entry(x, st)
                for x in d.destinations()
                if (st := d.state(x)).admin is AdminState.DRAINING
            ]
        return [self.entry(x, st) for x, st in d.lookup(target)]

    def entry(self, d: Destination, st: DestState) -> dict[str, Any]:
        """One destination as the drain methods list it."""
        active = self.load.load(d.load_key)  # [cluster]: every node's calls
        draining = st.admin is AdminState.DRAINING
        return {
            "SET": d.set_id,
            "URI": d.uri,
            "DUID": d.duid,
            "STATE": st.admin.value,
            "HEALTH": st.health.value,
            "SINCE": iso(st.admin_since),
            "FOR": int(self.wall() - st.admin_since) if st.admin_since else None,
            "BY": st.admin_by or None,
            "ACTIVE_CALLS": active,
            "DRAINED": draining and active == 0,
        }

    def on_idle(self, dest: object) -> None:
        """The dialog table's hook: a destination has no calls left."""
        if isinstance(dest, Destination):
            self.check_drained(dest)

    def check_drained(self, d: Destination) -> None:
        """A ``drained`` event, once per drain, when a draining destination is idle."""
        try:
            st = self.dispatcher.state(d)
        except KeyError:
            return
        if st.admin is AdminState.DRAINING and self.load.load(d.load_key) == 0:
            if self._drained_reported.get(d.key) == st.admin_since:
                return
            self._drained_reported[d.key] = st.admin_since
            waited = self.wall() - st.admin_since if st.admin_since else None
            self.events.emit(
                "drained", {"set": d.set_id, "uri": d.uri, "duid": d.duid, "waited": waited}
            )

    # -- the one path to the store and the event ------------------------------------
    def _announce(
        self,
        set_id: int | None,
        uri: str | None,
        duid: str | None,
        state: str,
        admin_changed: int,
        stored: bool | None,
        by: str,
    ) -> None:
        self.events.emit(
            "state-changed",
            {
                "set": set_id,
                "uri": uri,
                "duid": duid,
                "state": state,
                "admin_changed": admin_changed,
                "stored": stored,
                "by": by,
            },
        )

    async def _persist(self, keys: Sequence[StateKey], by: str) -> bool | None:
        """Stamp and save the admin state of ``keys`` as it is when written.

        None: nothing to save (or no store); False: the store failed (logged,
        and a ``store-error`` event): the change holds until the next restart.
        """
        d = self.dispatcher
        since = self.wall()
        for key in keys:
            dest = d.find(key[0], key[1])
            if dest is not None:
                st = d.state(dest)
                st.admin_since, st.admin_by = since, by
        store = self.store
        if not keys or store is None:
            return None
        async with self._lock:
            writes: list[tuple[StateKey, AdminState | None, float | None, str]] = []
            for key in keys:
                dest = d.find(key[0], key[1])
                if dest is None:
                    writes.append((key, None, None, by))
                else:
                    st = d.state(dest)
                    writes.append((key, st.admin, st.admin_since, st.admin_by))
            error: Exception | None = None
            for key, admin, when, who in writes:
                try:
                    await store.save_admin_state(key, admin, when, who)
                except Exception as e:  # the others are still tried (and kept for a retry)
                    error = e
            if error is not None:
                log.error(
                    "cannot persist the admin state of %d destinations: %s", len(writes), error
                )
                self.events.emit(
                    "store-error", {"operation": "save_admin_state", "error": str(error)}
                )
                return False
        return True


def iso(ts: float | None) -> str | None:
    """A wall-clock time as UTC ISO 8601 (seconds), None for None."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
