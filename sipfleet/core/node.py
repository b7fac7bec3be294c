"""``Core``: the whole node as one pure object (made by ``sipfleet.core.factory``).

It owns the dispatcher, the router, the proxy (with its dialog table), the
edge security gate, the admin service and the dialog write buffer, and
holds the store the node was loaded from. The adapter (``sipfleet.aio.app``)
moves bytes, arms the timers, runs the store's writes and hands events on.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from sipfleet.control.registry import Dialect, Registry, RpcFault
from sipfleet.core.admin import AdminService, Events, LockFactory
from sipfleet.core.persist import DialogKey, DialogWrites, dialog_record, restore_dialog
from sipfleet.dispatch.destination import Destination, DestinationSpec, StateKey
from sipfleet.dispatch.dispatcher import Dispatcher
from sipfleet.dispatch.errors import DispatcherError
from sipfleet.dispatch.generation import ReloadResult
from sipfleet.dispatch.health import DstEvent
from sipfleet.dispatch.policy import DispatchRouter
from sipfleet.dispatch.select import LoadView
from sipfleet.proxy.core import Proxy
from sipfleet.proxy.dialogs import Dialog
from sipfleet.proxy.net import Listener, Peer
from sipfleet.security.gate import Gate
from sipfleet.sip.message import Message

if TYPE_CHECKING:
    from sipfleet.dispatch.settings import RouteSpec
    from sipfleet.store.base import AsyncStore
    from sipfleet.store.dialogs import DialogRecord

__all__ = ["Core", "CoreHooks", "RunBlocking"]

log = logging.getLogger("sipfleet")

T = TypeVar("T")


class RunBlocking(Protocol):
    """Runs a slow pure function (a snapshot build) off the loop: asyncio.to_thread."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


async def run_inline(fn: Callable[[], T]) -> T:
    """``RunBlocking`` for tests and tools: in the caller."""
    return fn()


def _no_merge(specs: list[DestinationSpec]) -> list[DestinationSpec]:
    return specs


class CoreHooks:
    """What the adapter wants to hear about (each a no-op by default)."""

    __slots__ = ("dialog_confirmed", "dialog_ended", "merge_specs", "probe_result", "reloaded")

    def __init__(
        self,
        *,
        reloaded: Callable[[bool, float], None] | None = None,
        merge_specs: Callable[[list[DestinationSpec]], list[DestinationSpec]] | None = None,
        probe_result: Callable[[StateKey, int | None, float | None], None] | None = None,
        dialog_confirmed: Callable[[Dialog], None] | None = None,
        dialog_ended: Callable[[Dialog, str], None] | None = None,
    ) -> None:
        #: (ok, seconds) after each reload (telemetry)
        self.reloaded = reloaded
        #: the specs a reload installs, from the store's ([[discovery]] adds its members)
        self.merge_specs = merge_specs or _no_merge
        #: (destination key, code or None, rtt or None) per probe answered or timed out
        self.probe_result = probe_result
        #: every dialog confirmed by its ACK ([cluster])
        self.dialog_confirmed = dialog_confirmed
        #: (dialog, reason) for every dialog that ends ([cluster])
        self.dialog_ended = dialog_ended


class Core:
    """One node: build it with ``sipfleet.core.factory.build_core``."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        routes: Sequence[RouteSpec],
        listeners: Sequence[Listener],
        proxy_factory: Callable[[DispatchRouter], Proxy],
        gate: Gate,
        *,
        store: AsyncStore | None,
        events: Events,
        now: Callable[[], float],
        wall: Callable[[], float] = time.time,
        lock: LockFactory,
        run_blocking: RunBlocking = run_inline,
        hooks: CoreHooks | None = None,
        persist_dialogs: bool = False,
        trunk_routes: bool = False,
        started_wall: float | None = None,
        registry: Registry | None = None,
        wake: Callable[[float], None] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.listeners = list(listeners)
        self.store = store
        self.events = events
        self.now = now
        self.wall = wall
        self.new_lock = lock
        self.run_blocking = run_blocking
        self.hooks = hooks or CoreHooks()
        self.started_wall = wall() if started_wall is None else started_wall
        self.reload_lock = lock()
        # The call-load the router balances on is the dialog table's (the
        # core is the router's LoadView), or every node's with [cluster].
        self.router = DispatchRouter(dispatcher, routes, load=self, on_events=self.emit_dst_events)
        self.proxy = proxy = proxy_factory(self.router)
        self._load: LoadView = proxy.dialogs
        self.gate = gate
        proxy.gate = gate
        self.admin = AdminService(dispatcher, self, store, events, lock, wall)
        #: the RPC methods (registered by ``sipfleet.core.rpc.register_rpc``), as ``call`` runs them
        self.registry = registry if registry is not None else Registry()
        # ``wake(when)``: a deadline earlier than the adapter may have armed for.
        self.writes = DialogWrites(enabled=persist_dialogs and store is not None, wake=wake)
        # ... and the proxy's SIP timers say so too: no polling for a new,
        # earlier retransmission or timeout (see ``armed``).
        proxy.timers.wake = wake
        table = proxy.dialogs
        table.on_idle = self.admin.on_idle
        table.on_end = self._dialog_ended
        table.on_confirm = self._confirm_hook()
        # The gate trusts the destinations' hosts, now and after every change
        # of the destinations (the router says so from ``invalidate``).
        self.router.on_backends = gate.set_backends
        self.trust_backends()
        self._tick_parts = (
            proxy.timers,
            proxy.handle_timer,
            gate,
            dispatcher.next_probe_at,
            self.writes,
        )
        if trunk_routes:
            self.router.source_route = self._trunk_route

    # -- inputs ------------------------------------------------------------------
    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        """A datagram or a framed stream message from ``peer`` (the server's
        transports hand bytes to the proxy directly, on the hot path)."""
        self.proxy.receive(data, peer, now)

    def handle_timer(self, now: float) -> tuple[list[DialogRecord], list[DialogKey]] | None:
        """Run what is due by ``now``: the proxy's timers, the gate's upkeep, the
        OPTIONS probes; returns a batch of dialog writes when one is due (the
        adapter writes it, then calls ``writes.done``)."""
        # Tens of times a second under load: the parts are bound once (``_tick_parts``).
        timers, proxy_timer, gate, next_probe, writes = self._tick_parts
        timers.armed = -math.inf  # the adapter re-arms after this (``armed``)
        try:
            proxy_timer(now)
            gate.maintain(now)
        except Exception:
            self.proxy.stats.internal_errors += 1
            log.exception("internal error in timers")
        if gate.events:
            for kind, data in gate.take_events():
                self.events.emit(kind, data)
        probe_at = next_probe()
        if probe_at is not None and now >= probe_at:
            self.probe(now)
        if writes.enabled and writes.due(now):
            return self.take_writes()
        return None

    def armed(self, when: float) -> None:
        """The adapter has armed one wake-up at ``when`` (``next_deadline()``):
        a deadline added earlier than that calls ``wake`` to re-arm it."""
        self.proxy.timers.armed = when

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` next has work (None: nothing scheduled). The
        gate's upkeep is due at least once a second, so an adapter that arms
        exactly this also notices a probe schedule changed by an RPC within 1 s."""
        timers, _, gate, next_probe, writes = self._tick_parts
        best: float | None = gate.next_sweep()
        t = timers.next_deadline()
        if t is not None and (best is None or t < best):
            best = t
        t = next_probe()
        if t is not None and (best is None or t < best):
            best = t
        if writes.enabled:
            t = writes.next_deadline()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def call(self, method: str, params: Sequence[object] = ()) -> object:
        """An RPC through the same registry the front ends serve (JSON-RPC's
        reading of the params); the result, or an awaitable of it. Raises
        RpcFault as the method does; the clock is the core's (``now``)."""
        spec = self.registry.get(method)
        if spec is None:
            raise RpcFault(500, "Method Not Found")  # as jsonrpcs answers
        return spec.invoke(params, Dialect.JSON)

    # -- call-load -----------------------------------------------------------------
    def load(self, key: str) -> int:
        """Open calls on a load key (the router's and the drain rules' view)."""
        return self._load.load(key)

    def use_load(self, view: LoadView) -> None:
        """[cluster]: balance on every node's calls from now on."""
        self._load = view

    # -- events --------------------------------------------------------------------
    def emit_dst_events(self, events: list[DstEvent]) -> None:
        for ev in events:
            self.events.emit(ev.kind, ev.data())

    def _dialog_ended(self, dlg: Dialog, reason: str) -> None:
        if reason == "no-ack":
            self.events.emit(
                "dialog-no-ack",
                {
                    "call_id": dlg.call_id.decode("utf-8", "replace"),
                    "uri": dlg.dest.uri if isinstance(dlg.dest, Destination) else None,
                },
            )
        hook = self.hooks.dialog_ended
        if hook is not None:
            hook(dlg, reason)
        if self.writes.enabled:
            self.writes.ended(dlg, self.now())

    def _confirm_hook(self) -> Callable[[Dialog], None] | None:
        persist = self.writes.confirmed if self.writes.enabled else None
        other = self.hooks.dialog_confirmed
        if persist is None or other is None:
            return persist or other

        def both(dlg: Dialog) -> None:
            persist(dlg)
            other(dlg)

        return both

    # -- dialogs that survive a restart ----------------------------------------------
    def restore_dialogs(self, records: Sequence[DialogRecord]) -> None:
        """Put back the open dialogs the store kept (at startup)."""
        now, wall = self.now(), self.wall()
        table = self.proxy.dialogs
        for r in records:
            dlg, remaining = restore_dialog(r, self.dispatcher, now, wall)
            table.restore(dlg, now, remaining)
            self.writes.restored(dlg)
        if records:
            log.info("restored %d open dialogs", len(records))

    def take_writes(self) -> tuple[list[DialogRecord], list[DialogKey]] | None:
        """The next batch of dialog rows to put and keys to delete (then call
        ``writes.done``), or None: nothing to write or a batch in flight."""
        batch = self.writes.take()
        if batch is None:
            return None
        now, wall = self.now(), self.wall()
        return [dialog_record(d, now, wall) for d in batch.puts], batch.deletes

    # -- gate ----------------------------------------------------------------------
    def trust_backends(self) -> None:
        """Destinations are trusted for in-dialog requests and never banned
        (the same hosts the relay rules trust)."""
        self.gate.set_backends(self.router.backend_hosts())

    def _trunk_route(self, source: Peer) -> str | None:
        lst = self.listeners[source.listener]
        trunk = self.gate.trunks.match(source.host, source.port, lst.proto)
        return trunk.route if trunk is not None else None

    # -- reload --------------------------------------------------------------------
    async def reload(self, by: str = "rpc", *, rate_limited: bool = True) -> ReloadResult:
        """Reread the store and swap the destination list atomically.

        Within ``reload_delta`` of the last reload it raises Kamailio's
        DispatcherError(500, "Ongoing reload"); a bad store raises
        (500, "Reload Failed"). ``rate_limited=False`` (a reload the store
        asked for) neither checks nor stamps that window, so an operator's
        reload right after an edit is not refused because of it.
        """
        async with self.reload_lock:
            store = self.store
            if store is None:
                raise DispatcherError(500, "Reload Failed", "no store")
            d = self.dispatcher
            if rate_limited:
                d.begin_reload(self.now())
            t0 = time.perf_counter()
            try:
                specs = self.hooks.merge_specs(await store.load())
                snapshot = await self.run_blocking(functools.partial(d.build, specs))
            except Exception as e:
                log.error("reload failed: %s", e)
                if self.hooks.reloaded is not None:
                    self.hooks.reloaded(False, time.perf_counter() - t0)
                raise DispatcherError(500, "Reload Failed", str(e)) from e
            result = d.install(snapshot)
            if self.hooks.reloaded is not None:
                self.hooks.reloaded(True, time.perf_counter() - t0)
            self.router.invalidate()  # and the gate's trusted hosts (on_backends)
            log.info(
                "reloaded by %s: %d added, %d removed, %d kept",
                by,
                result.added,
                result.removed,
                result.kept,
            )
            self.emit_dst_events(list(result.events))
            return result

    # -- OPTIONS probing -----------------------------------------------------------
    def probe(self, now: float) -> float | None:
        """Send the probes due by ``now``; the time the next one is due."""
        try:
            for req in self.dispatcher.due_probes(now):
                self._send_probe(req.destination, req.method, req.from_uri, now)
        except Exception:
            log.exception("internal error while probing")
        return self.dispatcher.next_probe_at()

    def _send_probe(self, dest: Destination, method: str, from_uri: str, now: float) -> None:
        target = self.router.target(dest)
        if target is None:
            self._probe_done(dest, now, None, None, now)
            return
        tag = os.urandom(4).hex()
        headers = (
            b"From: <" + from_uri.encode() + b">;tag=" + tag.encode(),
            b"To: <" + dest.uri.encode() + b">",
            b"Call-ID: probe-" + os.urandom(8).hex().encode() + b"@sipfleet",
            b"CSeq: 1 " + method.encode(),
        )
        sent = self.proxy.originate(
            method,
            dest.uri,
            target,
            headers,
            functools.partial(self._probe_done, dest, now),
            now,
            timeout=self.dispatcher.config.probe_timeout,  # SIGHUP may change it
        )
        if not sent:
            self._probe_done(dest, now, None, None, now)

    def _probe_done(
        self, dest: Destination, sent: float, code: int | None, msg: Message | None, now: float
    ) -> None:
        rtt = now - sent if code is not None else None
        if self.hooks.probe_result is not None:
            self.hooks.probe_result(dest.key, code, rtt)
        events = self.dispatcher.on_probe_result(dest, code, rtt, now)
        if events:
            self.emit_dst_events(events)
