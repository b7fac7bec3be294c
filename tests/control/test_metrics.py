"""The metrics, the dashboard's snapshot and what feeds them, over the real pure core.

A call goes through the proxy core (no sockets: a recording sink and a fake clock):
the first destination answers 503, the call fails over to the second, which answers
200. The collector's text output is parsed back with prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sipfleet.aio.events import EventBus
from sipfleet.aio.http_metrics import METRIC_NAMES, metrics_registry
from sipfleet.config import Config, DispatcherConfig, ListenSpec, ProxyConfig
from sipfleet.control.fleet import fleet_view
from sipfleet.control.jsonrpc import JsonRpcHandler
from sipfleet.control.methods import RPC_CALLER
from sipfleet.control.registry import Registry
from sipfleet.control.telemetry import PROBE_BUCKETS, Histogram, Telemetry
from sipfleet.core.factory import build_core
from sipfleet.core.rpc import register_rpc
from sipfleet.dispatch import parse_list
from sipfleet.proxy.net import Peer
from sipfleet.testing import UA, FakeClock, RecordingSink

LIST = """\
1 sip:127.0.0.1:5070 0 0 duid=x
1 sip:127.0.0.1:5071 0 0 duid=y
2 sip:127.0.0.1:5072 4 0 duid=z
"""
CALLER = Peer(0, "127.0.0.1", 5080)


class App:
    """What the collector reads of ``sipfleet.aio.app.App``: the core its factory builds."""

    def __init__(self) -> None:
        self.clock = FakeClock(0.0)
        self.started_wall = time.time() - 10
        self.store = None
        self.events = EventBus()
        self.registry = Registry()
        self.sink = RecordingSink()
        cfg = Config(
            proxy=ProxyConfig(listen=[ListenSpec(proto="udp", host="127.0.0.1", port=5060)]),
            dispatcher=DispatcherConfig(ping_interval=0, algorithm=4),
        )
        self.core = build_core(
            cfg,
            parse_list(LIST, "t"),
            {},
            now=lambda: self.clock.now,
            sink=self.sink,
            events=self.events,
            lock=asyncio.Lock,
            started_wall=self.started_wall,
        )
        self.dispatcher = self.core.dispatcher
        self.router = self.core.router
        self.proxy = self.core.proxy
        self.telemetry = Telemetry(lambda: (d.key for d in self.dispatcher.destinations()))

    def scrape(self) -> dict[str, Any]:
        """{family name: {frozenset(labels.items()): value}} of one scrape."""
        text = generate_latest(metrics_registry(self, self.telemetry)).decode()
        out: dict[str, Any] = {}
        for fam in text_string_to_metric_families(text):
            samples = out.setdefault(fam.name, {})
            for s in fam.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
        return out


def _value(scrape: dict[str, Any], family: str, sample: str | None = None, **labels: str) -> float:
    want = frozenset(labels.items())
    found = [
        v
        for (name, got), v in scrape[family].items()
        if (sample is None or name == sample) and want <= got
    ]
    assert len(found) == 1, (family, labels, scrape[family])
    return float(found[0])


def _dest(uri: str, duid: str, set_id: str = "1") -> dict[str, str]:
    return {"set": set_id, "uri": uri, "duid": duid}


@pytest.fixture
def app() -> App:
    return App()


def _call_with_failover(app: App) -> tuple[str, str]:
    """An INVITE: the first candidate answers 503, the next 200. (first, second) URI."""
    uac = UA("127.0.0.1", 5080)
    app.proxy.receive(uac.invite("sip:svc@127.0.0.1", call_id="m1"), CALLER, app.clock.now)
    sent = [p for p, _ in app.sink.sent if p.port in (5070, 5071)]
    first = sent[0].port
    second = 5071 if first == 5070 else 5070
    (inv,) = app.sink.take_to("127.0.0.1", first)
    app.proxy.receive(
        UA("127.0.0.1", first).respond(inv, 503, "Busy"), Peer(0, "127.0.0.1", first), app.clock.now
    )
    (inv2,) = [m for m in app.sink.take_to("127.0.0.1", second) if m.method == "INVITE"]
    app.proxy.receive(
        UA("127.0.0.1", second).respond(inv2, 200), Peer(0, "127.0.0.1", second), app.clock.now
    )
    return f"sip:127.0.0.1:{first}", f"sip:127.0.0.1:{second}"


def test_every_name_is_exported_from_the_start(app: App) -> None:
    from sipfleet.aio.operator import OperatorViews

    class Loop:  # OperatorViews only schedules on start(): not called here
        def time(self) -> float:
            return 0.0

    ops = OperatorViews(app, Loop())  # type: ignore[arg-type]
    ops.http_routes("/RPC")
    text = generate_latest(ops.metrics.registry()).decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    missing = set(METRIC_NAMES) - families
    assert not missing
    scrape = app.scrape()
    # Every destination, the disabled one too, with its state one-hot.
    z = _dest("sip:127.0.0.1:5072", "z", "2")
    assert _value(scrape, "sipfleet_destination_up", **z) == 0
    assert _value(scrape, "sipfleet_destination_state", state="disabled", **z) == 1
    assert _value(scrape, "sipfleet_destination_state", state="active", **z) == 0
    x = _dest("sip:127.0.0.1:5070", "x")
    assert _value(scrape, "sipfleet_destination_up", **x) == 1
    assert _value(scrape, "sipfleet_destination_state", state="active", **x) == 1
    assert _value(scrape, "sipfleet_destination_active_calls", **x) == 0
    assert _value(scrape, "sipfleet_destination_routed", **x) == 0
    assert _value(scrape, "sipfleet_accepting") == 1


def test_a_call_that_fails_over_is_counted_where_it_went(app: App) -> None:
    first, second = _call_with_failover(app)
    s = app.scrape()
    d1 = _dest(first, "x" if first.endswith("5070") else "y")
    d2 = _dest(second, "x" if second.endswith("5070") else "y")
    assert _value(s, "sipfleet_destination_routed", **d1) == 1  # the router's first choice
    assert _value(s, "sipfleet_destination_routed", **d2) == 0
    assert _value(s, "sipfleet_destination_failovers", **d1) == 1
    assert _value(s, "sipfleet_destination_failovers", **d2) == 0
    assert _value(s, "sipfleet_destination_replies", **{"class": "5xx"}, **d1) == 1
    assert _value(s, "sipfleet_destination_replies", **{"class": "2xx"}, **d2) == 1
    assert _value(s, "sipfleet_destination_active_calls", **d1) == 0
    assert _value(s, "sipfleet_destination_active_calls", **d2) == 1
    assert _value(s, "sipfleet_requests_received", method="INVITE") == 1
    assert _value(s, "sipfleet_requests_received", method="BYE") == 0
    assert _value(s, "sipfleet_replies_received", **{"class": "5xx"}) == 1
    assert _value(s, "sipfleet_replies_received", **{"class": "2xx"}) == 1
    assert _value(s, "sipfleet_failovers") == 1
    # answered: the 2xx went up, its ACK has not come (the test sends none)
    assert _value(s, "sipfleet_dialogs_active", state="answered") == 1
    assert _value(s, "sipfleet_transactions", side="server") == 1
    assert _value(s, "sipfleet_transactions", side="client") >= 2
    # The dashboard's snapshot agrees.
    view = fleet_view(app, app.telemetry)
    by_uri = {d["uri"]: d for st in view["sets"] for d in st["destinations"]}
    assert by_uri[second]["active_calls"] == 1 and by_uri[first]["routed"] == 1
    assert by_uri[first]["replies"] == {"5xx": 1}
    assert by_uri["sip:127.0.0.1:5072"]["state"] == "disabled"
    assert view["totals"]["routed"] == 1 and view["totals"]["invites"] == 1


def test_an_unknown_method_counts_as_other(app: App) -> None:
    uac = UA("127.0.0.1", 5080)
    app.proxy.receive(uac.request("FOO", "sip:svc@127.0.0.1", call_id="o1"), CALLER, 0.0)
    s = app.scrape()
    assert _value(s, "sipfleet_requests_received", method="OTHER") == 1
    assert ("sipfleet_requests_received_total", frozenset({("method", "FOO")})) not in s[
        "sipfleet_requests_received"
    ]


def test_probe_latency_histogram_and_results(app: App) -> None:
    x = ("sip:127.0.0.1:5070", "x")
    key = (1, x[0])
    app.telemetry.probe(key, 200, 0.0015)
    app.telemetry.probe(key, 200, 0.004)
    app.telemetry.probe(key, 404, 0.2)
    app.telemetry.probe(key, None, None)
    s = app.scrape()
    d = _dest(*x)
    fam = "sipfleet_destination_probe_latency_seconds"
    assert _value(s, fam, f"{fam}_count", **d) == 3
    assert _value(s, fam, f"{fam}_sum", **d) == pytest.approx(0.2055)
    assert _value(s, fam, f"{fam}_bucket", le="0.002", **d) == 1
    assert _value(s, fam, f"{fam}_bucket", le="0.005", **d) == 2
    assert _value(s, fam, f"{fam}_bucket", le="0.2", **d) == 3
    assert _value(s, fam, f"{fam}_bucket", le="+Inf", **d) == 3
    assert _value(s, "sipfleet_destination_probes", result="2xx", **d) == 2
    assert _value(s, "sipfleet_destination_probes", result="4xx", **d) == 1
    assert _value(s, "sipfleet_destination_probes", result="timeout", **d) == 1
    view = fleet_view(app, app.telemetry)
    (dest,) = [d for d in view["sets"][0]["destinations"] if d["uri"] == x[0]]
    assert dest["latency_ms"] == 200.0  # the last reply's round trip


def test_reloads_loop_lag_and_rpc_calls_by_transport(app: App) -> None:
    app.telemetry.reloaded(True, 0.003)
    app.telemetry.reloaded(False, 0.2)
    app.telemetry.lag(0.004)
    register_rpc(app.registry, app.core)
    handler = JsonRpcHandler(app.registry)
    body = b'{"jsonrpc": "2.0", "method": "dlg.stats_active", "id": 1}'
    handler.handle(body)  # no transport said who: "rpc"
    token = RPC_CALLER.set("http 127.0.0.1")
    try:
        handler.handle(body)
        handler.handle(body)
    finally:
        RPC_CALLER.reset(token)
    s = app.scrape()
    assert _value(s, "sipfleet_reloads", result="ok") == 1
    assert _value(s, "sipfleet_reloads", result="failed") == 1
    fam = "sipfleet_reload_duration_seconds"
    assert _value(s, fam, f"{fam}_bucket", le="0.005") == 1
    assert _value(s, fam, f"{fam}_count") == 2
    assert _value(s, "sipfleet_event_loop_lag_last_seconds") == 0.004
    lag = "sipfleet_event_loop_lag_seconds"
    assert _value(s, lag, f"{lag}_bucket", le="0.005") == 1
    calls = "sipfleet_rpc_calls"
    assert _value(s, calls, method="dlg.stats_active", transport="http") == 2
    assert _value(s, calls, method="dlg.stats_active", transport="rpc") == 1


def test_removed_destinations_leave_the_counts_and_probes(app: App) -> None:
    _call_with_failover(app)
    app.telemetry.probe((1, "sip:127.0.0.1:5070"), 200, 0.001)
    assert (1, "sip:127.0.0.1:5070") in app.router.counts
    app.dispatcher.remove(1, "sip:127.0.0.1:5070", now=100.0)
    app.router.invalidate()
    assert (1, "sip:127.0.0.1:5070") not in app.router.counts
    assert (1, "sip:127.0.0.1:5071") in app.router.counts
    s = app.scrape()  # a scrape prunes the probe records
    assert (1, "sip:127.0.0.1:5070") not in app.telemetry.probes
    uris = {dict(labels)["uri"] for _, labels in s["sipfleet_destination_up"]}
    assert uris == {"sip:127.0.0.1:5071", "sip:127.0.0.1:5072"}


def test_probe_records_stay_bounded_without_scrapes() -> None:
    loaded = [(1, f"sip:10.0.0.{i}") for i in range(3)]
    tel = Telemetry(lambda: loaded)
    for i in range(1000):  # destinations come and go, nobody scrapes
        tel.probe((1, f"sip:10.1.{i // 250}.{i % 250}"), 200, 0.001)
    assert len(tel.probes) <= 2 * len(loaded) + 64


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    h = Histogram(PROBE_BUCKETS)
    for v in (0.001, 0.0011, 7.0):
        h.observe(v)
    cum = dict(h.cumulative())
    assert cum["0.001"] == 1  # le is inclusive
    assert cum["0.002"] == 2
    assert cum["5.0"] == 2 and cum["+Inf"] == 3
    assert h.count == 3 and h.sum == pytest.approx(7.0021)
