"""The running sipfleet process: start, serve, drain, stop.

Builds the pure core from the config, wires it to the socket adapters and
the loop's clock, drives its timers, and handles signals: SIGTERM/SIGINT
start a graceful stop, SIGHUP reloads.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any

from sipfleet.aio.sip import SipTransports
from sipfleet.config import Config
from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.net import Listener
from sipfleet.proxy.router import RoundRobinRouter, Router
from sipfleet.sip.message import Limits
from sipfleet.transaction.server import TimerConfig

__all__ = ["App", "run"]

log = logging.getLogger("sipfleet")

_TICK_MAX = 0.05  # timers fire at most this late; every SIP timer is >= 0.5 s


def build_settings(cfg: Config) -> ProxySettings:
    p = cfg.proxy
    aliases = []
    for a in p.aliases:
        host, _, port = a.rpartition(":") if a.count(":") == 1 else (a, "", "")
        aliases.append((host or a, int(port) if port else 5060))
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
    )


class App:
    def __init__(self, cfg: Config, router: Router | None = None) -> None:
        self.cfg = cfg
        self.loop = asyncio.get_running_loop()
        self.listeners = [
            Listener(i, spec.proto, spec.host, spec.port, spec.advertise)
            for i, spec in enumerate(cfg.proxy.listen)
        ]
        self.transports = SipTransports(
            self.listeners,
            self.loop.time,
            cfg.proxy.max_message_size,
            cfg.proxy.tcp_idle_timeout,
            cfg.proxy.tcp_max_connections,
        )
        if router is None:
            dests: Any = cfg.dispatcher.get(
                "destinations", ["sip:127.0.0.1:5070", "sip:127.0.0.1:5071"]
            )
            router = RoundRobinRouter(dests)
        self.proxy = Proxy(self.listeners, self.transports, router, build_settings(cfg))
        self.transports.attach(self.proxy)
        self._tick: asyncio.TimerHandle | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        await self.transports.start()
        # Everything built so far lives for the process: keep it out of the
        # collector's scans, and collect young objects less often (every call
        # allocates a few hundred; transactions are freed by refcount).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        self._schedule_tick()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop)
        for lst in self.listeners:
            log.info("listening on %s:%s", lst.proto, lst.advertise)

    def _schedule_tick(self) -> None:
        now = self.loop.time()
        nxt = self.proxy.next_timer()
        delay = _TICK_MAX if nxt is None else min(max(nxt - now, 0.001), _TICK_MAX)
        self._tick = self.loop.call_later(delay, self._on_tick)

    def _on_tick(self) -> None:
        try:
            self.proxy.handle_timer(self.loop.time())
        except Exception:
            self.proxy.stats.internal_errors += 1
            log.exception("internal error in timers")
        self._schedule_tick()

    def request_stop(self) -> None:
        self._stopped.set()

    async def serve(self) -> None:
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.remove_signal_handler(sig)
        await self.transports.close()


def run(cfg: Config) -> None:
    async def main() -> None:
        app = App(cfg)
        await app.serve()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
