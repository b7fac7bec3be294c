"""Kamailio's dispatcher.*, dlg.* and stats.* RPC methods on a running sipfleet.

Names, parameters, help texts (``system.methodHelp`` of Kamailio 5.6.3),
result shapes, strings and fault codes are Kamailio's, compared with the
real one in tests/e2e. This module is the glue between the registry and
the node's core (``sipfleet.core.node.Core``, as ``build_core`` makes it):
admin state changes go through its admin service (``sipfleet.core.admin``),
the store is the process's ``AsyncStore``.

Where sipfleet differs from Kamailio, on purpose:

- ``dispatcher.set_state`` / ``set_duid_state`` persist the admin state
  (disabled or not) in the store, so it survives reloads and restarts;
  health bits (inactive, trying, probing) are runtime only, as in Kamailio.
  A ``state-changed`` event names the change and who made it.
- ``dispatcher.add`` / ``dispatcher.remove`` write through to the store,
  so a later reload or restart keeps the change (Kamailio's are
  memory-only and the next reload undoes them). A store that refuses the
  write undoes the memory change and the call faults as Kamailio's own
  failure does ("Adding/Removing dispatcher dst failed"). As in Kamailio,
  both check (and stamp) the reload window before reading their params.
- A reload keeps the runtime state of the destinations that remain.
- ``stats.get_statistics`` serves the counters that mean the same as
  Kamailio's under Kamailio's names (``core:``, ``tmx:`` as Kamailio 5.6
  names the transaction group, ``dialog:``) and sipfleet's own under
  ``sipfleet:``.
- ``dlg.end_dlg`` of a dialog not yet answered sends nothing: the INVITE
  transaction still owns it (CANCEL is the caller's to send).

sipfleet's extras have names of their own: ``sipfleet.status`` and
``sipfleet.events``. ``dispatcher.oclist`` is Kamailio 6.0's (5.6 has none,
so its help text is sipfleet's). ``stats.fetch``, ``stats.fetchn`` and
``stats.clear_statistics`` are in ``sipfleet.control.statistics``, over
this module's ``StatsBook``.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sipfleet import __version__
from sipfleet.control.registry import (
    RPC_CALLER,
    Dialect,
    Method,
    Param,
    ParamKind,
    Registry,
    RpcFault,
)
from sipfleet.dispatch.destination import Destination, DestinationSpec, normalize_uri
from sipfleet.dispatch.dispatcher import Dispatcher
from sipfleet.dispatch.errors import DispatcherError
from sipfleet.dispatch.generation import ReloadResult
from sipfleet.dispatch.hashing import rpc_hash
from sipfleet.dispatch.health import DstEvent
from sipfleet.proxy.dialogs import ANSWERED, CONFIRMED, EARLY, Dialog
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import Target
from sipfleet.proxy.uac import extra_headers, split_routes, uri_in
from sipfleet.security.gate import STAT_NAMES
from sipfleet.sip.uri import URI

if TYPE_CHECKING:
    from sipfleet.core.admin import AdminService, Events, LockFactory
    from sipfleet.proxy.core import Proxy
    from sipfleet.store.base import AsyncStore

__all__ = [
    "RPC_CALLER",
    "AppLike",
    "Stat",
    "StatsBook",
    "dialog_record",
    "end_dialog",
    "register_methods",
]

log = logging.getLogger("sipfleet.rpc")

#: Extra names stats.get_statistics / reset_statistics read after the first,
#: like Kamailio's ``while (rpc->scan(ctx, "*s", ...))`` (bounded here).
_MAX_STAT_PARAMS = 32

# dlg.list: DLG_STATE_EARLY, _CONFIRMED_NA, _CONFIRMED
_KAMAILIO_DLG_STATE = {EARLY: 2, ANSWERED: 3, CONFIRMED: 4}


class _Router(Protocol):
    def invalidate(self) -> None: ...
    def target(self, dest: Destination) -> Target | None: ...


class AppLike(Protocol):
    """What the methods use of the node: ``sipfleet.core.node.Core``."""

    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def router(self) -> _Router: ...
    @property
    def proxy(self) -> Proxy: ...
    @property
    def store(self) -> AsyncStore | None: ...
    @property
    def events(self) -> Events: ...
    @property
    def admin(self) -> AdminService: ...
    @property
    def started_wall(self) -> float: ...
    @property
    def now(self) -> Callable[[], float]: ...
    @property
    def wall(self) -> Callable[[], float]: ...
    @property
    def new_lock(self) -> LockFactory: ...

    async def reload(self, by: str = "rpc", *, rate_limited: bool = True) -> ReloadResult: ...


def _fault(e: DispatcherError) -> RpcFault:
    return RpcFault(e.code, e.message)


# -- stats ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stat:
    group: str
    name: str
    read: Callable[[], int]
    resettable: bool = True  # False: a gauge, Kamailio's STAT_NO_RESET


Stat = _Stat  # the public name, for modules adding statistics


class StatsBook:
    """Kamailio's statistics over sipfleet's counters: ``group:name = value``.

    Kamailio sorts groups and names (byte order) and looks a bare name up
    in every group; ``group:name`` is not a name it knows. A reset keeps a
    baseline instead of writing to the core's counters, which other readers
    (benchmarks, the dashboard) keep seeing whole.
    """

    def __init__(self, stats: Callable[[], Iterable[_Stat]]) -> None:
        self._stats = stats
        self._baseline: dict[tuple[str, str], int] = {}

    def _sorted(self) -> list[_Stat]:
        return sorted(self._stats(), key=lambda s: (s.group, s.name))

    def _value(self, s: _Stat) -> int:
        value = s.read()
        if s.resettable:
            value -= self._baseline.get((s.group, s.name), 0)
        return max(value, 0)

    def select(self, what: str) -> list[_Stat]:
        """``all``, ``group:`` or a bare name; nothing for anything else."""
        stats = self._sorted()
        if what == "all":
            return stats
        if what.endswith(":"):
            group = what[:-1]
            return [s for s in stats if s.group == group]
        return [s for s in stats if s.name == what][:1]

    def lines(self, names: Sequence[object]) -> list[str]:
        out: list[str] = []
        for what in names:
            if not isinstance(what, str):
                break  # Kamailio's scan loop stops at the first non-string
            out.extend(f"{s.group}:{s.name} = {self._value(s)}" for s in self.select(what))
        return out

    def reset(self, names: Sequence[object]) -> None:
        for what in names:
            if not isinstance(what, str):
                break
            for s in self.select(what):
                if s.resettable:
                    self._baseline[(s.group, s.name)] = s.read()

    def value(self, s: _Stat) -> int:
        """The value as read now, after any reset."""
        return self._value(s)

    def fetch(self, what: str) -> list[_Stat]:
        """What ``stats.fetch`` names: ``all``, ``group:``, a bare name, or
        ``group.name`` / ``group:name`` (kex ``stats_fetch_all``)."""
        found = self.select(what)
        if found or what == "all" or what.endswith(":"):
            return found
        for sep in (".", ":"):
            group, dot, name = what.partition(sep)
            if dot:
                return [s for s in self._sorted() if s.group == group and s.name == name][:1]
        return []

    def clear(self, names: Sequence[object]) -> list[str]:
        """``stats.clear_statistics``: reset, and say ``g:n = new (old)`` per
        statistic (``g:n = v`` when it did not change; gauges do not)."""
        out: list[str] = []
        for what in names:
            if not isinstance(what, str):
                break
            for s in self.select(what):
                old = self._value(s)
                if s.resettable:
                    self._baseline[(s.group, s.name)] = s.read()
                new = self._value(s)
                if new == old:
                    out.append(f"{s.group}:{s.name} = {new}")
                else:
                    out.append(f"{s.group}:{s.name} = {new} ({old})")
        return out


def _app_stats(app: AppLike, extra: Callable[[], Iterable[_Stat]] | None = None) -> list[_Stat]:
    proxy = app.proxy
    st = proxy.stats
    dialogs = proxy.dialogs

    def counter(group: str, name: str, attr: str) -> _Stat:
        return _Stat(group, name, lambda: int(getattr(st, attr)))

    def usable() -> int:
        d = app.dispatcher
        return sum(1 for dest in d.destinations() if not d.state(dest).skip)

    stats = [
        counter("core", "bad_msg_hdr", "bad_msg_hdr"),
        counter("core", "drop_replies", "drop_replies"),
        counter("core", "drop_requests", "drop_requests"),
        counter("core", "err_requests", "err_requests"),
        counter("core", "fwd_replies", "fwd_replies"),
        counter("core", "fwd_requests", "fwd_requests"),
        counter("core", "rcv_replies", "rcv_replies"),
        counter("core", "rcv_requests", "rcv_requests"),
        counter("tmx", "UAC_transactions", "uac_transactions"),
        counter("tmx", "UAS_transactions", "uas_transactions"),
        _Stat("tmx", "inuse_transactions", lambda: len(proxy.server_txns), False),
        counter("tmx", "rpl_generated", "local_replies"),
        counter("tmx", "rpl_received", "rcv_replies"),
        counter("tmx", "rpl_relayed", "fwd_replies"),
        _Stat("tmx", "rpl_sent", lambda: st.fwd_replies + st.local_replies),
        # Replies sipfleet makes itself (Kamailio's sl and tm local replies alike).
        counter("sl", "sent_replies", "local_replies"),
        _Stat("dialog", "active_dialogs", lambda: dialogs.count - dialogs.early, False),
        _Stat("dialog", "early_dialogs", lambda: dialogs.early, False),
        _Stat("dialog", "expired_dialogs", lambda: dialogs.expired),
        _Stat("dialog", "failed_dialogs", lambda: dialogs.failed),
        _Stat("dialog", "processed_dialogs", lambda: dialogs.processed),
        counter("sipfleet", "relay_denied", "relay_denied"),
        _Stat("sipfleet", "no_ack_dialogs", lambda: dialogs.no_ack),
        counter("sipfleet", "internal_errors", "internal_errors"),
        counter("sipfleet", "retransmissions", "retransmissions"),
        counter("sipfleet", "timeouts", "timeouts"),
        counter("sipfleet", "transport_errors", "transport_errors"),
        counter("sipfleet", "txn_refused", "txn_refused"),
        _Stat("sipfleet", "client_transactions", lambda: len(proxy.client_txns), False),
        _Stat("sipfleet", "accepting", lambda: int(proxy.accepting), False),
        # Kamailio 5.6's dispatcher keeps no statistics; sipfleet's are where
        # an operator of the dispatcher looks for them (kamcli stats dispatcher).
        _Stat(
            "dispatcher",
            "destinations",
            lambda: sum(1 for _ in app.dispatcher.destinations()),
            False,
        ),
        _Stat("dispatcher", "destinations_usable", usable, False),
        _Stat("dispatcher", "sets", lambda: len(app.dispatcher.snapshot.sets), False),
        _Stat("dispatcher", "ping_active", lambda: int(app.dispatcher.probing_active), False),
        counter("dispatcher", "failovers", "failovers"),
        _Stat("dispatcher", "dst_down", _count_of(app.events.counts, "dst-down")),
        _Stat("dispatcher", "dst_up", _count_of(app.events.counts, "dst-up")),
    ]
    if extra is not None:
        stats.extend(extra())
    gate = proxy.gate  # issue 11: edge security (sipfleet.security)
    if gate is not None:
        gs = gate.stats
        for name in STAT_NAMES:
            group = "pike" if name in _PIKE_STATS else "sipfleet"
            stats.append(_Stat(group, name, _attr_of(gs, name)))
        stats.append(_Stat("pike", "banned", lambda: len(gate.bans), False))
        stats.append(_Stat("pike", "sources", lambda: len(gate.sources), False))
        stats.append(_Stat("sipfleet", "overloaded", lambda: int(gate.overloaded), False))
        stats.append(_Stat("sipfleet", "loop_lag_ms", lambda: int(gate.lag * 1000), False))
    counts = app.events.counts
    for kind in list(counts):
        name = "events_" + "".join(c if c.isalnum() else "_" for c in kind)
        stats.append(_Stat("sipfleet", name, _count_of(counts, kind)))
    return stats


_PIKE_STATS = frozenset({"bans", "banned_drops", "floods", "scanners", "scans"})


def _attr_of(obj: object, name: str) -> Callable[[], int]:
    return lambda: int(getattr(obj, name))


def _count_of(counts: Counter[str], kind: str) -> Callable[[], int]:
    return lambda: counts[kind]


# -- dialogs -------------------------------------------------------------------


def _is_own(proxy: Proxy) -> Callable[[URI], bool]:
    return lambda uri: (uri.host, uri.effective_port()) in proxy.local_addrs


def _socket_name(lst: Listener | None) -> str:
    return "" if lst is None else f"{lst.proto}:{lst.host}:{lst.port}"


def _listener_of(proxy: Proxy, peer: Peer | None) -> Listener | None:
    if peer is None or not 0 <= peer.listener < len(proxy.listeners):
        return None
    return proxy.listeners[peer.listener]


def dialog_record(app: AppLike, dlg: Dialog, now_wall: float, now: float) -> dict[str, Any]:
    """One ``dlg.list`` item, keys in Kamailio 5.6's order (dialog.c
    ``internal_rpc_print_dlg``); route sets without our own entries, as
    Kamailio's dialog module keeps them."""
    proxy = app.proxy
    base = proxy.dialogs.as_record(dlg, now_wall, now)
    to_callee, to_caller = split_routes(_is_own(proxy), dlg.route_set)
    confirmed = dlg.state == CONFIRMED
    callee_lst = _listener_of(proxy, dlg.callee_peer)
    if callee_lst is None and isinstance(dlg.dest, Destination):
        target = app.router.target(dlg.dest)
        if target is not None:
            callee_lst = next((x for x in proxy.listeners if x.proto == target.proto), None)

    def leg(side: dict[str, Any], routes: list[bytes], lst: Listener | None) -> dict[str, Any]:
        return {
            "tag": side["tag"],
            "contact": side["contact"],
            "cseq": side["cseq"],
            "route_set": ",".join(uri_in(v).decode("utf-8", "replace") for v in routes),
            "socket": _socket_name(lst),
        }

    return {
        "h_entry": base["h_entry"],
        "h_id": base["h_id"],
        "ref": 1,
        "call-id": base["call-id"],
        "from_uri": base["from_uri"],
        "to_uri": base["to_uri"],
        "state": _KAMAILIO_DLG_STATE.get(dlg.state, dlg.state),
        "start_ts": base["start_ts"],
        "init_ts": base["init_ts"],
        "end_ts": base["end_ts"],
        "duration": max(int(now - dlg.start), 0) if confirmed else 0,
        "timeout": base["timeout"],
        "lifetime": base["lifetime"],
        "dflags": base["dflags"],
        "sflags": base["sflags"],
        "iflags": base["iflags"],
        "caller": leg(base["caller"], to_caller, _listener_of(proxy, dlg.caller_peer)),
        "callee": leg(base["callee"], to_callee, callee_lst),
        "profiles": [],
        "variables": [],
    }


def end_dialog(
    app: AppLike, dlg: Dialog, extra: Sequence[bytes] = (), what: str = "dlg.end_dlg"
) -> int:
    """Send a BYE to each side of an answered dialog and end it; returns the BYEs sent."""
    by = RPC_CALLER.get()
    call_id = dlg.call_id.decode("utf-8", "replace")
    sent = app.proxy.end_dialog(
        dlg, "rpc", app.now(), extra, functools.partial(_bye_done, what, call_id)
    )
    app.events.emit("dlg-ended", {"call_id": call_id, "byes": sent, "by": by})
    return sent


# -- registration ----------------------------------------------------------------


def register_methods(
    registry: Registry,
    app: AppLike,
    extra_stats: Callable[[], Iterable[_Stat]] | None = None,
    cluster_status: Callable[[], dict[str, Any] | None] | None = None,
) -> StatsBook:
    """Register every dispatcher.*, dlg.*, stats.* and sipfleet.* method on ``app``.

    ``extra_stats`` adds statistics the process adapter reads (memory, TCP);
    ``cluster_status`` the [cluster] link's state for sipfleet.status; the
    returned book serves stats.fetch and friends (``sipfleet.control.statistics``).
    """
    from sipfleet.control.explain import register_explain_methods

    book = _Methods(registry, app, extra_stats, cluster_status).stats
    register_explain_methods(registry, app)
    return book


class _Methods:
    """The handlers, closing over one app; one instance per process."""

    def __init__(
        self,
        registry: Registry,
        app: AppLike,
        extra_stats: Callable[[], Iterable[_Stat]] | None = None,
        cluster_status: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.app = app
        self._cluster_status = cluster_status
        self.stats = StatsBook(lambda: _app_stats(app, extra_stats))
        self._change_lock = app.new_lock()  # add/remove: memory and store change together
        self._register(registry)

    # -- dispatcher ------------------------------------------------------------

    def _emit_dst_events(self, events: Iterable[DstEvent]) -> None:
        for ev in events:
            self.app.events.emit(ev.kind, ev.data())

    async def reload(self) -> str:
        try:
            await self.app.reload(by=RPC_CALLER.get())
        except DispatcherError as e:
            raise _fault(e) from None
        return "Ok. Dispatcher successfully reloaded."

    def list_sets(self, mode: object = None) -> dict[str, Any]:
        d = self.app.dispatcher
        load = self.app.proxy.dialogs if d.config.list_runtime else None
        try:
            return d.list_records(mode, load=load)
        except DispatcherError as e:
            raise _fault(e) from None

    async def set_state(self, state: str, group: int, address: str) -> str:
        return await self._set_state("set_state", state, group, address)

    async def set_duid_state(self, state: str, group: int, duid: str) -> str:
        return await self._set_state("set_duid_state", state, group, duid)

    async def _set_state(self, method: str, state: str, group: int, target: str) -> str:
        try:
            await self.app.admin.set_state(method, state, group, target, RPC_CALLER.get())
        except DispatcherError as e:
            raise _fault(e) from None
        return "Ok. Dispatcher state updated."

    def ping_active(self, state: int | None = None) -> dict[str, int]:
        return self.app.dispatcher.ping_active(state)

    def _scan_late(self, spec: Method, raw: Sequence[object]) -> list[Any]:
        """Read add/remove params the way Kamailio does: after the reload window.

        dispatcher.c checks (and stamps) ``reload_delta`` before ``rpc->scan``,
        so a bad call inside the window answers "Ongoing reload" and a bad
        call outside it starts a window. Read by jsonrpcs' rules on every
        transport (kamcmd sends numbers as ints anyway).
        """
        try:
            values: list[Any] = spec.scan(raw, Dialect.JSON)
            return values
        except RpcFault:
            try:
                self.app.dispatcher.begin_reload(self.app.now())
            except DispatcherError as e:
                raise _fault(e) from None
            raise

    async def add_rpc(self, *raw: object) -> str:
        return await self.add(*self._scan_late(_ADD, raw))

    async def remove_rpc(self, *raw: object) -> str:
        return await self.remove(*self._scan_late(_REMOVE, raw))

    async def add(
        self, group: int, address: str, flags: int = 0, priority: int = 0, attrs: str = ""
    ) -> str:
        app = self.app
        d = app.dispatcher
        async with self._change_lock:
            before = d.snapshot.walk_specs()
            try:
                result = d.add(group, address, flags, priority, attrs, now=app.now())
            except DispatcherError as e:
                raise _fault(e) from None
            app.router.invalidate()
            store = app.store
            if store is not None:
                spec = DestinationSpec(group, normalize_uri(address), flags, priority, attrs)
                try:
                    await store.add(spec)
                except Exception as e:
                    self._undo(before, "add", e)
                    raise RpcFault(500, "Adding dispatcher dst failed") from None
        self._emit_dst_events(result.events)
        app.events.emit(
            "dst-added",
            {"set": group, "uri": address, "stored": store is not None, "by": RPC_CALLER.get()},
        )
        return "Ok. Dispatcher destination added."

    async def remove(self, group: int, address: str) -> str:
        app = self.app
        d = app.dispatcher
        async with self._change_lock:
            before = d.snapshot.walk_specs()
            try:
                result = d.remove(group, address, now=app.now())
            except DispatcherError as e:
                raise _fault(e) from None
            app.router.invalidate()
            store = app.store
            if store is not None:
                try:
                    await store.remove(group, address)
                except Exception as e:
                    self._undo(before, "remove", e)
                    raise RpcFault(500, "Removing dispatcher dst failed") from None
        app.events.emit(
            "dst-removed",
            {
                "set": group,
                "uri": address,
                "removed": result.removed,
                "stored": store is not None,
                "by": RPC_CALLER.get(),
            },
        )
        return "Ok. Dispatcher destination removed."

    def _undo(self, before: list[DestinationSpec], what: str, error: Exception) -> None:
        """Put the sets back as they were when the store refused the change."""
        log.error("dispatcher.%s: the store refused the change, undone in memory: %s", what, error)
        d = self.app.dispatcher
        d.install(d.build(before))
        self.app.router.invalidate()
        self.app.events.emit("store-error", {"operation": what, "error": str(error)})

    def hash_values(self, nslots: int, val1: str, val2: str | None = None) -> dict[str, int]:
        return rpc_hash(nslots, val1, val2)

    def oclist(self, group: int) -> list[dict[str, Any]]:
        try:
            return self.app.dispatcher.oclist(group)
        except DispatcherError as e:
            raise _fault(e) from None

    # -- dialogs ---------------------------------------------------------------

    def dlg_list(self) -> list[dict[str, Any]]:
        app = self.app
        now_wall, now = app.wall(), app.now()
        return [dialog_record(app, dlg, now_wall, now) for dlg in app.proxy.dialogs]

    def dlg_stats_active(self, own: object = None) -> dict[str, int]:
        return self.app.proxy.dialogs.stats_active()

    def end_dlg(self, h_entry: int, h_id: int, extra: object = None) -> None:
        app = self.app
        dialogs = app.proxy.dialogs
        dlg = dialogs.get(h_entry, h_id)
        if dlg is None:
            raise RpcFault(404, "Dialog not found")
        if dlg.state not in (CONFIRMED, ANSWERED):
            log.info("dlg.end_dlg %d:%d: not answered yet, left to its INVITE", h_entry, h_id)
            return
        end_dialog(app, dlg, extra_headers(extra) if isinstance(extra, str) else ())

    # -- stats -----------------------------------------------------------------

    def get_statistics(self, first: str, *rest: object) -> list[str]:
        return self.stats.lines([first, *rest])

    def reset_statistics(self, first: str, *rest: object) -> None:
        self.stats.reset([first, *rest])

    # -- sipfleet's own ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        app = self.app
        d = app.dispatcher
        dests = list(d.destinations())
        dialogs = app.proxy.dialogs
        store = app.store
        return {
            "version": __version__,
            "uptime": max(int(app.wall() - app.started_wall), 0),
            "accepting": app.proxy.accepting,
            "sets": len(d.snapshot.sets),
            "destinations": len(dests),
            "usable": sum(1 for x in dests if not d.state(x).skip),
            "ping_active": d.probing_active,
            "dialogs": len(dialogs),
            "early_dialogs": dialogs.early,
            "store": store.status() if store is not None else None,
            "cluster": self._cluster_status() if self._cluster_status is not None else None,
            "events": dict(app.events.counts),
        }

    def recent_events(self, count: int = 100) -> list[dict[str, Any]]:
        recent = self.app.events.recent
        n = max(min(count, len(recent)), 0)
        out = []
        for event in list(recent)[len(recent) - n :]:
            item = dict(event)
            stamp = item.get("time")
            if isinstance(stamp, float):
                # As text: JSON-RPC prints doubles with 6 significant digits, as Kamailio does.
                item["time"] = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")
            out.append(item)
        return out

    # -------------------------------------------------------------------------------

    def _register(self, r: Registry) -> None:
        s: ParamKind = "str"
        i: ParamKind = "int"
        r.add("dispatcher.reload", self.reload, doc="Reload dispatcher destination sets")
        r.add(
            "dispatcher.list",
            self.list_sets,
            doc="Return the content of dispatcher sets",
            params=[Param("mode", "any", optional=True)],
        )
        state_params = [Param("state", s, autoconvert=True), Param("group", i)]
        r.add(
            "dispatcher.set_state",
            self.set_state,
            doc="Set the state of a destination by address",
            params=[*state_params, Param("address", s)],
        )
        r.add(
            "dispatcher.set_duid_state",
            self.set_duid_state,
            doc="Set the state of a destination by duid",
            params=[*state_params, Param("duid", s)],
        )
        r.add(
            "dispatcher.ping_active",
            self.ping_active,
            doc="Manage setting on/off the pinging (keepalive) of destinations",
            params=[Param("state", i, optional=True, lenient=True)],
        )
        r.add(
            "dispatcher.add",
            self.add_rpc,
            doc="Add a destination address in memory",
            params=[Param(p.name, "any", optional=True) for p in _ADD.params],
        )
        r.add(
            "dispatcher.remove",
            self.remove_rpc,
            doc="Remove a destination address from memory",
            params=[Param(p.name, "any", optional=True) for p in _REMOVE.params],
        )
        r.add(
            "dispatcher.hash",
            self.hash_values,
            doc="Compute the hash if the values",
            params=[Param("nslots", i), Param("val1", s), Param("val2", s, optional=True)],
        )
        r.add(
            "dispatcher.oclist",
            self.oclist,
            doc="Return the overload control state of a destination group",
            params=[Param("group", i)],
        )
        r.add("dlg.list", self.dlg_list, doc="Print all dialogs")
        r.add(
            "dlg.stats_active",
            self.dlg_stats_active,
            doc="Get stats about active dialogs",
            params=[Param("own", "any", optional=True)],
        )
        r.add(
            "dlg.end_dlg",
            self.end_dlg,
            doc="End a given dialog based on [h_entry] [h_id]",
            params=[
                Param("h_entry", i),
                Param("h_id", i),
                Param("extra_headers", "any", optional=True),
            ],
            bad_params=RpcFault(500, "Invalid parameters"),
        )
        more = [Param(f"stat{n}", "any", optional=True) for n in range(2, _MAX_STAT_PARAMS + 1)]
        r.add(
            "stats.get_statistics",
            self.get_statistics,
            doc="get core and modules stats",
            params=[Param("stat", s), *more],
            bad_params=RpcFault(400, "Please provide which stats to retrieve"),
        )
        r.add(
            "stats.reset_statistics",
            self.reset_statistics,
            doc="reset core and modules stats (silent operation)",
            params=[Param("stat", s), *more],
            bad_params=RpcFault(400, "Please provide stats name"),
        )
        r.add(
            "sipfleet.status",
            self.status,
            doc="Summary of the running sipfleet: sets, destinations, dialogs, events.",
        )
        r.add(
            "sipfleet.events",
            self.recent_events,
            doc="The most recent events (dst-up, dst-down, state-changed...), oldest first: [count].",
            params=[Param("count", i, optional=True)],
        )


def _no_handler(*_: object) -> None:
    raise AssertionError("a parameter spec only")


# dispatcher.add / remove read their params themselves (see _Methods._scan_late).
_ADD = Method(
    "dispatcher.add",
    _no_handler,
    "params",
    (
        Param("group", "int"),
        Param("address", "str"),
        Param("flags", "int", optional=True),
        Param("priority", "int", optional=True),
        Param("attrs", "str", optional=True),
    ),
)
_REMOVE = Method(
    "dispatcher.remove", _no_handler, "params", (Param("group", "int"), Param("address", "str"))
)


def _bye_done(what: str, call_id: str, side: str, code: int | None) -> None:
    if code is None:
        log.warning("%s %s: no answer to the BYE to the %s", what, call_id, side)
    else:
        log.info("%s %s: the %s answered the BYE with %d", what, call_id, side, code)
