"""kex's ``stats.fetch``, ``stats.fetchn`` and ``stats.clear_statistics``, and
the ``shmem:`` and ``tcp:`` statistics, over the one ``StatsBook``.

Kamailio 5.6.3 (kex core_stats.c, measured)::

    stats.fetch all        {"core.rcv_requests": "3", ...}   values as strings
    stats.fetchn tcp:      {"tcp.established": 3, ...}       values as numbers
    stats.clear_statistics sl:   "sl:xxx_replies = 0"        JSON-RPC keeps the
                                                             last line only

Names: ``all``, ``group:``, a bare name (its first group), ``group.name`` or
``group:name``; several may follow the first. A name that matches nothing
adds nothing (``{}``). The memory figures come from the process (see
``sipfleet.control.node_methods``); ``tcp:`` from the TCP adapter's own
counters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sipfleet.control.methods import Stat, StatsBook
from sipfleet.control.node_methods import Memory, TcpConnInfo
from sipfleet.control.registry import Param, Registry, RpcFault

__all__ = ["StatsSource", "node_stats", "register_stats_methods"]

_MAX_NAMES = 32  # names read after the first, like the other stats.* methods


class StatsSource(Protocol):
    """What the process adapter counts beyond the core (``sipfleet.aio.node``)."""

    def memory(self) -> Memory: ...
    def tcp_connections(self) -> list[TcpConnInfo]: ...
    def tcp_counters(self) -> dict[str, int]: ...


def node_stats(source: StatsSource) -> list[Stat]:
    """``shmem:`` (the process's memory, see Memory) and ``tcp:`` statistics."""

    def mem(field: str) -> Callable[[], int]:
        return lambda: int(getattr(source.memory(), field))

    def tcp(name: str) -> Callable[[], int]:
        return lambda: source.tcp_counters().get(name, 0)

    stats = [
        Stat("shmem", "fragments", mem("fragments"), False),
        Stat("shmem", "free_size", mem("free"), False),
        Stat("shmem", "max_used_size", mem("max_used"), False),
        Stat("shmem", "real_used_size", mem("real_used"), False),
        Stat("shmem", "total_size", mem("total"), False),
        Stat("shmem", "used_size", mem("used"), False),
        Stat("tcp", "current_opened_connections", lambda: len(source.tcp_connections()), False),
        Stat(
            "tcp",
            "current_write_queue_size",
            lambda: sum(c.write_queued for c in source.tcp_connections()),
            False,
        ),
    ]
    for name in (
        "con_reset",
        "con_timeout",
        "connect_failed",
        "connect_success",
        "established",
        "local_reject",
        "passive_open",
        "sendq_full",
    ):
        stats.append(Stat("tcp", name, tcp(name)))
    return stats


def register_stats_methods(registry: Registry, book: StatsBook) -> None:
    def fetch_into(names: tuple[object, ...], numeric: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for what in names:
            if not isinstance(what, str):
                break  # kex's "*s" scan stops at the first non-string
            for s in book.fetch(what):
                value = book.value(s)
                out[f"{s.group}.{s.name}"] = value if numeric else str(value)
        return out

    def fetch(first: str, *rest: object) -> dict[str, Any]:
        return fetch_into((first, *rest), numeric=False)

    def fetchn(first: str, *rest: object) -> dict[str, Any]:
        return fetch_into((first, *rest), numeric=True)

    def clear(first: str, *rest: object) -> str | None:
        lines = book.clear([first, *rest])
        # One rpl_printf per statistic: jsonrpcs answers with the last one.
        return lines[-1] if lines else None

    more = [Param(f"stat{n}", "any", optional=True) for n in range(2, _MAX_NAMES + 1)]
    registry.add(
        "stats.fetch",
        fetch,
        doc="fetch core and modules stats as string values",
        params=[Param("stat", "str"), *more],
        bad_params=RpcFault(400, "Please provide which stats to retrieve"),
    )
    registry.add(
        "stats.fetchn",
        fetchn,
        doc="fetch core and modules stats as number values",
        params=[Param("stat", "str"), *more],
        bad_params=RpcFault(400, "Please provide which stats to retrieve"),
    )
    registry.add(
        "stats.clear_statistics",
        clear,
        doc="clear core and modules stats (verbose operation)",
        params=[Param("stat", "str"), *more],
        bad_params=RpcFault(400, "Please provide stats name"),
    )
