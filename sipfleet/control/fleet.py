"""The fleet at a glance: what the dashboard shows and the metrics export.

One reading of the running process: every destination (disabled ones too)
with its state, calls up, routed calls, branch outcomes and probe latency,
and the process-wide totals. Pure: it reads the core's state and counters
and builds plain values; the HTTP side serialises them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sipfleet import __version__
from sipfleet.dispatch.destination import Destination, StateKey
from sipfleet.dispatch.dispatcher import Dispatcher
from sipfleet.dispatch.flags import DS_PROBING
from sipfleet.dispatch.policy import DEST_COUNTS
from sipfleet.dispatch.state import AdminState, DestState

if TYPE_CHECKING:
    from sipfleet.aio.events import EventBus
    from sipfleet.control.registry import Registry
    from sipfleet.control.telemetry import ProbeRecord, Telemetry
    from sipfleet.proxy.core import Proxy

__all__ = ["STATES", "DestView", "FleetApp", "dest_state", "destinations", "fleet_view"]

#: A destination's state, one word: the operator's say first, then probing's.
STATES = ("active", "trying", "inactive", "draining", "disabled")

_ZERO = (0,) * len(DEST_COUNTS)


class _CountingRouter(Protocol):
    @property
    def counts(self) -> dict[StateKey, list[int]]: ...


class FleetApp(Protocol):
    """What is read of the running process (``sipfleet.aio.app.App``)."""

    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def router(self) -> _CountingRouter: ...
    @property
    def proxy(self) -> Proxy: ...
    @property
    def events(self) -> EventBus: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def started_wall(self) -> float: ...


def dest_state(st: DestState) -> str:
    if st.admin is AdminState.DISABLED:
        return "disabled"
    if st.admin is AdminState.DRAINING:
        return "draining"
    return st.health.value


@dataclass(frozen=True, slots=True)
class DestView:
    dest: Destination
    state: DestState
    active_calls: int
    counts: tuple[int, ...] | list[int]  # see DEST_COUNTS
    probes: ProbeRecord | None

    @property
    def duid(self) -> str:
        return self.dest.duid or ""


def destinations(app: FleetApp, telemetry: Telemetry) -> Iterator[DestView]:
    """Every loaded destination, in Kamailio's walk order (sets by id)."""
    d = app.dispatcher
    load = app.proxy.dialogs.load
    counts = app.router.counts
    probes = telemetry.probes
    for dest in d.destinations():
        yield DestView(
            dest,
            d.state(dest),
            load(dest.load_key),
            counts.get(dest.key, _ZERO),
            probes.get(dest.key),
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def fleet_view(app: FleetApp, telemetry: Telemetry) -> dict[str, Any]:
    """The dashboard's snapshot: JSON-ready, one entry per destination."""
    sets: dict[int, list[dict[str, Any]]] = {}
    for v in destinations(app, telemetry):
        st = v.state
        c = v.counts
        p = v.probes
        sets.setdefault(v.dest.set_id, []).append(
            {
                "set": v.dest.set_id,
                "uri": v.dest.uri,
                "duid": v.duid,
                "state": dest_state(st),
                "health": st.health.value,
                "admin": st.admin.value,
                "probing": st.probing,
                "probe_flag": bool(v.dest.flags & DS_PROBING),  # configured to be probed
                "priority": v.dest.priority,
                "weight": v.dest.attrs.weight,
                "active_calls": v.active_calls,
                "routed": c[0],
                "failovers": c[1],
                "replies": {DEST_COUNTS[i]: c[i] for i in range(2, len(DEST_COUNTS)) if c[i]},
                "latency_ms": _ms(p.last) if p else None,
                "latency_est_ms": _ms(p.estimate) if p else None,
                "since": st.admin_since,
                "by": st.admin_by or None,
            }
        )
    proxy = app.proxy
    stats = proxy.stats
    dialogs = proxy.dialogs
    return {
        "time": time.time(),
        "version": __version__,
        "uptime": max(time.time() - app.started_wall, 0.0),
        "accepting": proxy.accepting,
        "totals": {
            "requests": stats.rcv_requests,
            "invites": stats.by_method.get("INVITE", 0),
            "routed": sum(d["routed"] for x in sets.values() for d in x),
            "dialogs": len(dialogs),
            "early_dialogs": dialogs.early,
            "failovers": stats.failovers,
            "loop_lag_ms": _ms(telemetry.loop_lag_last),
        },
        "sets": [{"id": k, "destinations": sets[k]} for k in sorted(sets)],
    }
