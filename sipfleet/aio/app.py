"""The running sipfleet process: start, serve, drain, stop.

Builds the pure core from the config (store -> dispatcher -> router ->
proxy), wires it to the socket adapters and the loop's clock, drives its
timers and OPTIONS probing, starts the control plane, and handles signals:
SIGTERM/SIGINT start a graceful stop (new calls get 503 with Retry-After,
calls in progress finish), a second one stops at once; SIGHUP reloads the
destinations.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from sipfleet import ratelog
from sipfleet.aio.cluster import Cluster
from sipfleet.aio.cluster import check_installed as check_cluster_installed
from sipfleet.aio.discovery import DiscoveryService
from sipfleet.aio.events import EventBus
from sipfleet.aio.operator import OperatorViews
from sipfleet.aio.resolver import resolve_destination
from sipfleet.aio.rpc_thread import ControlPlane
from sipfleet.aio.sip import ConnLimits, SipTransports
from sipfleet.aio.systemd import Notifier
from sipfleet.aio.tls import TlsContexts, TlsError
from sipfleet.aio.webhooks import Webhooks
from sipfleet.config import Config
from sipfleet.config.security import to_settings
from sipfleet.control.core_methods import ServerInfo, register_core_methods
from sipfleet.control.methods import Stat
from sipfleet.control.paths import prepare_run_dir
from sipfleet.control.registry import Registry
from sipfleet.dispatch.destination import Destination
from sipfleet.dispatch.dispatcher import Dispatcher
from sipfleet.dispatch.generation import ReloadResult
from sipfleet.dispatch.health import DstEvent
from sipfleet.dispatch.policy import DispatchRouter
from sipfleet.dispatch.state import AdminState, DestState
from sipfleet.dispatch.target import DestTarget
from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.dialogs import CONFIRMED, Dialog
from sipfleet.proxy.net import Listener, Peer
from sipfleet.security.gate import Gate
from sipfleet.sip.build import set_server_header
from sipfleet.sip.message import Limits, Message
from sipfleet.store.base import AsyncStore
from sipfleet.store.dialogs import DialogRecord
from sipfleet.store.open import EXAMPLE_DESTINATIONS, open_store
from sipfleet.transaction.server import TimerConfig

__all__ = ["EXAMPLE_DESTINATIONS", "App", "open_store", "run"]

log = logging.getLogger("sipfleet")

# The collector: every second, collect what was allocated since the last
# time (a few ms at 1,000 calls/s) and freeze the survivors, so no pass ever
# walks the whole heap (a full pass over 30 s of transactions takes ~0.5 s).
# Frozen objects are still freed by refcount; only a cycle among them would
# wait for the hourly full pass, which logs it: the core makes none.
_GC_PERIOD = 1.0
# ... or sooner, when this many objects were allocated since (another thread,
# e.g. an RPC storm, can allocate fast): a pass stays a few ms, not 100s.
_GC_YOUNG_MAX = 5_000
_GC_CHECK = 0.02
_GC_FULL_PERIOD = 3600.0
_PERSIST_PERIOD = 0.2  # new dialogs reach the disk at most this late
_CHECKPOINT_PERIOD = 5.0  # the log is written back this often, off the loop
_DELETE_DELAY = 0.01  # ... and ended ones this late (a crash must not resurrect them)
_MAX_PENDING_WRITES = 200_000  # bounds memory if the disk stalls
_TICK_MAX = 0.05  # timers fire at most this late; every SIP timer is >= 0.5 s
_LAG_PERIOD = 0.1  # how often the event loop's lag is measured for overload shedding
_TRIM_AFTER = 5000  # open transactions at a peak after which freed memory goes back to the OS


#: Config sections a SIGHUP does not apply (logged when changed); [[discovery]] and [dns] too.
_RESTART_SECTIONS = (
    "proxy",
    "store",
    "control",
    "webhook",
    "discovery",
    "dns",
    "security",
    "trunk",
    "overload",
    "limits",
    "cluster",
)


def build_settings(cfg: Config, route_key: bytes | None = None) -> ProxySettings:
    p = cfg.proxy
    aliases = []
    for a in p.aliases:
        host, _, port = a.rpartition(":") if a.count(":") == 1 else (a, "", "")
        aliases.append((host or a, int(port) if port else 5060))
    for spec in p.listen:  # [cluster] advertise names every node: it is ours too
        shared = cfg.cluster.advertise_hostport(spec.port)
        if shared is not None:
            aliases.append((shared[0].lower(), shared[1]))
    return ProxySettings(
        timers=TimerConfig(p.t1, p.t2, p.t4),
        first_response_timeout=p.first_response_timeout,
        final_response_timeout=p.final_response_timeout,
        max_forwards=p.max_forwards,
        record_route=p.record_route,
        limits=Limits(p.max_message_size, p.max_header_count, p.max_line_length),
        aliases=aliases,
        answer_options=p.answer_options,
        transform_503=p.transform_503,
        dialog_lifetime=p.dialog_lifetime,
        route_key=route_key,
        preloaded_route=p.preloaded_route,
    )


def conn_limits(cfg: Config) -> ConnLimits:
    p = cfg.proxy
    return ConnLimits(
        max_connections=p.tcp_max_connections,
        per_source=p.tcp_max_connections_per_source,
        outbound_reserve=p.tcp_outbound_reserve,
        header_timeout=p.tcp_header_timeout,
        idle_timeout=p.tcp_idle_timeout,
        max_buffer=p.tcp_max_buffer,
        handshake_timeout=cfg.tls.handshake_timeout,
    )


def _needs_tls(cfg: Config) -> bool:
    """TLS contexts when something may use them: a tls: listener (inbound, and
    outbound towards back ends that say transport=tls or sips:)."""
    return any(spec.proto == "tls" for spec in cfg.proxy.listen)


def route_key(cfg: Config) -> bytes:
    """The key of our Record-Route signatures: configured, else one kept in
    the run directory, so that a restart still recognises its dialogs."""
    secret = cfg.proxy.route_secret
    if secret is not None:
        return secret.get_secret_value().encode()
    path = prepare_run_dir(cfg.control.run_dir).path / "route.key"
    try:
        key = path.read_bytes()
        if len(key) >= 16:
            return key
    except OSError:
        pass
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def build_gate(cfg: Config) -> Gate:
    """The core's edge security from [security], [[trunk]], [overload], [limits]."""
    return Gate(to_settings(cfg.security, cfg.trunk, cfg.overload, cfg.limits))


class App:
    """One sipfleet process: call ``serve()``."""

    def __init__(self, cfg: Config, reload_config: Callable[[], Config] | None = None) -> None:
        self.cfg = cfg
        self._load_config = reload_config
        self.loop = asyncio.get_running_loop()
        self.started_wall = time.time()
        self.events = EventBus()
        self.operator = OperatorViews(self, self.loop)  # /metrics and the dashboard
        self.webhooks = Webhooks(list(cfg.webhook), self.events)
        self.listeners = [
            Listener(
                i,
                spec.proto,
                spec.host,
                spec.port,
                spec.advertise,
                cfg.cluster.advertise_hostport(spec.port),  # [cluster] advertise
            )
            for i, spec in enumerate(cfg.proxy.listen)
        ]
        self.tls = TlsContexts(cfg.tls) if _needs_tls(cfg) else None
        self.transports = SipTransports(
            self.listeners,
            self.loop.time,
            cfg.proxy.max_message_size,
            conn_limits(cfg),
            self.tls,
        )
        self.store: AsyncStore | None = None
        self.dispatcher: Dispatcher = None  # type: ignore[assignment]  # set in start()
        self.router: DispatchRouter = None  # type: ignore[assignment]
        self.proxy: Proxy = None  # type: ignore[assignment]
        self.registry = Registry()
        self.control: ControlPlane | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._probe: asyncio.TimerHandle | None = None
        self._gc_handle: asyncio.TimerHandle | None = None
        self._gc_due = 0.0
        self._gc_full_at = 0.0
        self._stopped = asyncio.Event()
        self._stopping = False
        self._reload_lock = asyncio.Lock()
        self._drained_reported: dict[tuple[int, str], float | None] = {}
        self._persisting = False  # open dialogs are written to the store
        self._dialog_writing: asyncio.Task[None] | None = None  # one batch at a time
        self._follow: asyncio.Task[None] | None = None
        self._persist: asyncio.TimerHandle | None = None
        self._dialog_writes: dict[tuple[bytes, bytes], Dialog | None] = {}
        self._dialog_writes_dropped = 0
        self._dialogs_stored: set[tuple[bytes, bytes]] = set()  # keys written to the disk
        self._checkpointing = False
        self._checkpoint: asyncio.TimerHandle | None = None
        self._delete_soon: asyncio.TimerHandle | None = None
        self.discovery: DiscoveryService | None = None  # [[discovery]]: members from DNS
        self.cluster: Cluster | None = None  # [cluster]: sipfleet.aio.cluster
        self.gate = build_gate(cfg)
        self._lag: asyncio.TimerHandle | None = None
        self._lag_due = 0.0
        self._txn_peak = 0

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        now = self.loop.time()
        if cfg.cluster.enabled:  # [cluster]: refuse at once without the redis client
            check_cluster_installed()
        self.store = store = await open_store(cfg.store)
        try:
            specs = await store.load()
            details = await store.load_admin_details()
        except BaseException:
            await store.close()
            self.store = None
            raise
        self.dispatcher = await asyncio.to_thread(
            functools.partial(
                Dispatcher,
                cfg.dispatcher.to_settings(),
                specs,
                now=now,
                resolver=resolve_destination,
                admin_states={k: v[0] for k, v in details.items()},
            )
        )
        for d in self.dispatcher.destinations():
            detail = details.get(d.key)
            if detail is not None:
                st = self.dispatcher.state(d)
                st.admin_since, st.admin_by = detail[1], detail[2]
        self.router = DispatchRouter(
            self.dispatcher,
            [r.to_settings() for r in cfg.route],
            load=_NoLoad(),
            on_events=self._on_dst_events,
        )
        key = await asyncio.to_thread(route_key, cfg)
        self.proxy = Proxy(
            self.listeners, self.transports.sink, self.router, build_settings(cfg, key)
        )
        self.router.load = self.proxy.dialogs
        self.proxy.gate = self.gate
        set_server_header(cfg.security.server)
        self._trust_backends()
        if any(t.route for t in cfg.trunk):
            self.router.source_route = self._trunk_route
        self.proxy.dialogs.on_idle = self._on_dest_idle
        self.proxy.dialogs.on_end = self._dialog_ended
        await self._open_dialog_store()
        if cfg.cluster.enabled:  # [cluster]: shared admin state and call-load
            self._start_cluster()
        self.transports.attach(self.proxy)
        await self.transports.start()
        self._register_methods()
        # Every method is registered before the control plane answers its first call.
        self.discovery = DiscoveryService(self, cfg.discovery, cfg.dns, lock=self._reload_lock)
        self.discovery.register(self.registry)
        routes = self.operator.http_routes(cfg.control.http.path)  # /metrics, the dashboard
        # Off the SIP loop, bounded: an RPC storm cannot starve SIP.
        self.control = await ControlPlane(self.registry, cfg.control, http_routes=routes).start()
        self.operator.start()
        await self.webhooks.start()
        for lst in self.listeners:
            log.info("listening on %s:%s", lst.proto, lst.advertise)
        from sipfleet import _accel

        log.info("core: %s", _accel.describe())
        for name in _accel.stale():
            log.warning("compiled %s is older than its source: run scripts/build_accel.py", name)
        log.info(
            "%d destinations in %d sets from %s",
            sum(1 for _ in self.dispatcher.destinations()),
            len({d.set_id for d in self.dispatcher.destinations()}),
            store,
        )
        self._follow = self.loop.create_task(self._follow_store(store))
        self._on_dst_events(self.dispatcher.initial_events())
        self.discovery.start()  # [[discovery]]: members from DNS (sipfleet.aio.discovery)
        self._schedule_tick()
        self._schedule_probe(0.0)
        self._lag_due = self.loop.time() + _LAG_PERIOD
        self._lag = self.loop.call_at(self._lag_due, self._measure_lag)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        # Everything built so far lives for the process: keep it out of the
        # collector's scans. The core frees what it allocates by refcount (no
        # cycles: tests check it), so the collector only runs as a safety
        # net, off the per-message path.
        gc.collect()
        gc.freeze()
        gc.disable()
        self._gc_full_at = self.loop.time() + _GC_FULL_PERIOD
        self._gc_due = self.loop.time() + _GC_PERIOD
        self._gc_handle = self.loop.call_later(_GC_CHECK, self._collect)
        # systemd (Type=notify): ready now; watchdog pings come from this loop.
        self.systemd = Notifier.from_env()

        def sd_status() -> str:
            state = "serving" if self.proxy.accepting else "stopping"
            dests = sum(1 for _ in self.dispatcher.destinations())
            return f"{state}: {len(self.proxy.dialogs)} dialogs, {dests} destinations"

        self.systemd.ready(sd_status())
        self.systemd.start_watchdog(self.loop, sd_status)

    def _start_cluster(self) -> None:
        cfg = self.cfg.cluster
        lst = self.listeners[0]
        host = lst.host if lst.host not in ("0.0.0.0", "::") else socket.gethostname()
        self.cluster = cluster = Cluster(self, cfg, cfg.node or f"{host}:{lst.port}")
        self.router.load = cluster.view
        self.proxy.on_foreign_bye = cluster.foreign_bye
        table = self.proxy.dialogs
        persist = table.on_confirm

        def confirmed(dlg: Dialog) -> None:
            if persist is not None:
                persist(dlg)
            cluster.dialog_confirmed(dlg)

        table.on_confirm = confirmed
        self.webhooks.claim = cluster.claim
        cluster.start()

    def _register_methods(self) -> None:
        info = ServerInfo(
            started_at=self.started_wall,
            flags=("USE_TCP", "USE_UDP", "USE_IPV6", *(("USE_TLS",) if self.tls else ())),
            alerts=self._alerts,
        )
        register_core_methods(self.registry, info)
        from sipfleet.aio.node import NodeInfo
        from sipfleet.control.dlg_methods import register_dlg_methods
        from sipfleet.control.drain import register_drain_methods
        from sipfleet.control.methods import register_methods
        from sipfleet.control.node_methods import register_node_methods, register_tls_methods
        from sipfleet.control.security import register_security_methods
        from sipfleet.control.statistics import register_stats_methods
        from sipfleet.control.uac import register_uac_methods

        node = NodeInfo(self)
        book = register_methods(self.registry, self, extra_stats=lambda: self._extra_stats(node))
        register_stats_methods(self.registry, book)
        register_drain_methods(self.registry, self)
        register_dlg_methods(self.registry, self)
        register_node_methods(self.registry, node, info)
        register_tls_methods(self.registry, None)  # until sipfleet has TLS
        register_uac_methods(
            self.registry,
            lambda: self.proxy,
            self.loop.time,
            lambda: self.cfg.proxy.final_response_timeout,
            self.loop.create_future,
        )
        register_security_methods(self.registry, self)

    def _extra_stats(self, node: Any) -> list[Stat]:
        """shmem:/tcp: (the node), and the adapters' own counters: connection
        limits and TLS (sipfleet:tcp_*, tls_*) and the control plane's bound (rpc_*)."""
        from sipfleet.control.statistics import node_stats

        out = node_stats(node)
        for part in (self.transports, self.control):
            if part is not None:
                out.extend(Stat(g, n, read, reset) for g, n, read, reset in part.stat_values())
        return out

    async def serve(self) -> None:
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    def request_stop(self) -> None:
        """First signal: graceful stop; second: now."""
        if self._stopping:
            log.warning("stopping now, %d dialogs still open", len(self.proxy.dialogs))
            self._stopped.set()
            return
        self._stopping = True
        self.proxy.accepting = False
        timeout = self.cfg.proxy.shutdown_timeout
        log.info(
            "graceful stop: no new calls (503), waiting up to %.0f s for %d dialogs",
            timeout,
            len(self.proxy.dialogs),
        )
        self.systemd.stopping(
            f"graceful stop: {len(self.proxy.dialogs)} dialogs, up to {timeout:.0f} s", timeout
        )
        self.loop.create_task(self._drain_self(timeout))

    async def _drain_self(self, timeout: float) -> None:
        end = self.loop.time() + timeout
        while len(self.proxy.dialogs) and self.loop.time() < end:
            await asyncio.sleep(0.2)
        if len(self.proxy.dialogs):
            log.warning("shutdown timeout: %d dialogs still open", len(self.proxy.dialogs))
        self._stopped.set()

    async def close(self) -> None:
        if self.discovery is not None:  # [[discovery]]
            await self.discovery.close()
        if self.cluster is not None:  # [cluster]
            await self.cluster.close()
        handles = (
            self._tick,
            self._probe,
            self._gc_handle,
            self._persist,
            self._delete_soon,
            self._lag,
        )
        for handle in (*handles, self._checkpoint):
            if handle is not None:
                handle.cancel()
        if self._follow is not None:
            self._follow.cancel()
        if self.store is not None and self._persisting:
            if self._dialog_writing is not None:
                await self._dialog_writing
            self._write_dialogs()
            if self._dialog_writing is not None:
                await self._dialog_writing
            self._persisting = False
            while self._checkpointing:
                await asyncio.sleep(0.01)
            try:
                await self.store.checkpoint()
            except Exception as e:
                log.error("dialog store: %s", e)
        gc.enable()
        self.systemd.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.loop.remove_signal_handler(sig)
        await self.operator.close()
        if self.control is not None:
            await self.control.close()
        await self.webhooks.close()
        await self.transports.close()
        if self.store is not None:
            await self.store.close()

    # -- timers, probing, the collector ------------------------------------------
    def _schedule_tick(self) -> None:
        now = self.loop.time()
        nxt = self.proxy.next_timer()
        delay = _TICK_MAX if nxt is None else min(max(nxt - now, 0.001), _TICK_MAX)
        self._tick = self.loop.call_later(delay, self._on_tick)

    def _on_tick(self) -> None:
        now = self.loop.time()
        try:
            self.proxy.handle_timer(now)
            self.gate.maintain(now)
        except Exception:
            self.proxy.stats.internal_errors += 1
            log.exception("internal error in timers")
        if self.gate.events:
            for kind, data in self.gate.take_events():
                self.events.emit(kind, data)
        self._schedule_tick()

    def _measure_lag(self) -> None:
        """How late this callback runs is the loop's lag: fed to the core's
        overload shedding (new INVITEs get 503 while it is high)."""
        now = self.loop.time()
        self.gate.set_lag(max(0.0, now - self._lag_due), now)
        self._lag_due = now + _LAG_PERIOD
        self._lag = self.loop.call_at(self._lag_due, self._measure_lag)

    def _trust_backends(self) -> None:
        """Destinations are trusted for in-dialog requests and never banned
        (the same hosts the relay rules trust)."""
        self.gate.set_backends(self.router.backend_hosts())

    def _trunk_route(self, source: Peer) -> str | None:
        lst = self.listeners[source.listener]
        trunk = self.gate.trunks.match(source.host, source.port, lst.proto)
        return trunk.route if trunk is not None else None

    def _collect(self) -> None:
        now = self.loop.time()
        if now < self._gc_due and gc.get_count()[0] < _GC_YOUNG_MAX:
            self._gc_handle = self.loop.call_later(_GC_CHECK, self._collect)
            return
        if now >= self._gc_full_at:
            self._gc_full_at = now + _GC_FULL_PERIOD
            gc.unfreeze()
            t0 = time.perf_counter()
            found = gc.collect()
            log.info(
                "full collection: %d unreachable objects, %.0f ms",
                found,
                (time.perf_counter() - t0) * 1000,
            )
        else:
            found = gc.collect()
            if found:
                log.debug("collector found %d unreachable objects", found)
        gc.freeze()
        ratelog.flush_all(now)  # summaries of floods that have stopped
        self._trim_memory()
        self._gc_due = self.loop.time() + _GC_PERIOD
        self._gc_handle = self.loop.call_later(_GC_CHECK, self._collect)

    def _trim_memory(self) -> None:
        """After a burst of transactions (a flood, a wave of unanswered
        requests) has drained, hand the freed heap back to the system:
        glibc keeps it otherwise, and RSS would stay at the peak."""
        open_now = len(self.proxy.server_txns) + len(self.proxy.client_txns)
        self._txn_peak = max(self._txn_peak, open_now)
        if self._txn_peak >= _TRIM_AFTER and open_now <= self._txn_peak // 4:
            self._txn_peak = open_now
            if _MALLOC_TRIM is not None:
                t0 = time.perf_counter()
                _MALLOC_TRIM(0)
                log.debug("malloc_trim: %.1f ms", (time.perf_counter() - t0) * 1000)

    def _schedule_probe(self, delay: float) -> None:
        self._probe = self.loop.call_later(delay, self._on_probe_tick)

    def _on_probe_tick(self) -> None:
        now = self.loop.time()
        try:
            for req in self.dispatcher.due_probes(now):
                self._send_probe(req.destination, req.method, req.from_uri, now)
        except Exception:
            log.exception("internal error while probing")
        nxt = self.dispatcher.next_probe_at()
        delay = 1.0 if nxt is None else min(max(nxt - self.loop.time(), 0.01), 1.0)
        self._schedule_probe(delay)

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
            timeout=self.cfg.dispatcher.probe_timeout,
        )
        if not sent:
            self._probe_done(dest, now, None, None, now)

    def _probe_done(
        self, dest: Destination, sent: float, code: int | None, msg: Message | None, now: float
    ) -> None:
        rtt = now - sent if code is not None else None
        self.operator.telemetry.probe(dest.key, code, rtt)
        events = self.dispatcher.on_probe_result(dest, code, rtt, now)
        if events:
            self._on_dst_events(events)

    def _on_dst_events(self, events: list[DstEvent]) -> None:
        for ev in events:
            self.events.emit(ev.kind, ev.data())

    # -- reload -----------------------------------------------------------------
    async def reload(self, by: str = "rpc", *, rate_limited: bool = True) -> ReloadResult:
        """Reread the store and swap the destination list atomically.

        Within ``reload_delta`` of the last reload it raises Kamailio's
        DispatcherError(500, "Ongoing reload"); a bad store raises
        (500, "Reload Failed"). ``rate_limited=False`` (a reload the store
        asked for) neither checks nor stamps that window, so an operator's
        reload right after an edit is not refused because of it.
        """
        from sipfleet.dispatch.errors import DispatcherError

        async with self._reload_lock:
            assert self.store is not None
            d = self.dispatcher
            if rate_limited:
                d.begin_reload(self.loop.time())
            t0 = time.perf_counter()
            try:
                specs = await self.store.load()
                if self.discovery is not None:  # [[discovery]]: members from DNS stay
                    specs = self.discovery.merge(specs)
                snapshot = await asyncio.to_thread(d.build, specs)
            except Exception as e:
                log.error("reload failed: %s", e)
                self.operator.telemetry.reloaded(False, time.perf_counter() - t0)
                raise DispatcherError(500, "Reload Failed", str(e)) from e
            result = d.install(snapshot)
            self.operator.telemetry.reloaded(True, time.perf_counter() - t0)
            self.router.invalidate()
            self._trust_backends()
            log.info(
                "reloaded by %s: %d added, %d removed, %d kept",
                by,
                result.added,
                result.removed,
                result.kept,
            )
            self._on_dst_events(list(result.events))
            return result

    async def _follow_store(self, store: AsyncStore) -> None:
        """Reload when the store says its destinations changed (a NOTIFY, a
        changed checksum, the server back after an outage), at most once per
        ``reload_delta``: changes within it are taken by one reload at its end."""
        last = -1e9
        try:
            async for _ in store.changes():
                wait = last + self.cfg.dispatcher.reload_delta - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                last = self.loop.time()
                try:
                    await self.reload(by="store-change", rate_limited=False)
                except Exception as e:
                    # Routing goes on with the last snapshot; the store says
                    # again when it is back (and this reload is retried then).
                    log.warning("reload on a store change failed: %s", e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("internal error following the store's changes")

    def _on_sighup(self) -> None:
        async def go() -> None:
            self.systemd.reloading()
            self.reconfigure()
            try:
                await self.reload(by="SIGHUP")
            except Exception as e:
                log.error("SIGHUP reload: %s", e)
            self.systemd.ready("reloaded by SIGHUP")

        self.loop.create_task(go())

    def reconfigure(self) -> None:
        """Reread the config file and apply what can change while running:
        [[route]], [dispatcher], [log] and the [tls] files. The rest needs a
        restart (logged)."""
        if self._load_config is None:
            return
        try:
            new = self._load_config()
        except Exception as e:  # ConfigError: say what is wrong, keep running
            log.error("SIGHUP: config not reloaded: %s", e)
            return
        old = self.cfg
        kept = list(_RESTART_SECTIONS)
        if self.tls is not None:
            try:
                self.tls.reload(new.tls)
                log.info("SIGHUP: TLS certificates reloaded (new handshakes use them)")
            except TlsError as e:
                log.error("SIGHUP: TLS not reloaded, keeping the old certificates: %s", e)
                kept.append("tls")
        self.dispatcher.reconfigure(new.dispatcher.to_settings())
        self.router.set_routes([r.to_settings() for r in new.route])
        logging.getLogger().setLevel(new.log.level.upper())
        for section in _RESTART_SECTIONS:
            if getattr(old, section) != getattr(new, section):
                log.warning("SIGHUP: [%s] changed: takes effect at the next restart", section)
        self.cfg = new.model_copy(update={s: getattr(old, s) for s in kept})
        log.info("SIGHUP: configuration reloaded ([[route]], [dispatcher], [log], [tls])")

    def status(self) -> dict[str, Any]:
        return {
            "dialogs": len(self.proxy.dialogs),
            "accepting": self.proxy.accepting,
            "store": self.store_status(),
            "cluster": self.cluster.status() if self.cluster is not None else None,
        }

    def _alerts(self) -> dict[str, object]:
        out: dict[str, object] = {}
        st = self.store_status()
        if st is not None and not st.get("ok", True):
            out["store"] = f"unreachable since {_iso(st.get('down_since'))}: {st.get('error')}"
        cl = self.cluster
        if cl is not None and not cl.ok:  # [cluster]
            out["cluster"] = (
                f"Redis unreachable since {_iso(cl.down_since)}: {cl.error}; "
                "routing on local counts"
            )
        return out

    def store_status(self) -> dict[str, Any] | None:
        """The store's health ({"url", "ok", "error", ...}), None without a store."""
        return self.store.status() if self.store is not None else None

    # -- dialogs that survive a restart -----------------------------------------------
    async def _open_dialog_store(self) -> None:
        cfg = self.cfg.store
        if not cfg.persist_dialogs or self.store is None:
            return
        self._persisting = True
        records = await self.store.load_dialogs(time.time())
        now, wall = self.loop.time(), time.time()
        table = self.proxy.dialogs
        for r in records:
            dlg = Dialog(r.call_id, r.from_tag, r.h_id, now - (wall - r.start))
            dlg.state = CONFIRMED
            dlg.to_tag = r.to_tag
            dlg.lifetime = r.expires - r.start
            dlg.from_line, dlg.to_line = r.from_line, r.to_line
            dlg.caller_contact, dlg.callee_contact = r.caller_contact, r.callee_contact
            dlg.route_set = r.route_set.split(b"\n") if r.route_set else []
            dlg.caller_cseq, dlg.callee_cseq = r.caller_cseq, r.callee_cseq
            dlg.caller_peer, dlg.callee_peer = _peer_from(r.caller_peer), _peer_from(r.callee_peer)
            dest = self.dispatcher.find(r.set_id, r.uri) if r.set_id is not None and r.uri else None
            dlg.dest = dest
            dlg.load_key = dest.load_key if dest is not None else r.load_key
            table.restore(dlg, now, r.expires - wall)
            self._dialogs_stored.add((r.call_id, r.from_tag))
        if records:
            log.info("restored %d open dialogs", len(records))
        table.on_confirm = self._dialog_confirmed
        self._persist = self.loop.call_later(_PERSIST_PERIOD, self._flush_dialogs)
        self._checkpoint = self.loop.call_later(_CHECKPOINT_PERIOD, self._checkpoint_dialogs)

    def _dialog_record(self, dlg: Dialog) -> DialogRecord:
        wall = time.time() - (self.loop.time() - dlg.start)
        dest = dlg.dest
        return DialogRecord(
            dlg.call_id,
            dlg.from_tag,
            dlg.to_tag,
            dlg.h_id,
            dest.set_id if isinstance(dest, Destination) else None,
            dest.uri if isinstance(dest, Destination) else None,
            dlg.load_key,
            wall,
            wall + dlg.lifetime,
            dlg.from_line,
            dlg.to_line,
            dlg.caller_contact,
            dlg.callee_contact,
            b"\n".join(dlg.route_set),
            dlg.caller_cseq,
            dlg.callee_cseq,
            _peer_text(dlg.caller_peer),
            _peer_text(dlg.callee_peer),
        )

    def _dialog_confirmed(self, dlg: Dialog) -> None:
        if len(self._dialog_writes) < _MAX_PENDING_WRITES:
            self._dialog_writes[(dlg.call_id, dlg.from_tag)] = dlg
        else:
            self._dialog_writes_dropped += 1

    def _dialog_ended(self, dlg: Dialog, reason: str) -> None:
        if reason == "no-ack":
            self.events.emit(
                "dialog-no-ack",
                {
                    "call_id": dlg.call_id.decode("utf-8", "replace"),
                    "uri": dlg.dest.uri if isinstance(dlg.dest, Destination) else None,
                },
            )
        if self.cluster is not None and reason in ("bye", "expired", "bye-elsewhere"):
            self.cluster.dialog_ended(dlg)  # [cluster] its record in Redis goes
        if not self._persisting:
            return
        key = (dlg.call_id, dlg.from_tag)
        if key in self._dialogs_stored:
            self._dialog_writes[key] = None
            # A row left behind by a crash comes back as a phantom call: its
            # deletion goes out within _DELETE_DELAY, not the next batch.
            if self._delete_soon is None:
                self._delete_soon = self.loop.call_later(_DELETE_DELAY, self._flush_deletes)
        else:
            # Confirmed and ended between two flushes: it never reaches the
            # disk at all (most short calls).
            self._dialog_writes.pop(key, None)

    def _flush_dialogs(self) -> None:
        self._persist = self.loop.call_later(_PERSIST_PERIOD, self._flush_dialogs)
        self._write_dialogs()

    def _flush_deletes(self) -> None:
        self._delete_soon = None
        self._write_dialogs()

    def _write_dialogs(self) -> None:
        """Hand the queued writes to the store as one batch, one batch at a
        time (SQLite writes it on the loop itself: see sipfleet.store.dialogs)."""
        store = self.store
        if store is None or not self._persisting or not self._dialog_writes:
            return
        if self._dialog_writing is not None:
            return  # taken when the batch in flight is done
        writes, self._dialog_writes = self._dialog_writes, {}
        puts = [self._dialog_record(d) for d in writes.values() if d is not None]
        deletes = [k for k, d in writes.items() if d is None]
        stored = self._dialogs_stored
        for k, d in writes.items():
            if d is None:
                stored.discard(k)
            else:
                stored.add(k)
        self._dialog_writing = self.loop.create_task(self._apply_dialogs(store, puts, deletes))

    async def _apply_dialogs(
        self, store: AsyncStore, puts: list[DialogRecord], deletes: list[tuple[bytes, bytes]]
    ) -> None:
        try:
            await store.apply_dialogs(puts, deletes)
        except Exception as e:
            log.error("cannot persist dialogs: %s", e)
        finally:
            self._dialog_writing = None
        if self._dialog_writes and self._delete_soon is None:
            self._delete_soon = self.loop.call_later(_DELETE_DELAY, self._flush_deletes)

    def _checkpoint_dialogs(self) -> None:
        self._checkpoint = self.loop.call_later(_CHECKPOINT_PERIOD, self._checkpoint_dialogs)
        store = self.store
        if store is None or self._checkpointing:
            return

        async def go() -> None:
            self._checkpointing = True
            try:
                await store.checkpoint()
            except Exception as e:
                log.error("dialog store: %s", e)
            finally:
                self._checkpointing = False

        self.loop.create_task(go())

    # -- drain ------------------------------------------------------------------
    async def drain(self, target: DestTarget, by: str) -> list[dict[str, Any]]:
        """No new calls to these destinations; calls on them finish."""
        return await self._set_admin(target, AdminState.DRAINING, by)

    async def undrain(self, target: DestTarget, by: str) -> list[dict[str, Any]]:
        return await self._set_admin(target, AdminState.ENABLED, by)

    async def _set_admin(
        self, target: DestTarget, admin: AdminState, by: str
    ) -> list[dict[str, Any]]:
        found = self.dispatcher.lookup(target)
        changed = (
            self.dispatcher.set_state(target, admin, since=time.time(), by=by) if found else []
        )
        for d in changed:
            if self.store is not None:
                st = self.dispatcher.state(d)
                try:
                    await self.store.save_admin_state(d.key, admin, st.admin_since, by)
                except Exception as e:
                    # The change holds in memory; a database store retries the
                    # write when it is back (see its status()).
                    log.error("cannot persist the admin state of %s: %s", d.uri, e)
                    self.events.emit(
                        "store-error", {"operation": "save_admin_state", "error": str(e)}
                    )
            self.events.emit(
                "state-changed",
                {"set": d.set_id, "uri": d.uri, "duid": d.duid, "state": admin.value, "by": by},
            )
            if admin is AdminState.DRAINING:
                self._check_drained(d)
        return [self._drain_entry(d, st) for d, st in found]

    def drain_status(self, target: DestTarget | None) -> list[dict[str, Any]]:
        if target is None:
            return [
                self._drain_entry(d, st)
                for d in self.dispatcher.destinations()
                if (st := self.dispatcher.state(d)).admin is AdminState.DRAINING
            ]
        return [self._drain_entry(d, st) for d, st in self.dispatcher.lookup(target)]

    def _drain_entry(self, d: Destination, st: DestState) -> dict[str, Any]:
        active = self.router.load.load(d.load_key)  # [cluster]: every node's calls
        draining = st.admin is AdminState.DRAINING
        return {
            "SET": d.set_id,
            "URI": d.uri,
            "DUID": d.duid,
            "STATE": st.admin.value,
            "HEALTH": st.health.value,
            "SINCE": _iso(st.admin_since),
            "FOR": int(time.time() - st.admin_since) if st.admin_since else None,
            "BY": st.admin_by or None,
            "ACTIVE_CALLS": active,
            "DRAINED": draining and active == 0,
        }

    def _on_dest_idle(self, dest: object) -> None:
        if isinstance(dest, Destination):
            self._check_drained(dest)

    def _check_drained(self, d: Destination) -> None:
        try:
            st = self.dispatcher.state(d)
        except KeyError:
            return
        if st.admin is AdminState.DRAINING and self.router.load.load(d.load_key) == 0:
            if self._drained_reported.get(d.key) == st.admin_since:
                return
            self._drained_reported[d.key] = st.admin_since
            waited = time.time() - st.admin_since if st.admin_since else None
            self.events.emit(
                "drained",
                {"set": d.set_id, "uri": d.uri, "duid": d.duid, "waited": waited},
            )


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


def _peer_text(peer: Peer | None) -> str | None:
    return None if peer is None else f"{peer.listener}|{peer.host}|{peer.port}"


def _peer_from(text: str | None) -> Peer | None:
    if not text:
        return None
    listener, host, port = text.split("|")
    return Peer(int(listener), host, int(port))


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class _NoLoad:
    def load(self, key: str) -> int:
        return 0


def run(cfg: Config, reload_config: Callable[[], Config] | None = None) -> None:
    """Serve until stopped; ``reload_config`` rereads the config on SIGHUP."""

    async def main() -> None:
        app = App(cfg, reload_config)
        await app.serve()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
