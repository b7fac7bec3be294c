"""Kamailio's process, memory, socket and TCP methods over what sipfleet runs.

    core.psx / core.ps          the event loop, its listeners and control
                                endpoints, worker threads and asyncio tasks,
                                as Kamailio lists its processes (IDX, PID, DSC)
    core.sockets_list           the SIP listeners (also corex.list_sockets)
    core.aliases_list           the configured aliases (also corex.list_aliases)
    core.modules                the Kamailio modules whose part sipfleet plays
    core.shmmem / shm.stats     the process's memory, in the shm shape
    pkg.stats                   the same, as one private-memory entry
    core.runinfo                name, version, start time, uptime
    core.tcp_info / tcp_list /  the TCP connection table and its settings
    core.tcp_options

sipfleet is one process: a Kamailio "process" here is a component that
runs on the event loop (PID = the process id) or a thread (PID = its
thread id), so ``kamcli ps`` shows what actually runs. Memory comes from
the kernel's view of the process (``/proc/self/status``: VmRSS, VmHWM,
RssAnon) and what the machine has left (MemAvailable); ``fragments`` is
the number of objects the collector holds. The figures are read by the
process adapter (``sipfleet.aio.node``) through ``NodeView``; this module
only shapes them, so it stays free of I/O.

TLS: ``register_tls_methods`` registers ``tls.list``/``tls.info``/
``tls.options`` only when given a ``TlsView``; without TLS the registry
answers 500 "Method Not Found", as Kamailio without its tls module does.

Shapes, key order, help texts and faults are Kamailio 5.6.3's (core_cmd.c,
corex_rpc.c, tcp_rpc.c), compared with the real one in tests/e2e.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Protocol

from sipfleet.control.core_methods import ServerInfo
from sipfleet.control.registry import Param, Registry

__all__ = [
    "Memory",
    "NodeView",
    "ProcessRow",
    "SocketRow",
    "TcpConnInfo",
    "TcpSettings",
    "TlsView",
    "register_node_methods",
    "register_tls_methods",
]


class ProcessRow(NamedTuple):
    pid: int
    desc: str
    rank: int  # Kamailio's process rank: >0 SIP receivers, 0 main, <0 helpers


class SocketRow(NamedTuple):
    proto: str
    host: str
    port: int
    advertise: str | None  # None: as listened on


class Memory(NamedTuple):
    """Bytes, except ``fragments`` (objects the collector holds)."""

    total: int  # real_used + free: what the process can grow to
    free: int  # MemAvailable of the machine (or the cgroup's room left)
    used: int  # RssAnon: the heap and stacks, without mapped files
    real_used: int  # VmRSS
    max_used: int  # VmHWM: the resident peak
    fragments: int


class TcpConnInfo(NamedTuple):
    """One connection as ``core.tcp_list`` shows it (a read-only copy)."""

    id: int
    outbound: bool
    connected: bool
    remote_ip: str
    remote_port: int
    local_ip: str
    local_port: int
    idle: float  # seconds since the last byte either way
    write_queued: int  # bytes waiting to be written


class TcpSettings(NamedTuple):
    max_connections: int
    idle_timeout: float  # Kamailio's tcp_connection_lifetime
    max_pending_bytes: int  # per connection still connecting (tcp_conn_wq_max)


class NodeView(Protocol):
    """What the running process shows (``sipfleet.aio.node.NodeInfo``)."""

    def processes(self) -> list[ProcessRow]: ...
    def memory(self) -> Memory: ...
    def sockets(self) -> list[SocketRow]: ...
    def aliases(self) -> list[tuple[str, int]]: ...
    def modules(self) -> list[str]: ...
    def tcp_connections(self) -> list[TcpConnInfo]: ...
    def tcp_settings(self) -> TcpSettings: ...


class TlsView(Protocol):
    """What a TLS transport will show; fill in when sipfleet has TLS."""

    def connections(self) -> list[dict[str, Any]]: ...
    def info(self) -> dict[str, Any]: ...
    def options(self) -> dict[str, Any]: ...


_UNITS = {
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
}
_MAX_ROWS = 10_000  # bounds the answers of core.psx/ps and core.tcp_list


def _days(seconds: int) -> str:
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}d {h}h {m}m {s}s"


def _shm(mem: Memory, unit: int) -> dict[str, int]:
    return {
        "total": mem.total // unit,
        "free": mem.free // unit,
        "used": mem.used // unit,
        "real_used": mem.real_used // unit,
        "max_used": mem.max_used // unit,
        "fragments": mem.fragments,
    }


def register_node_methods(registry: Registry, node: NodeView, info: ServerInfo) -> None:
    def psx() -> list[dict[str, Any]]:
        rows = node.processes()[:_MAX_ROWS]
        return [{"IDX": i, "PID": r.pid, "DSC": r.desc} for i, r in enumerate(rows)]

    def ps() -> list[object]:
        out: list[object] = []
        for r in node.processes()[:_MAX_ROWS]:
            out.extend((r.pid, r.desc))
        return out

    def sockets_list() -> list[dict[str, Any]]:
        return [
            {
                "socket": {
                    "proto": s.proto,
                    "address": s.host,
                    "ipaddress": s.host,
                    "port": str(s.port),
                    "mcast": "no",
                    "mhomed": "no",
                    "virtual": "no",
                }
            }
            for s in node.sockets()
        ]

    def corex_sockets() -> list[dict[str, Any]]:
        return [
            {
                "PROTO": s.proto,
                "NAME": s.host,
                "ADDRLIST": {"ADDR": s.host},
                "PORT": str(s.port),
                "MCAST": "no",
                "MHOMED": "no",
                "VIRTUAL": "no",
                "SOCKNAME": "-",
                "ADVERTISE": s.advertise or "-",
            }
            for s in node.sockets()
        ]

    def aliases_list() -> dict[str, Any]:
        return {
            "myself_callbacks": "no",
            "aliases": [
                {"alias": {"proto": "*", "address": host, "port": port}}
                for host, port in node.aliases()
            ],
        }

    def corex_aliases() -> list[dict[str, Any]]:
        return [{"PROTO": "*", "ADDR": host, "PORT": port} for host, port in node.aliases()]

    def modules() -> list[str]:
        return node.modules()

    def shmmem(unit: str = "b") -> dict[str, int]:
        factor = _UNITS.get(unit.lower())
        if factor is None:
            factor = 1  # Kamailio falls back to bytes for an unknown unit
        return _shm(node.memory(), factor)

    def shm_stats() -> dict[str, int]:
        return _shm(node.memory(), 1)

    def pkg_stats() -> list[dict[str, Any]]:
        mem = node.memory()
        rows = node.processes()
        main = rows[0] if rows else ProcessRow(0, "main process", 0)
        return [
            {
                "entry": 0,
                "pid": main.pid,
                "rank": main.rank,
                "used": mem.used,
                "free": mem.free,
                "real_used": mem.real_used,
                "total_size": mem.total,
                "total_frags": mem.fragments,
                "desc": main.desc,
            }
        ]

    def runinfo() -> dict[str, Any]:
        now = info.now()
        up = max(0, int(now - info.started_at))
        return {
            "name": info.name,
            "version": info.version,
            "sourceid": info.repo_id,
            "compiler": info.compiler,
            "compiled": "",
            "time_now": time.ctime(now),
            "time_started": time.ctime(info.started_at),
            "uptime_secs": up,
            "utime_days": _days(up),
        }

    def tcp_info() -> dict[str, int]:
        conns = node.tcp_connections()
        settings = node.tcp_settings()
        return {
            "readers": 1,  # one event loop reads every connection
            "max_connections": settings.max_connections,
            "max_tls_connections": 0,
            "opened_connections": len(conns),
            "opened_tls_connections": 0,
            "write_queued_bytes": sum(c.write_queued for c in conns),
        }

    def tcp_list() -> list[dict[str, Any]]:
        settings = node.tcp_settings()
        lifetime = int(settings.idle_timeout)
        out = []
        for c in node.tcp_connections()[:_MAX_ROWS]:
            out.append(
                {
                    "id": c.id,
                    "type": "TCP",
                    "state": "CONN_OK" if c.connected else "CONN_CONNECT",
                    "timeout": max(int(settings.idle_timeout - c.idle), 0),
                    "lifetime": lifetime,
                    "ref_count": 1,  # the table's: sipfleet shares no connection object
                    "src_ip": c.remote_ip,
                    "src_port": c.remote_port,
                    "dst_ip": c.local_ip,
                    "dst_port": c.local_port,
                }
            )
        return out

    def tcp_options() -> dict[str, int]:
        settings = node.tcp_settings()
        return {
            "connection_lifetime": int(settings.idle_timeout),
            "max_connections(soft)": settings.max_connections,
            "max_tls_connections(soft)": 0,
            "no_connect": 0,  # sipfleet opens connections to send
            "async": 1,  # writes never block the loop
            "conn_wq_max": settings.max_pending_bytes,
            "crlf_ping": 1,  # CRLF CRLF keep-alives get their CRLF answer
            "accept_aliases": 0,
        }

    r = registry
    r.add("core.psx", psx, doc="Returns the detailed description of running processes.")
    r.add("core.ps", ps, doc="Returns the description of running processes.")
    r.add("core.sockets_list", sockets_list, doc="List local SIP server listen sockets")
    r.add("core.aliases_list", aliases_list, doc="List local SIP server host aliases")
    r.add("core.modules", modules, doc="List loaded modules")
    r.add(
        "core.shmmem",
        shmmem,
        doc="Returns shared memory info. It has an optional parameter that specifies the "
        "measuring unit: b - bytes (default), k or kb, m or mb, g or gb. Note: when using "
        "something different from bytes, the value is truncated.",
        params=[Param("unit", "str", optional=True, lenient=True)],
    )
    r.add("core.runinfo", runinfo, doc="Runtime info - binary name, version, uptime, ...")
    r.add("core.tcp_info", tcp_info, doc="Returns tcp related info.")
    r.add("core.tcp_list", tcp_list, doc="Returns tcp connections details.")
    r.add("core.tcp_options", tcp_options, doc="Returns active tcp options.")
    r.add("corex.list_sockets", corex_sockets, doc="List listening sockets")
    r.add("corex.list_aliases", corex_aliases, doc="List socket aliases")
    r.add("shm.stats", shm_stats, doc="Return shared memory stats")
    r.add("pkg.stats", pkg_stats, doc="Private memory (pkg) statistics per process")


def register_tls_methods(registry: Registry, tls: TlsView | None) -> None:
    """``tls.*`` once sipfleet has TLS; until then nothing is registered and
    the registry answers 500 "Method Not Found", as Kamailio without tls.so."""
    if tls is None:
        return
    view = tls

    def tls_list() -> list[dict[str, Any]]:
        return view.connections()

    def tls_info() -> dict[str, Any]:
        return view.info()

    def tls_options() -> dict[str, Any]:
        return view.options()

    registry.add("tls.list", tls_list, doc="List currently open TLS connections")
    registry.add("tls.info", tls_info, doc="Returns internal tls related info.")
    registry.add("tls.options", tls_options, doc="Dumps all the tls config options.")
