"""The node's RPC methods over its core, registered the same way by the
server (``sipfleet.aio.app``) and the tests: dispatcher.*, drain, dlg.*,
stats.*, sipfleet.status / events / explain_route."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sipfleet.control.dlg_methods import register_dlg_methods
from sipfleet.control.drain import register_drain_methods
from sipfleet.control.methods import Stat, StatsBook, register_methods
from sipfleet.control.registry import Registry
from sipfleet.control.statistics import register_stats_methods
from sipfleet.core.node import Core

__all__ = ["register_rpc"]


def register_rpc(
    registry: Registry,
    core: Core,
    *,
    extra_stats: Callable[[], Iterable[Stat]] | None = None,
    cluster_status: Callable[[], dict[str, Any] | None] | None = None,
) -> StatsBook:
    """Register the core's methods; the book serves the stats.* methods."""
    book = register_methods(registry, core, extra_stats=extra_stats, cluster_status=cluster_status)
    register_stats_methods(registry, book)
    register_drain_methods(registry, core.admin)
    register_dlg_methods(registry, core)
    return book
