"""The control plane, kept from starving SIP.

``ControlPlane`` starts every RPC transport (``start_control``) on an event
loop of its own in a thread (``[control] own_thread``): accepting, reading,
parsing and encoding 10,000 requests happen there, not between SIP
datagrams. The method calls themselves run on the SIP loop, where the state
lives, through ``RpcGate``: at most ``max_inflight`` at once, at most
``max_queued`` waiting; any more are answered at once with the fault
503 "Server Busy" (HTTP status 503), counted. A slow method (a store write,
a drain that waits) holds a slot, never the SIP loop: they await their work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sipfleet.aio.rpc_http import HttpRoute, HttpServer
from sipfleet.aio.rpc_servers import ControlServers, start_control
from sipfleet.config.control import ControlConfig
from sipfleet.control.jsonrpc import JsonRpcHandler
from sipfleet.control.methods import RPC_CALLER
from sipfleet.control.registry import Handler, Registry, RpcFault

__all__ = ["BUSY", "ControlPlane", "RpcGate", "on_loop", "soon_on"]

log = logging.getLogger("sipfleet.rpc")

BUSY = RpcFault(503, "Server Busy")
T = TypeVar("T")
_SWITCH_INTERVAL = 0.0005


class RpcGate:
    """Bounds method calls: ``max_inflight`` running on ``target`` loop, ``max_queued``
    waiting; calls come from the transports' loop (the same one or another)."""

    def __init__(
        self, target: asyncio.AbstractEventLoop, max_inflight: int, max_queued: int
    ) -> None:
        self.target = target
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.running = 0
        self.waiting = 0
        self.rejected = 0
        self.calls = 0
        self._sem: asyncio.Semaphore | None = None  # made on the transports' loop

    def wrap(self, registry: Registry) -> Registry:
        """A registry with the same methods, each called through the gate."""
        gated = Registry(system_methods=False)
        for name in registry.names():
            m = registry.get(name)
            assert m is not None
            g = gated.add(
                name,
                functools.partial(self.call, m.handler),
                doc=m.doc,
                params=m.params,
                bad_params=m.bad_params,
            )
            # One count of calls per method (what /metrics reads), whichever
            # registry the transports call through.
            object.__setattr__(g, "calls", m.calls)
        return gated

    def call(self, handler: Handler, *args: object) -> object:
        if self.waiting >= self.max_queued and self.running >= self.max_inflight:
            self.rejected += 1
            raise BUSY
        return self._call(handler, args, RPC_CALLER.get())

    async def _call(self, handler: Handler, args: tuple[object, ...], caller: str) -> object:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_inflight)
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.calls += 1
        try:
            here = asyncio.get_running_loop()
            if here is self.target:
                return await _run(handler, args, caller)
            fut = asyncio.run_coroutine_threadsafe(_run(handler, args, caller), self.target)
            return await asyncio.wrap_future(fut)
        finally:
            self.running -= 1
            self._sem.release()

    def stat_values(self) -> list[tuple[str, str, Callable[[], int], bool]]:
        return [
            ("sipfleet", "rpc_calls", lambda: self.calls, True),
            ("sipfleet", "rpc_rejected_busy", lambda: self.rejected, True),
            ("sipfleet", "rpc_inflight", lambda: self.running, False),
            ("sipfleet", "rpc_queued", lambda: self.waiting, False),
        ]


async def _run(handler: Handler, args: tuple[object, ...], caller: str) -> object:
    RPC_CALLER.set(caller)  # this task's copy: events and logs say who called
    out = handler(*args)
    if asyncio.iscoroutine(out) or isinstance(out, asyncio.Future):
        out = await out
    return out


class ControlPlane:
    """Every transport over one registry, on its own loop and thread (or the SIP loop)."""

    def __init__(
        self, registry: Registry, cfg: ControlConfig, http_routes: Sequence[HttpRoute] = ()
    ) -> None:
        self.cfg = cfg
        # Extra HTTP paths (/metrics, the dashboard) run on the transports' loop:
        # what they read of the state they read through on_loop()/soon_on().
        self.http_routes = list(http_routes)
        self.sip_loop = asyncio.get_running_loop()
        self.gate = RpcGate(self.sip_loop, cfg.max_inflight, cfg.max_queued)
        self.registry = self.gate.wrap(registry)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.servers: ControlServers | None = None

    def stat_values(self) -> list[tuple[str, str, Callable[[], int], bool]]:
        return self.gate.stat_values()

    @property
    def endpoints(self) -> dict[str, str]:
        return self.servers.endpoints if self.servers is not None else {}

    @property
    def run_dir(self) -> Path | None:
        return self.servers.run_dir if self.servers is not None else None

    @property
    def jsonrpc(self) -> JsonRpcHandler | None:
        return self.servers.jsonrpc if self.servers is not None else None

    @property
    def http(self) -> HttpServer | None:
        return self.servers.http if self.servers is not None else None

    async def start(self) -> ControlPlane:
        if not self.cfg.own_thread:
            self.servers = await start_control(
                self.registry, self.cfg, http_routes=self.http_routes
            )
            return self
        # While the control thread holds the GIL, the SIP loop waits up to the
        # switch interval (5 ms by default) for each wake-up: keep that short.
        sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL))
        self.loop = _new_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(self.loop,), name="sipfleet-control", daemon=True
        )
        self._thread.start()
        try:
            fut = asyncio.run_coroutine_threadsafe(
                start_control(self.registry, self.cfg, http_routes=self.http_routes), self.loop
            )
            self.servers = await asyncio.wrap_future(fut)
        except BaseException:
            await self._stop_thread()
            raise
        return self

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        if self.cfg.cpu_share < 1.0:
            _CpuShare(loop, self.cfg.cpu_share).start()
        loop.run_forever()

    async def close(self) -> None:
        servers, self.servers = self.servers, None
        if servers is not None:
            if self.loop is None:
                await servers.close()
            else:
                fut = asyncio.run_coroutine_threadsafe(servers.close(), self.loop)
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(fut)
        await self._stop_thread()

    async def _stop_thread(self) -> None:
        loop, thread = self.loop, self._thread
        self.loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10.0)
        if not thread.is_alive():
            loop.close()


async def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` run on ``loop`` (the SIP loop, where the state lives), awaited
    from any loop: what a control-plane handler on its own thread uses to read
    or change state without racing the SIP loop."""
    if asyncio.get_running_loop() is loop:
        return fn(*args)

    async def call() -> T:
        return fn(*args)

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), loop))


def soon_on(loop: asyncio.AbstractEventLoop, fn: Callable[..., object]) -> Callable[..., None]:
    """A callback that runs ``fn`` on ``loop`` whichever thread calls it: e.g. an
    EventBus subscriber (called on the SIP loop) feeding a queue of the control loop."""

    def call(*args: object) -> None:
        loop.call_soon_threadsafe(fn, *args)

    return call


class _CpuShare:
    """Keeps the control thread under ``share`` of one CPU: every period, if it
    used more, it sleeps (without the GIL) until its average is back under.
    A storm of requests then takes longer instead of taking the SIP loop's time."""

    PERIOD = 0.01
    MAX_SLEEP = 0.05

    def __init__(self, loop: asyncio.AbstractEventLoop, share: float) -> None:
        self.loop = loop
        self.share = share
        self.throttled = 0.0  # seconds slept, for the curious
        self._cpu = time.thread_time()
        self._wall = time.monotonic()

    def start(self) -> None:
        self.loop.call_later(self.PERIOD, self._check)

    def _check(self) -> None:
        cpu, wall = time.thread_time(), time.monotonic()
        used, elapsed = cpu - self._cpu, wall - self._wall
        owed = used / self.share - elapsed
        if owed > 0:
            pause = min(owed, self.MAX_SLEEP)
            time.sleep(pause)
            self.throttled += pause
            wall = time.monotonic()
        if wall - self._wall >= 1.0 or owed <= 0:  # a sliding start keeps bursts bounded
            self._cpu, self._wall = time.thread_time(), wall
        self.loop.call_later(self.PERIOD, self._check)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: Any = uvloop.new_event_loop()
    return loop  # type: ignore[no-any-return]
