"""The running sipfleet process: start, serve, drain, stop.

The adapter around the node's pure core: loads the store, builds the core
with ``sipfleet.core.factory.build_core``, attaches it to the socket
adapters, arms one loop timer for the core's next deadline
(``Core.handle_timer``: SIP timers, probes, dialog write batches), runs the
store writes the core hands out, starts the control plane, and handles signals:
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
from typing import Any, cast

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
from sipfleet.control.core_methods import ServerInfo, register_core_methods
from sipfleet.control.methods import Stat
from sipfleet.control.paths import prepare_run_dir
from sipfleet.control.registry import Registry
from sipfleet.core.factory import build_core, build_gate, build_listeners
from sipfleet.core.node import Core, CoreHooks
from sipfleet.dispatch.destination import Destination, DestinationSpec
from sipfleet.dispatch.dispatcher import Dispatcher
from sipfleet.dispatch.generation import ReloadResult
from sipfleet.dispatch.policy import DispatchRouter
from sipfleet.proxy.core import Proxy
from sipfleet.proxy.dialogs import Dialog
from sipfleet.store.base import AsyncStore
from sipfleet.store.dialogs import DialogRecord
from sipfleet.store.open import EXAMPLE_DESTINATIONS, open_store

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
_CHECKPOINT_PERIOD = 5.0  # the dialog store's log is written back this often, off the loop
_TICK_IDLE = 1.0  # nothing scheduled at all (no gate): look again after this
# Timer resolution: deadlines closer together than this share one wake-up. Every
# SIP timer is >= 0.5 s, so 10 ms late is 2 % at most; at 1,000 calls/s the
# transactions' thousands of distinct deadlines a second cost 100 wake-ups, not
# thousands (each wake-up is a loop callback, a handle, a pass over the queues).
_TICK_RESOLUTION = 0.01
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
        self.listeners = build_listeners(cfg)
        self.tls = TlsContexts(cfg.tls) if _needs_tls(cfg) else None
        self.transports = SipTransports(
            self.listeners,
            self.loop.time,
            cfg.proxy.max_message_size,
            conn_limits(cfg),
            self.tls,
        )
        self.store: AsyncStore | None = None
        self._core: Core | None = None  # start() builds it from the store's contents
        self.registry = Registry()
        self.control: ControlPlane | None = None
        self._tick: asyncio.TimerHandle | None = None  # the core's next deadline
        self._tick_at = 0.0
        self._ticked_at = 0.0  # when the core's timers last ran
        self._gc_handle: asyncio.TimerHandle | None = None
        self._gc_due = 0.0
        self._gc_full_at = 0.0
        self._stopped = asyncio.Event()
        self._stopping = False
        self._dialog_writing: asyncio.Task[None] | None = None  # one batch at a time
        self._follow: asyncio.Task[None] | None = None
        self._checkpointing = False
        self._checkpoint: asyncio.TimerHandle | None = None
        self.discovery: DiscoveryService | None = None  # [[discovery]]: members from DNS
        self.cluster: Cluster | None = None  # [cluster]: sipfleet.aio.cluster
        self.gate = build_gate(cfg)
        self._lag: asyncio.TimerHandle | None = None
        self._lag_due = 0.0
        self._txn_peak = 0

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
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
        key = await asyncio.to_thread(route_key, cfg)
        clustered = cfg.cluster.enabled
        telemetry = self.operator.telemetry
        hooks = CoreHooks(
            reloaded=telemetry.reloaded,
            merge_specs=self._merge_discovered,
            probe_result=telemetry.probe,
            dialog_confirmed=self._cluster_confirmed if clustered else None,
            dialog_ended=self._cluster_ended if clustered else None,
        )
        # Off the loop: loading the destinations resolves their names.
        self._core = await asyncio.to_thread(
            functools.partial(
                build_core,
                cfg,
                specs,
                details,
                now=self.loop.time,
                sink=self.transports.sink,
                events=self.events,
                lock=asyncio.Lock,
                route_key=key,
                store=store,
                resolver=resolve_destination,
                listeners=self.listeners,
                gate=self.gate,
                hooks=hooks,
                run_blocking=asyncio.to_thread,
                started_wall=self.started_wall,
                registry=self.registry,
                wake=self._wake,
            )
        )
        await self._open_dialog_store()
        if cfg.cluster.enabled:  # [cluster]: shared admin state and call-load
            self._start_cluster()
        self.transports.attach(self.proxy)
        await self.transports.start()
        self._register_methods()
        # Every method is registered before the control plane answers its first call.
        # The core's reload lock (made by asyncio.Lock above): a refresh and a reload never overlap.
        reload_lock = cast(asyncio.Lock, self.core.reload_lock)
        self.discovery = DiscoveryService(self, cfg.discovery, cfg.dns, lock=reload_lock)
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
        self.core.emit_dst_events(self.dispatcher.initial_events())
        self.discovery.start()  # [[discovery]]: members from DNS (sipfleet.aio.discovery)
        self._schedule_tick()
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

    # -- the core's parts -------------------------------------------------------------
    @property
    def core(self) -> Core:
        """The node's pure core (built by start())."""
        if self._core is None:
            raise RuntimeError("App.start() has not run")
        return self._core

    @property
    def dispatcher(self) -> Dispatcher:
        return self.core.dispatcher

    @property
    def router(self) -> DispatchRouter:
        return self.core.router

    @property
    def proxy(self) -> Proxy:
        return self.core.proxy

    def _merge_discovered(self, specs: list[DestinationSpec]) -> list[DestinationSpec]:
        """[[discovery]]: members from DNS stay across a reload."""
        return self.discovery.merge(specs) if self.discovery is not None else specs

    def _cluster_confirmed(self, dlg: Dialog) -> None:
        if self.cluster is not None:
            self.cluster.dialog_confirmed(dlg)

    def _cluster_ended(self, dlg: Dialog, reason: str) -> None:
        if self.cluster is not None and reason in ("bye", "expired", "bye-elsewhere"):
            self.cluster.dialog_ended(dlg)  # [cluster] its record in Redis goes

    def _check_drained(self, d: Destination) -> None:
        """[cluster]: the last calls of a drain may end on another node."""
        self.core.admin.check_drained(d)

    def _start_cluster(self) -> None:
        cfg = self.cfg.cluster
        lst = self.listeners[0]
        host = lst.host if lst.host not in ("0.0.0.0", "::") else socket.gethostname()
        self.cluster = cluster = Cluster(self, cfg, cfg.node or f"{host}:{lst.port}")
        self.core.use_load(cluster.view)
        self.proxy.on_foreign_bye = cluster.foreign_bye
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
        from sipfleet.control.node_methods import register_node_methods, register_tls_methods
        from sipfleet.control.security import register_security_methods
        from sipfleet.control.uac import register_uac_methods
        from sipfleet.core.rpc import register_rpc

        node = NodeInfo(self)
        register_rpc(
            self.registry,
            self.core,
            extra_stats=lambda: self._extra_stats(node),
            cluster_status=lambda: dict(self.cluster.status()) if self.cluster else None,
        )
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
        writes = self.core.writes  # the dialog write buffer's bound
        out.append(Stat("sipfleet", "dialog_writes_dropped", lambda: writes.dropped))
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
        for handle in (self._tick, self._gc_handle, self._lag, self._checkpoint):
            if handle is not None:
                handle.cancel()
        self._tick = None  # a batch finishing now must not arm it again (see _wake)
        if self._follow is not None:
            self._follow.cancel()
        if self.store is not None and self._core is not None and self.core.writes.enabled:
            if self._dialog_writing is not None:
                await self._dialog_writing
            self._write_dialogs()
            if self._dialog_writing is not None:
                await self._dialog_writing
            self.core.writes.enabled = False
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
        """One loop timer, armed for the core's next deadline (no polling): a
        deadline added earlier than it later (a new transaction's timer, a
        dialog deletion) re-arms it through ``_wake``."""
        core = self._core
        assert core is not None
        now = self.loop.time()
        nxt = core.next_deadline()
        # At least 1 ms ahead (uvloop may fire a timer a little early, and an
        # early call would find nothing due), and _TICK_RESOLUTION after the last.
        floor = max(now + 0.001, self._ticked_at + _TICK_RESOLUTION)
        at = now + _TICK_IDLE if nxt is None else max(nxt, floor)
        self._tick_at = at
        self._tick = self.loop.call_at(at, self._on_tick)
        core.armed(at)

    def _wake(self, when: float) -> None:
        """The core has a deadline earlier than the armed one."""
        when = max(when, self._ticked_at + _TICK_RESOLUTION)
        tick = self._tick
        if tick is not None and when < self._tick_at:
            tick.cancel()
            self._tick_at = when
            self._tick = self.loop.call_at(when, self._on_tick)
            core = self._core
            assert core is not None
            core.armed(when)

    def _on_tick(self) -> None:
        core = self._core
        assert core is not None
        self._ticked_at = now = self.loop.time()
        batch = core.handle_timer(now)
        if batch is not None:
            self._apply_writes(*batch)
        self._schedule_tick()

    def _measure_lag(self) -> None:
        """How late this callback runs is the loop's lag: fed to the core's
        overload shedding (new INVITEs get 503 while it is high)."""
        now = self.loop.time()
        self.gate.set_lag(max(0.0, now - self._lag_due), now)
        self._lag_due = now + _LAG_PERIOD
        self._lag = self.loop.call_at(self._lag_due, self._measure_lag)

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

    # -- reload -----------------------------------------------------------------
    async def reload(self, by: str = "rpc", *, rate_limited: bool = True) -> ReloadResult:
        """Reread the store and swap the destination list (``Core.reload``)."""
        return await self.core.reload(by, rate_limited=rate_limited)

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
        self.router.set_routes(new.route_specs())
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
        writes = self.core.writes
        if not writes.enabled or self.store is None:
            return
        self.core.restore_dialogs(await self.store.load_dialogs(time.time()))
        writes.start(self.loop.time())  # batches from now on (Core.handle_timer)
        self._checkpoint = self.loop.call_later(_CHECKPOINT_PERIOD, self._checkpoint_dialogs)

    def _write_dialogs(self) -> None:
        """Hand whatever is queued to the store now (at close)."""
        batch = self.core.take_writes()
        if batch is not None:
            self._apply_writes(*batch)

    def _apply_writes(self, puts: list[DialogRecord], deletes: list[tuple[bytes, bytes]]) -> None:
        """One batch at a time (SQLite writes it on the loop itself: see sipfleet.store.dialogs)."""
        store = self.store
        if store is None:  # cannot happen: the buffer is enabled only with a store
            self.core.writes.done(self.loop.time())
            return
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
            self.core.writes.done(self.loop.time())

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


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


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
