"""The routing policy at run time: the compiled ``[[route]]`` rules
(``RoutingPolicy``), and the proxy's Router over them and the Dispatcher
(``DispatchRouter``).

Rules come in as plain ``RouteSpec`` (``sipfleet.dispatch.settings``; the
config side is ``sipfleet.config.routes``). mypyc compiles this module: it
runs for every new request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sipfleet.dispatch.destination import Destination, StateKey
from sipfleet.dispatch.dispatcher import Dispatcher
from sipfleet.dispatch.health import DstEvent
from sipfleet.dispatch.select import LoadView, Selection
from sipfleet.dispatch.settings import RouteSpec
from sipfleet.proxy.router import Decision, Target
from sipfleet.sip.address import parse_address
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.uri import parse_uri

if TYPE_CHECKING:
    from sipfleet.proxy.net import Peer
    from sipfleet.sip.message import Message

__all__ = ["DEST_COUNTS", "DispatchRouter", "RoutingPolicy"]

#: What ``DispatchRouter.counts`` holds per destination, by index: new requests
#: routed there first, branches there that ended with a code that fails over,
#: then branch outcomes (a final reply, or a local 408 / 503) by class 1xx-6xx.
DEST_COUNTS = ("routed", "failovers", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx")
_ROUTED = 0
_FAILOVERS = 1


class _Compiled:
    __slots__ = (
        "cfg",
        "failover",
        "header",
        "host",
        "limit",
        "methods",
        "nets",
        "reject",
        "user",
    )

    def __init__(self, cfg: RouteSpec, default_codes: frozenset[int], default_limit: int) -> None:
        m = cfg.match
        self.cfg = cfg
        self.user = re.compile(m.ruri_user) if m.ruri_user else None
        self.host = re.compile(m.ruri_host, re.I) if m.ruri_host else None
        self.header = (
            (m.header.name.lower().encode(), re.compile(m.header.value)) if m.header else None
        )
        self.nets = [ipaddress.ip_network(c, strict=False) for c in m.source]
        self.methods = frozenset(x.upper() for x in m.method)
        self.failover = (
            frozenset(cfg.failover_codes) if cfg.failover_codes is not None else default_codes
        )
        self.limit = cfg.limit or default_limit
        self.reject = (
            503,
            "Service Unavailable",
            (b"Retry-After: %d" % cfg.retry_after,) if cfg.retry_after else (),
        )

    def matches(self, msg: Message, source: Peer) -> bool:
        if self.methods and msg.method not in self.methods:
            return False
        if self.user is not None or self.host is not None:
            try:
                uri = parse_uri(msg.ruri)
            except BadMessage:
                return False
            if self.user is not None and self.user.fullmatch(uri.user or "") is None:
                return False
            if self.host is not None and self.host.fullmatch(uri.host) is None:
                return False
        if self.header is not None:
            name, rx = self.header
            value = msg.get(name)
            if value is None or rx.search(value.decode("utf-8", "replace")) is None:
                return False
        if self.nets:
            try:
                addr = ipaddress.ip_address(source.host)
            except ValueError:
                return False
            if not any(addr in net for net in self.nets):
                return False
        return True


class RoutingPolicy:
    """The compiled ``[[route]]`` list."""

    def __init__(
        self,
        routes: Sequence[RouteSpec],
        default_codes: frozenset[int],
        default_limit: int,
    ) -> None:
        self.routes = [_Compiled(r, default_codes, default_limit) for r in routes]
        self.by_name = {r.cfg.name: r for r in self.routes}
        self._catch_all = bool(self.routes) and all(
            not (r.user or r.host or r.header or r.nets or r.methods) for r in self.routes[:1]
        )

    def route_for(self, msg: Message, source: Peer) -> _Compiled | None:
        if self._catch_all:
            return self.routes[0]
        for r in self.routes:
            if r.matches(msg, source):
                return r
        return None


class _Keys:
    """SelectKeys read lazily from a request: only hash algorithms read them."""

    __slots__ = ("msg",)

    def __init__(self, msg: Message) -> None:
        self.msg = msg

    @property
    def method(self) -> str:
        return self.msg.method

    @property
    def call_id(self) -> str:
        return self.msg.call_id.decode("utf-8", "surrogateescape")

    def _addr(self, name: bytes) -> str:
        value = self.msg.get(name)
        if value is None:
            return ""
        return parse_address(value).uri.decode("utf-8", "surrogateescape")

    @property
    def from_uri(self) -> str:
        return self._addr(b"from")

    @property
    def to_uri(self) -> str:
        return self._addr(b"to")

    @property
    def ruri(self) -> str:
        return self.msg.ruri

    @property
    def auth_username(self) -> str | None:
        for name in (b"proxy-authorization", b"authorization"):
            value = self.msg.get(name)
            if value is not None:
                m = re.search(rb'username\s*=\s*"?([^",]*)', value, re.I)
                if m:
                    return m.group(1).decode("utf-8", "replace")
        return None


class DispatchRouter:
    """The proxy's Router over a Dispatcher and a RoutingPolicy."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        routes: Sequence[RouteSpec],
        load: LoadView,
        on_events: Callable[[list[DstEvent]], None] | None = None,
        resolve: Callable[[Destination], Target | None] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.set_routes(routes)
        self.load = load
        self.on_events = on_events
        self._resolve = resolve
        self._targets: dict[Destination, Target] = {}
        self._backends: frozenset[str] | None = None
        self.no_route = (404, "No Route", ())
        self.selections = 0
        self.rejections = 0
        #: Per destination (by key), see DEST_COUNTS: bounded by the destinations
        #: loaded (pruned at each reload), read by the metrics at scrape time.
        self.counts: dict[StateKey, list[int]] = {}
        # A [[trunk]]'s route: the source names the route before any match rule.
        self.source_route: Callable[[Peer], str | None] | None = None
        #: Hears the new set of back-end hosts whenever the destinations change
        #: (reload, dispatcher.add/remove, a discovery refresh: every path calls
        #: ``invalidate``), so the security gate trusts the same hosts as the relay rules.
        self.on_backends: Callable[[frozenset[str]], None] | None = None

    def set_routes(self, routes: Sequence[RouteSpec]) -> None:
        """A new ``[[route]]`` list (SIGHUP); none configured = the default route."""
        d = self.dispatcher
        cfg = d.config
        if not routes:
            first = min((x.set_id for x in d.destinations()), default=1)
            routes = [RouteSpec(name="default", sets=(first,))]
        self.policy = RoutingPolicy(
            routes, frozenset(cfg.failover_codes), cfg.max_failover_attempts + 1
        )
        codes: set[int] = set()
        for r in self.policy.routes:
            codes |= r.failover
        self._failover_codes = frozenset(codes)

    def invalidate(self) -> None:
        """Forget cached targets (after a reload), and the counts of
        destinations no longer loaded."""
        self._targets.clear()
        self._backends = None
        if self.on_backends is not None:
            self.on_backends(self.backend_hosts())
        counts = self.counts
        if counts:
            loaded = {d.key for d in self.dispatcher.destinations()}
            for key in [k for k in counts if k not in loaded]:
                del counts[key]

    def is_backend(self, host: str) -> bool:
        return host in self.backend_hosts()

    def backend_hosts(self) -> frozenset[str]:
        """Every host our destinations are reached at (recomputed after a reload):
        the relay rules and the security gate trust the same set."""
        hosts = self._backends
        if hosts is None:
            found: set[str] = set()
            for dest in self.dispatcher.destinations():
                t = self.target(dest)
                if t is not None:
                    found.add(t.host)
                    found.add(t.uri.host)
                if dest.address is None:
                    # Every address of a name, not only the one we send to
                    # (Kamailio's ds_is_from_list checks the first: issue 4338).
                    try:
                        addr = self.dispatcher.state(dest).resolved
                    except KeyError:
                        addr = None
                    if addr is not None:
                        found.update(addr.others)
            hosts = self._backends = frozenset(found)
        return hosts

    def _count(self, key: StateKey) -> list[int]:
        c = self.counts.get(key)
        if c is None:
            c = self.counts[key] = [0, 0, 0, 0, 0, 0, 0, 0]
        return c

    def target(self, dest: Destination) -> Target | None:
        t = self._targets.get(dest)
        if t is None:
            t = self._make_target(dest)
            if t is None:
                return None
            if len(self._targets) > 200_000:
                self._targets.clear()
            self._targets[dest] = t
        return t

    def _make_target(self, dest: Destination) -> Target | None:
        if self._resolve is not None:
            return self._resolve(dest)
        uri = parse_uri(dest.uri)
        obproxy = dest.attrs.obproxy
        hop = parse_uri(obproxy) if obproxy else uri
        addr = dest.address if not obproxy else None
        if addr is None and not obproxy:
            # A host name: the address the dispatcher resolved at load time.
            try:
                addr = self.dispatcher.state(dest).resolved
            except KeyError:
                addr = None
        if addr is not None:
            return Target(uri, addr.ip, addr.port, addr.transport, dest)
        return Target(
            uri, hop.params.get("maddr") or hop.host, hop.effective_port(), hop.transport, dest
        )

    def route(self, msg: Message, source: Peer, now: float) -> Decision:
        r: _Compiled | None = None
        if self.source_route is not None:
            name = self.source_route(source)
            if name is not None:
                r = self.policy.by_name.get(name)
        if r is None:
            r = self.policy.route_for(msg, source)
        if r is None:
            self.rejections += 1
            return Decision(reject=self.no_route)
        cfg = r.cfg
        sets = cfg.sets
        keys = _Keys(msg)
        hash_string: str | None = None
        if cfg.hash_header:
            v = msg.get(cfg.hash_header.lower().encode())
            hash_string = v.decode("utf-8", "replace") if v is not None else ""
        d = self.dispatcher
        if len(sets) == 1:
            sel = d.select(
                sets[0],
                keys,
                now=now,
                algorithm=cfg.algorithm,
                limit=r.limit,
                hash_string=hash_string,
                load=self.load,
                consistent=cfg.consistent_hash,
            )
        else:
            alg = cfg.algorithm if cfg.algorithm is not None else d.config.algorithm
            sel = d.select_routes(
                [(s, alg) for s in sets],
                keys,
                now=now,
                limit=r.limit,
                hash_string=hash_string,
                load=self.load,
                consistent=cfg.consistent_hash,
            )
        if not isinstance(sel, Selection):
            self.rejections += 1
            return Decision(reject=r.reject, route=cfg.name)
        targets = [t for t in map(self.target, sel.candidates) if t is not None]
        if not targets:
            self.rejections += 1
            return Decision(reject=r.reject, route=cfg.name)
        self.selections += 1
        first = targets[0].dest
        if isinstance(first, Destination):
            self._count(first.key)[_ROUTED] += 1
        return Decision(targets, r.failover, len(targets), route=cfg.name)

    def outcome(self, target: Target, status: int, now: float) -> None:
        dest = target.dest
        if not isinstance(dest, Destination):
            return
        c = self._count(dest.key)
        if 100 <= status < 700:
            c[status // 100 + 1] += 1
        if status in self._failover_codes:
            c[_FAILOVERS] += 1
        events = self.dispatcher.on_branch_result(dest, None if status == 408 else status, now)
        if events and self.on_events is not None:
            self.on_events(events)

    def describe(self) -> list[dict[str, Any]]:
        return [r.cfg.as_dict() for r in self.policy.routes]
