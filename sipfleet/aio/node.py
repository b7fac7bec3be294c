"""What the running process is made of, for core.psx, core.shmmem, core.tcp_*...

Read on each call from the kernel (``/proc/self/status``, ``/proc/meminfo``),
the interpreter (threads, the collector) and the loop (tasks); nothing is
cached, nothing estimated. See ``sipfleet.control.node_methods`` for the
shapes.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from typing import TYPE_CHECKING

from sipfleet.aio.sip import _MAX_PENDING_BYTES
from sipfleet.control.node_methods import (
    Memory,
    ProcessRow,
    SocketRow,
    TcpConnInfo,
    TcpSettings,
)

if TYPE_CHECKING:
    from sipfleet.aio.app import App

__all__ = ["NodeInfo", "read_memory"]

# The control endpoints as Kamailio names the processes that serve them.
_ENDPOINT_DESC = {
    "binrpc": "ctl handler",
    "binrpc_tcp": "ctl handler",
    "binrpc_udp": "ctl handler",
    "fifo": "JSONRPCS FIFO",
    "dgram": "JSONRPCS DATAGRAM",
    "dgram_udp": "JSONRPCS DATAGRAM",
    "http": "JSONRPCS HTTP",
}
_MAX_TASKS = 1000  # a busy loop may hold many short tasks: list the first ones


def _kib_fields(path: str, names: tuple[str, ...]) -> dict[str, int]:
    """``Name:   123 kB`` lines of a /proc file, in bytes; missing ones are 0."""
    out = dict.fromkeys(names, 0)
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    parts = rest.split()
                    if parts and parts[0].isdigit():
                        out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    except OSError:
        pass
    return out


def _cgroup_room() -> int | None:
    """Bytes the process's cgroup (v2) may still use, when it has a limit."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            current = int(f.read().strip())
        return max(int(limit) - current, 0)
    except (OSError, ValueError):
        return None


def read_memory() -> Memory:
    status = _kib_fields("/proc/self/status", ("VmRSS", "VmHWM", "RssAnon"))
    free = _kib_fields("/proc/meminfo", ("MemAvailable",))["MemAvailable"]
    room = _cgroup_room()
    if room is not None:
        free = min(free, room) if free else room
    rss = status["VmRSS"]
    return Memory(
        total=rss + free,
        free=free,
        used=status["RssAnon"],
        real_used=rss,
        max_used=status["VmHWM"],
        fragments=gc.get_freeze_count() + sum(gc.get_count()),
    )


class NodeInfo:
    """``NodeView`` over one running ``App``."""

    def __init__(self, app: App) -> None:
        self.app = app

    def processes(self) -> list[ProcessRow]:
        app = self.app
        pid = os.getpid()
        rows = [ProcessRow(pid, "main process - asyncio event loop", 0)]
        for lst in app.listeners:
            kind = "udp receiver" if lst.proto == "udp" else f"{lst.proto} receiver"
            rows.append(ProcessRow(pid, f"{kind} sock={lst.host}:{lst.port}", lst.index + 1))
        rows.append(ProcessRow(pid, "timer (transactions, dialogs)", -1))
        rows.append(ProcessRow(pid, "dispatcher keepalive timer", -1))
        control = app.control
        if control is not None:
            for name, address in control.endpoints.items():
                desc = _ENDPOINT_DESC.get(name, name)
                rows.append(ProcessRow(pid, f"{desc} {address}", -2))
        main = threading.main_thread()
        for t in threading.enumerate():
            if t is main:
                continue
            rows.append(ProcessRow(t.native_id or pid, f"thread {t.name}", -3))
        try:
            tasks = asyncio.all_tasks(app.loop)
        except RuntimeError:
            tasks = set()
        for task in sorted(tasks, key=lambda t: t.get_name())[:_MAX_TASKS]:
            coro = task.get_coro()
            what = getattr(coro, "__qualname__", type(coro).__name__)
            rows.append(ProcessRow(pid, f"task {task.get_name()} {what}", -4))
        return rows

    def memory(self) -> Memory:
        return read_memory()

    def sockets(self) -> list[SocketRow]:
        out = []
        for lst in self.app.listeners:
            own = f"{lst.host}:{lst.port}" if lst.family == 4 else f"[{lst.host}]:{lst.port}"
            out.append(
                SocketRow(
                    lst.proto, lst.host, lst.port, None if lst.advertise == own else lst.advertise
                )
            )
        return out

    def aliases(self) -> list[tuple[str, int]]:
        return list(self.app.proxy.settings.aliases)

    def modules(self) -> list[str]:
        """The Kamailio modules whose part sipfleet plays, in Kamailio's
        order (the last loaded first): a script checking for "dispatcher"
        or "dialog" finds them."""
        app = self.app
        names = ["tm", "sl", "kex", "corex"]
        if app.cfg.proxy.record_route:
            names.append("rr")
        names += ["dispatcher", "dialog", "tmx"]
        control = app.control
        endpoints = control.endpoints if control is not None else {}
        if any(k.startswith("binrpc") for k in endpoints):
            names.append("ctl")
        if "http" in endpoints:
            names.append("xhttp")
        if any(k in endpoints for k in ("http", "fifo", "dgram", "dgram_udp")):
            names.append("jsonrpcs")
        return list(reversed(names))

    def tcp_connections(self) -> list[TcpConnInfo]:
        return self.app.transports.tcp_connections()

    def tcp_counters(self) -> dict[str, int]:
        c = self.app.transports.tcp_counters
        return {name: int(getattr(c, name)) for name in c.__slots__}

    def tcp_settings(self) -> TcpSettings:
        t = self.app.transports
        return TcpSettings(t.max_connections, t.idle_timeout, _MAX_PENDING_BYTES)
