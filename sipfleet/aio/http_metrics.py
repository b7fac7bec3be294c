"""``GET /metrics``: Prometheus text format, read from the live state at scrape time.

A custom collector (the official ``prometheus_client``) turns the core's
counters, the dispatcher's state and the ``Telemetry`` into metric families
when Prometheus asks; nothing is counted twice on the per-message path.
Every loaded destination is exported from the start, disabled ones too,
with the labels ``set``, ``uri`` and ``duid`` ("" when it has none).
Destinations sharing a duid share their call count (it is counted per
duid, as Kamailio's call-load), so ``sum()`` them only over unique duids.

``LoopLag`` measures the event loop's lag: a timer every 0.25 s compares
when it ran with when it was due.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from sipfleet import __version__
from sipfleet.aio.rpc_http import HttpRoute
from sipfleet.aio.rpc_thread import on_loop
from sipfleet.control.fleet import STATES, FleetApp, dest_state, destinations
from sipfleet.control.telemetry import Histogram, Telemetry
from sipfleet.dispatch.policy import DEST_COUNTS

__all__ = [
    "METRIC_NAMES",
    "DestRow",
    "FleetCollector",
    "LoopLag",
    "Metrics",
    "destination_families",
    "metrics_registry",
]

_DEST = ["set", "uri", "duid"]
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")

#: Every metric name the collector exports (histograms and counters by family
#: name: Prometheus adds _bucket/_sum/_count and _total), for the README and tests.
METRIC_NAMES: Final = (
    "sipfleet_build_info",
    "sipfleet_accepting",
    "sipfleet_destination_up",
    "sipfleet_destination_state",
    "sipfleet_destination_active_calls",
    "sipfleet_destination_weight",
    "sipfleet_destination_routed",
    "sipfleet_destination_failovers",
    "sipfleet_destination_replies",
    "sipfleet_destination_probes",
    "sipfleet_destination_probe_latency_seconds",
    "sipfleet_requests_received",
    "sipfleet_replies_received",
    "sipfleet_requests_forwarded",
    "sipfleet_replies_forwarded",
    "sipfleet_replies_local",
    "sipfleet_transactions",
    "sipfleet_transactions_active",
    "sipfleet_dialogs_active",
    "sipfleet_dialogs_ended",
    "sipfleet_drops",
    "sipfleet_malformed_messages",
    "sipfleet_failovers",
    "sipfleet_retransmissions",
    "sipfleet_timeouts",
    "sipfleet_transport_errors",
    "sipfleet_internal_errors",
    "sipfleet_reloads",
    "sipfleet_reload_duration_seconds",
    "sipfleet_event_loop_lag_seconds",
    "sipfleet_event_loop_lag_last_seconds",
    "sipfleet_rpc_calls",
    "sipfleet_events",
    "sipfleet_dashboard_streams",
    "sipfleet_dashboard_streams_refused",
    "sipfleet_dashboard_events_dropped",
)


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    return [(le, float(n)) for le, n in h.cumulative()]


#: One destination as read: (set, uri, duid), up, state, active calls, weight, the
#: router's counts (DEST_COUNTS), probe results, probe latency (buckets, sum).
DestRow = tuple[
    tuple[str, str, str],
    bool,
    str,
    int,
    int,
    tuple[int, ...],
    list[tuple[str, int]] | None,
    tuple[list[tuple[str, float]], float] | None,
]


def destination_families(rows: list[DestRow]) -> list[Metric]:
    """The per-destination families of a reading (pure: runs off the loop)."""
    up = GaugeMetricFamily(
        "sipfleet_destination_up",
        "1 when the destination takes new calls (enabled, not inactive)",
        labels=_DEST,
    )
    state = GaugeMetricFamily(
        "sipfleet_destination_state",
        "1 for the destination's state (active, trying, inactive, draining, disabled)",
        labels=[*_DEST, "state"],
    )
    active = GaugeMetricFamily(
        "sipfleet_destination_active_calls",
        "Dialogs up or being set up on the destination (per duid when it has one)",
        labels=_DEST,
    )
    weight = GaugeMetricFamily(
        "sipfleet_destination_weight", "The destination's configured weight", labels=_DEST
    )
    routed = CounterMetricFamily(
        "sipfleet_destination_routed", "New requests the router sent here first", labels=_DEST
    )
    failovers = CounterMetricFamily(
        "sipfleet_destination_failovers",
        "Branches here that ended with a code that fails over (a timeout counts as 408)",
        labels=_DEST,
    )
    replies = CounterMetricFamily(
        "sipfleet_destination_replies",
        "Final outcomes of branches here by class (a local timeout counts as 408)",
        labels=[*_DEST, "class"],
    )
    probes = CounterMetricFamily(
        "sipfleet_destination_probes",
        "OPTIONS probes by result: the reply's class, or timeout",
        labels=[*_DEST, "result"],
    )
    latency = HistogramMetricFamily(
        "sipfleet_destination_probe_latency_seconds",
        "Round trip of the OPTIONS probes that got a reply",
        labels=_DEST,
    )
    for labels_t, is_up, now, calls, w, c, results, hist in rows:
        labels = list(labels_t)
        up.add_metric(labels, 1.0 if is_up else 0.0)
        for s in STATES:
            state.add_metric([*labels, s], 1.0 if s == now else 0.0)
        active.add_metric(labels, float(calls))
        weight.add_metric(labels, float(w))
        routed.add_metric(labels, float(c[0]))
        failovers.add_metric(labels, float(c[1]))
        for i in range(3, len(DEST_COUNTS)):  # 2xx-6xx: a branch ends with a final
            replies.add_metric([*labels, DEST_COUNTS[i]], float(c[i]))
        if results is not None:
            for result, n in results:
                probes.add_metric([*labels, result], float(n))
        if hist is not None:
            latency.add_metric(labels, hist[0], hist[1])
    return [up, state, active, weight, routed, failovers, replies, probes, latency]


class FleetCollector(Collector):
    """The metric families of one running sipfleet, built at each scrape."""

    def __init__(self, app: FleetApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    def describe(self) -> list[Metric]:
        return []  # names depend on nothing but are built at collect time

    def collect(self) -> Iterator[Metric]:
        rows, totals = self.read()
        yield from destination_families(rows)
        yield from totals

    def read(self) -> tuple[list[DestRow], list[Metric]]:
        """One reading, on the loop: per-destination values as plain rows (turned
        into families by ``destination_families``, anywhere), the totals as families."""
        self.telemetry.prune()
        rows: list[DestRow] = []
        for v in destinations(self.app, self.telemetry):
            st = v.state
            p = v.probes
            rows.append(
                (
                    (str(v.dest.set_id), v.dest.uri, v.duid),
                    not st.skip,
                    dest_state(st),
                    v.active_calls,
                    v.dest.attrs.weight,
                    tuple(v.counts),
                    None if p is None else sorted(p.results.items()),
                    None if p is None else (_buckets(p.latency), p.latency.sum),
                )
            )
        return rows, list(self._totals())

    def _totals(self) -> Iterator[Metric]:
        app, tel = self.app, self.telemetry
        proxy = app.proxy
        st = proxy.stats
        dialogs = proxy.dialogs
        info = GaugeMetricFamily("sipfleet_build_info", "sipfleet's version", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
        yield GaugeMetricFamily(
            "sipfleet_accepting",
            "1 while new calls are taken (0 during a graceful stop)",
            value=float(proxy.accepting),
        )
        methods = CounterMetricFamily(
            "sipfleet_requests_received", "SIP requests received by method", labels=["method"]
        )
        for method, n in sorted(st.by_method.items()):
            methods.add_metric([method], float(n))
        yield methods
        classes = CounterMetricFamily(
            "sipfleet_replies_received", "SIP replies received by class", labels=["class"]
        )
        for i, cls in enumerate(_CLASSES, start=1):
            classes.add_metric([cls], float(st.reply_classes[i]))
        yield classes
        for name, doc, value in (
            ("sipfleet_requests_forwarded", "Requests sent on (branches, ACKs)", st.fwd_requests),
            ("sipfleet_replies_forwarded", "Replies relayed upstream", st.fwd_replies),
            ("sipfleet_replies_local", "Replies sipfleet generated itself", st.local_replies),
            ("sipfleet_malformed_messages", "Messages that failed to parse", st.bad_msg_hdr),
            ("sipfleet_failovers", "Requests sent to a next candidate", st.failovers),
            ("sipfleet_retransmissions", "Retransmissions absorbed", st.retransmissions),
            ("sipfleet_timeouts", "Branches that timed out", st.timeouts),
            ("sipfleet_transport_errors", "Peers that could not be reached", st.transport_errors),
            ("sipfleet_transactions_refused", "Transactions refused: table full", st.txn_refused),
            (
                "sipfleet_internal_errors",
                "sipfleet's own bugs caught at run time",
                st.internal_errors,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=float(value))
        drops = CounterMetricFamily(
            "sipfleet_drops",
            "Messages dropped without an answer: request (unroutable ACK, unanswerable "
            "malformed request) or reply (stray, or no way back)",
            labels=["reason"],
        )
        drops.add_metric(["request"], float(st.drop_requests))
        drops.add_metric(["reply"], float(st.drop_replies))
        drops.add_metric(["relay_denied"], float(st.relay_denied))
        gate = proxy.gate
        if gate is not None:
            gs = gate.stats
            drops.add_metric(["banned"], float(gs.banned_drops))
            drops.add_metric(["untrusted"], float(gs.untrusted))
            drops.add_metric(["shed"], float(gs.shed))
        yield drops
        if gate is not None:
            yield GaugeMetricFamily(
                "sipfleet_bans_active",
                "Sources banned now (floods, scanners, by RPC)",
                value=float(len(gate.bans)),
            )
            bans = CounterMetricFamily("sipfleet_bans", "Bans made, by cause", labels=["reason"])
            bans.add_metric(["flood"], float(gs.floods))
            bans.add_metric(["scanner"], float(gs.scanners))
            bans.add_metric(["all"], float(gs.bans))
            yield bans
            yield GaugeMetricFamily(
                "sipfleet_overloaded",
                "1 while new INVITEs are shed (503)",
                value=float(gate.overloaded),
            )
        txns = CounterMetricFamily("sipfleet_transactions", "Transactions created", labels=["side"])
        txns.add_metric(["server"], float(st.uas_transactions))
        txns.add_metric(["client"], float(st.uac_transactions))
        yield txns
        inuse = GaugeMetricFamily(
            "sipfleet_transactions_active", "Transactions in memory", labels=["side"]
        )
        inuse.add_metric(["server"], float(len(proxy.server_txns)))
        inuse.add_metric(["client"], float(len(proxy.client_txns)))
        yield inuse
        up = GaugeMetricFamily("sipfleet_dialogs_active", "Dialogs by state", labels=["state"])
        up.add_metric(["early"], float(dialogs.early))
        up.add_metric(["answered"], float(dialogs.answered))  # 2xx sent, ACK not yet
        up.add_metric(["confirmed"], float(dialogs.count - dialogs.early - dialogs.answered))
        yield up
        ended = CounterMetricFamily(
            "sipfleet_dialogs_ended",
            "Dialogs ended: bye (or dlg.end_dlg), failed (never answered), expired, no_ack",
            labels=["reason"],
        )
        ended.add_metric(["failed"], float(dialogs.failed))
        ended.add_metric(["expired"], float(dialogs.expired))
        ended.add_metric(["no_ack"], float(dialogs.no_ack))
        ended.add_metric(
            ["bye"],
            float(max(dialogs.processed - dialogs.failed - dialogs.expired - dialogs.no_ack, 0)),
        )
        yield ended
        reloads = CounterMetricFamily(
            "sipfleet_reloads", "Destination reloads by result", labels=["result"]
        )
        for result in ("ok", "failed"):
            reloads.add_metric([result], float(tel.reloads[result]))
        yield reloads
        took = HistogramMetricFamily(
            "sipfleet_reload_duration_seconds", "How long each reload took"
        )
        took.add_metric([], _buckets(tel.reload_seconds), tel.reload_seconds.sum)
        yield took
        lag = HistogramMetricFamily(
            "sipfleet_event_loop_lag_seconds", "How late the event loop ran a 0.25 s timer"
        )
        lag.add_metric([], _buckets(tel.loop_lag), tel.loop_lag.sum)
        yield lag
        yield GaugeMetricFamily(
            "sipfleet_event_loop_lag_last_seconds",
            "The last lag measured",
            value=tel.loop_lag_last,
        )
        rpc = CounterMetricFamily(
            "sipfleet_rpc_calls",
            "RPC calls by method and transport",
            labels=["method", "transport"],
        )
        for m in app.registry.methods():
            for transport, n in sorted(m.calls.items()):
                rpc.add_metric([m.name, transport], float(n))
        yield rpc
        events = CounterMetricFamily("sipfleet_events", "Events by kind", labels=["event"])
        for kind, n in sorted(app.events.counts.items()):
            events.add_metric([kind], float(n))
        yield events


def metrics_registry(app: FleetApp, telemetry: Telemetry) -> CollectorRegistry:
    """Everything ``/metrics`` serves, collected synchronously (for tests and tools)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(app, telemetry))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _render(rows: list[DestRow], rest: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*destination_families(rows), *rest]))
    return generate_latest(registry)


class Metrics:
    """``GET /metrics``: the state is read on the loop (a few microseconds per
    destination), the text built in a worker thread (prometheus_client's
    formatting costs ~10 us per sample, ~30 samples per destination), one
    scrape at a time."""

    def __init__(
        self,
        app: FleetApp,
        telemetry: Telemetry,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.fleet = FleetCollector(app, telemetry)
        # The loop that owns the state (the SIP loop); the route may be served
        # by another one (the control plane's thread): the reading hops there.
        self.loop = loop
        self.collectors: list[Collector] = [
            ProcessCollector(registry=None),
            PlatformCollector(registry=None),
        ]
        self._lock = asyncio.Lock()

    def add(self, collector: Collector) -> None:
        self.collectors.append(collector)

    def registry(self) -> CollectorRegistry:
        """Every family, collected synchronously."""
        registry = CollectorRegistry(auto_describe=False)
        for c in (self.fleet, *self.collectors):
            registry.register(c)
        return registry

    async def render(self) -> bytes:
        async with self._lock:
            if self.loop is None:
                rows, totals = self.fleet.read()
            else:
                rows, totals = await on_loop(self.loop, self.fleet.read)
            rest = [*totals, *(m for c in self.collectors for m in c.collect())]
            return await asyncio.to_thread(_render, rows, rest)

    def route(self) -> HttpRoute:
        async def serve(request: web.Request) -> web.StreamResponse:
            body = await self.render()
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        return HttpRoute("GET", "/metrics", serve)


class LoopLag:
    """Feeds ``Telemetry.lag`` from a timer every ``interval`` seconds."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, telemetry: Telemetry, interval: float = 0.25
    ) -> None:
        self.loop = loop
        self.telemetry = telemetry
        self.interval = interval
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._due = self.loop.time() + self.interval
        self._handle = self.loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        self.telemetry.lag(now - self._due)
        self._due = now + self.interval
        self._handle = self.loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
