"""The stateful proxy (RFC 3261 section 16), sans I/O.

``Proxy.receive(data, peer, now)`` takes one datagram or one framed stream
message, ``Proxy.handle_timer(now)`` runs what is due; everything the proxy
writes goes to its ``Sink``. Nothing here touches a socket or a clock.

Request path: validate (16.3) -> server transaction (17.2) -> route
(16.4 Route processing, or the Router for new requests) -> forward (16.6)
through a client transaction (17.1), serially failing over to the next
candidate on configured codes or a first-response timeout. Responses come
back through the client transaction and go up through the server
transaction (16.7). CANCEL follows 16.10; ACK for a 2xx and stray 2xx
retransmissions are forwarded statelessly (16.11).

What is relayed, and where (sipfleet is no open relay):

- An out-of-dialog request (no To-tag) goes only where the Router (routing
  policy and dispatcher) sends it, or is answered here (OPTIONS to us, 503
  while stopping). Its Request-URI is never a next hop by itself. Route
  values naming us are removed; other (pre-loaded) Route values from a
  source that is not a back end are refused with 403, or removed with
  ``preloaded_route = "remove"``, and never followed.
- An in-dialog request (To-tag) must carry a Route of ours (or, from a
  strict router, our Record-Route URI as its Request-URI). It is forwarded
  when it belongs to a dialog this node knows, and its next hop is a party
  or route of that dialog, or a back end; or when our Route value carries a
  valid signature (sipfleet.proxy.routesig: a dialog set up through us
  before a restart, or through another node) and the next hop is a back
  end, or the request comes from one. Otherwise: 481 (no such dialog
  here) or 403 (forged signature, or a next hop outside the dialog).
- ACK for a 2xx follows the same rules; what fails them is dropped.

Around this transaction user: the bounded transaction tables and their
keys (``sipfleet.transaction.table``), the response context machines
(``context``), the header edits (``headers``) and the requests the proxy
sends as a user agent of its own (``uac``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from sipfleet.proxy import uac
from sipfleet.proxy.branch import BranchFactory
from sipfleet.proxy.context import Branch, Context
from sipfleet.proxy.dialogs import Dialog, DialogTable
from sipfleet.proxy.headers import (
    add_record_route,
    blank_agents,
    decrement_max_forwards,
    is_local,
    listener_for,
    pop_routes,
    remove_route_values,
    route_uri,
    set_top_via,
    strip_via,
    top_via_value,
    via_after_ours,
)
from sipfleet.proxy.net import Listener, Peer, Sink
from sipfleet.proxy.router import Decision, Router, Target
from sipfleet.proxy.routesig import RouteSigner
from sipfleet.ratelog import RateLimitedLog
from sipfleet.security.gate import PASS, REFUSE, Gate  # issue 11
from sipfleet.sip.address import parse_address
from sipfleet.sip.build import make_response
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.message import (
    COMPACT,
    DEFAULT_LIMITS,
    KNOWN_METHODS,
    Limits,
    Message,
    check_request,
    parse,
)
from sipfleet.sip.uri import URI, parse_uri
from sipfleet.transaction.client import ClientTransaction
from sipfleet.transaction.server import ServerState, ServerTransaction, TimerConfig
from sipfleet.transaction.table import MAX_TRANSACTIONS, TransactionTable, server_key
from sipfleet.transaction.timers import Timers

__all__ = ["Proxy", "ProxySettings", "Stats"]

log = logging.getLogger("sipfleet.proxy")
_new = tuple.__new__  # a Peer without the namedtuple's Python-level __new__

_RR_METHODS: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
_ALLOW: Final = b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, MESSAGE, NOTIFY, SUBSCRIBE"


class ProxySettings:
    """What the proxy core needs to know; built from the typed config."""

    __slots__ = (
        "aliases",
        "answer_options",
        "dialog_lifetime",
        "final_response_timeout",
        "first_response_timeout",
        "limits",
        "max_failover",
        "max_forwards",
        "max_transactions",
        "preloaded_route",
        "record_route",
        "route_key",
        "timers",
        "transform_503",
    )

    def __init__(
        self,
        *,
        timers: TimerConfig | None = None,
        first_response_timeout: float = 2.0,
        final_response_timeout: float = 120.0,
        max_forwards: int = 70,
        record_route: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        aliases: Iterable[tuple[str, int]] = (),
        answer_options: bool = True,
        max_failover: int = 0,
        transform_503: bool = True,
        dialog_lifetime: float = 7200.0,
        route_key: bytes | None = None,
        preloaded_route: str = "remove",
        max_transactions: int = MAX_TRANSACTIONS,
    ) -> None:
        self.timers = timers or TimerConfig()
        self.first_response_timeout = first_response_timeout
        self.final_response_timeout = final_response_timeout
        self.max_forwards = max_forwards
        self.record_route = record_route
        self.limits = limits
        self.aliases = tuple(aliases)
        self.answer_options = answer_options
        self.max_failover = max_failover
        self.transform_503 = transform_503
        self.dialog_lifetime = dialog_lifetime
        # The key of our Record-Route signatures; None: a random one per process.
        self.route_key = route_key
        # Pre-loaded Route values (not ours) on out-of-dialog requests from
        # sources that are not back ends: "remove" (as Kamailio's stock config) or "refuse" (403).
        self.preloaded_route = preloaded_route
        # The bound on each transaction table (server, client): new requests
        # beyond it get 503, as when the gate's max_transactions is reached.
        self.max_transactions = max_transactions


class Stats:
    """Counters, named after Kamailio's core: and tm: statistics."""

    __slots__ = (
        "bad_msg_hdr",
        "by_method",
        "drop_replies",
        "drop_requests",
        "err_requests",
        "failovers",
        "fwd_replies",
        "fwd_requests",
        "internal_errors",
        "keepalives",
        "local_replies",
        "rcv_replies",
        "rcv_requests",
        "relay_denied",
        "reply_classes",
        "retransmissions",
        "timeouts",
        "transport_errors",
        "txn_refused",
        "uac_transactions",
        "uas_transactions",
    )

    def __init__(self) -> None:
        self.bad_msg_hdr = 0
        self.relay_denied = 0  # requests refused by the relay rules (403/481)
        self.drop_replies = 0
        self.drop_requests = 0
        self.err_requests = 0
        self.failovers = 0
        self.fwd_replies = 0
        self.fwd_requests = 0
        self.internal_errors = 0
        self.keepalives = 0
        self.local_replies = 0
        self.rcv_replies = 0
        self.rcv_requests = 0
        self.retransmissions = 0
        self.timeouts = 0
        self.transport_errors = 0
        self.txn_refused = 0  # transactions not made: a table was full (503 or dropped)
        self.uac_transactions = 0
        self.uas_transactions = 0
        # Requests received by method (any other method counts as OTHER: a peer
        # names it) and replies received by class (index 1-6: 1xx-6xx).
        self.by_method: dict[str, int] = dict.fromkeys((*sorted(KNOWN_METHODS), "OTHER"), 0)
        self.reply_classes = [0] * 7


class Proxy:
    """The pure proxy core."""

    def __init__(
        self,
        listeners: Sequence[Listener],
        sink: Sink,
        router: Router,
        settings: ProxySettings | None = None,
    ) -> None:
        if not listeners:
            raise ValueError("at least one listener is needed")
        self.listeners = list(listeners)
        self.sink = sink
        self.router = router
        self.settings = settings or ProxySettings()
        self.timers = Timers()
        st = self.settings
        # The ACK of a 2xx passes through us only when we record-route.
        ack_timeout = 64 * st.timers.t1 if st.record_route else 0.0
        self.dialogs = DialogTable(self.timers, st.dialog_lifetime, ack_timeout=ack_timeout)
        self.dialogs.on_ack_timeout = self._on_ack_timeout
        self.signer = RouteSigner(st.route_key)
        self.stats = Stats()
        self.txns = TransactionTable(
            sink, self.timers, st.timers, st.max_transactions, self._on_client_terminated
        )
        # The tables themselves, for the statistics and the tests.
        self.server_txns: dict[object, ServerTransaction] = self.txns.server
        self.client_txns: dict[object, ClientTransaction] = self.txns.client
        self.branches = BranchFactory(self.listeners[0].sent_by)
        self._prefix_b = self.branches.prefix.encode()
        # Our own Record-Route values, recognised in Route without parsing:
        # signed (prefix + token + ">") or, from before signatures, exact.
        self._own_routes: dict[bytes, URI] = {}
        self._own_prefixes: list[tuple[bytes, URI]] = []
        for lst in self.listeners:
            value = lst.rr_line.partition(b": ")[2]
            self._own_routes[value] = parse_uri(value[1:-1].decode())
            self._own_prefixes.append((lst.route_prefix, self._own_routes[value]))
        self.local_addrs: set[tuple[str, int]] = set()
        for lst in self.listeners:
            self.local_addrs.add((lst.host, lst.port))
            host, _, port = lst.advertise.rpartition(":")
            self.local_addrs.add((host.strip("[]").lower(), int(port)))
        self.local_addrs.update((h.lower(), p) for h, p in self.settings.aliases)
        self.outbound: dict[tuple[str, int], Listener] = {}
        for lst in self.listeners:
            self.outbound.setdefault((lst.proto, lst.family), lst)
        self.accepting = True
        self.gate: Gate | None = None  # edge security (sipfleet.security, issue 11): set by the app
        # [cluster]: a BYE relayed by signature for a dialog this node does not
        # know (set up through another node); must not call back into the core.
        self.on_foreign_bye: Callable[[Message], None] | None = None
        self._now = 0.0  # the time of the input being handled
        # Bound once: every transaction holds these, and a bound method made
        # per transaction is one more object for the collector to scan.
        self._cb_response = self._on_branch_response
        self._cb_failure = self._on_branch_failure
        self._cb_fr = self._on_fr_timer
        self.peer_log = RateLimitedLog(log)

    # == entry points ==========================================================
    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        """One UDP datagram or one framed stream message from ``peer``."""
        self._now = now
        if self.gate is not None and not self.gate.check_source(peer.host, now):
            return  # issue 11: a banned source, dropped before parsing
        if len(data) <= 4 and not data.strip():
            self.stats.keepalives += 1  # a CRLF keep-alive over UDP: nothing to answer
            return
        try:
            msg = parse(data, self.settings.limits, not self.listeners[peer.listener].reliable)
        except BadMessage as e:
            self._bad_message(data, peer, e, now)
            return
        try:
            if msg.is_request:
                self.stats.rcv_requests += 1
                by = self.stats.by_method
                by[msg.method if msg.method in by else "OTHER"] += 1
                self._on_request(msg, peer, now)
            else:
                self.stats.rcv_replies += 1
                self.stats.reply_classes[msg.status // 100] += 1
                self._on_response(msg, now)
        except BadMessage as e:
            self._bad_message(data, peer, e, now, msg)

    def handle_timer(self, now: float) -> None:
        self._now = now
        self.timers.run(now)

    def next_timer(self) -> float | None:
        return self.timers.next_deadline()

    def transport_failed(self, peer: Peer, now: float) -> None:
        """The adapter could not reach ``peer`` (TCP refused, reset...)."""
        self._now = now
        txns = self.txns.transport_failed(peer)
        if not txns:
            return
        self.stats.transport_errors += 1
        for txn in list(txns):
            txn.transport_error(now)

    def originate(
        self,
        method: str,
        ruri: str,
        target: Target,
        headers: Sequence[bytes],
        on_done: Callable[[int | None, Message | None, float], None],
        now: float,
        timeout: float | None = None,
        body: bytes = b"",
    ) -> bool:
        """Send a request of our own (see ``sipfleet.proxy.uac.originate``)."""
        self._now = now
        return uac.originate(self, method, ruri, target, headers, on_done, now, timeout, body)

    def end_dialog(
        self,
        dlg: Dialog,
        reason: str,
        now: float,
        extra: Sequence[bytes] = (),
        on_bye: Callable[[str, int | None], None] | None = None,
    ) -> int:
        """End an answered or confirmed dialog: a BYE to each side, then the
        dialog and its load go (see ``sipfleet.proxy.uac.end_dialog``)."""
        self._now = now
        return uac.end_dialog(self, dlg, reason, now, extra, on_bye)

    def _on_ack_timeout(self, dlg: Dialog, now: float) -> None:
        """A 2xx went up and its ACK never came: hang up both sides, as
        Kamailio's dialog module does for its timeouts (the table ends it)."""
        self._log(now, "no ACK for the 2xx of %r: ending the call", dlg.call_id[:64])
        uac.hang_up(self, dlg, now)

    # == requests ==============================================================
    def _on_request(self, msg: Message, peer: Peer, now: float) -> None:
        if self.gate is not None and not self._guard(msg, peer, now):
            return  # issue 11: untrusted, banned or a scanner
        method = msg.method
        if method == "ACK":
            self._on_ack(msg, peer, now)
            return
        check_request(msg)
        if method == "OPTIONS" and self._options_for_us(msg):
            # A keep-alive for us: answered statelessly (RFC 3261 8.2.6.2), so
            # a flood of them holds no transaction and no memory.
            top_via = top_via_value(msg.via, peer)
            data = make_response(msg, 200, extra=(_ALLOW,), top_via=top_via)
            self.stats.local_replies += 1
            self.sink.send(self._reply_peer(msg, peer), data)
            return
        key = server_key(msg, method)
        txn = self.server_txns.get(key)
        if txn is not None:
            self.stats.retransmissions += 1
            txn.on_request(now)
            return
        if self.gate is not None and not self._admit(msg, peer, method, now):
            return  # issue 11: transaction/dialog bound or overload (503)
        if self.txns.server_full():
            self.refuse(now, method, peer.host, peer.port)
            self._stateless(msg, peer, 503, "Service Unavailable", (b"Retry-After: 5",))
            return
        if method == "CANCEL":
            self._on_cancel(msg, peer, now)
            return
        self._check_proxy_rules(msg)
        top_via = top_via_value(msg.via, peer)
        server = self._new_server(key, msg, peer, method == "INVITE")
        ctx = Context(msg, peer, server, top_via)
        server.context = ctx
        if method == "INVITE":
            self._reply(ctx, 100)
        try:
            self._route_request(ctx, now)
        except BadMessage as e:  # a bad Route or R-URI: the transaction exists, answer through it
            self._log(now, "%d to %s:%d: %s", e.status, peer.host, peer.port, e.reason)
            self._reply(ctx, e.status, e.reason if e.status == 400 else None, extra=e.headers)

    def _check_proxy_rules(self, msg: Message) -> None:
        """RFC 3261 16.3 items 2-5."""
        ruri = parse_uri(msg.ruri)
        if ruri.headers is not None:
            raise BadMessage("Headers not allowed in Request-URI")  # RFC 4475 3.1.2.11
        mf = msg.max_forwards
        if mf == 0:
            # 16.3 item 3: an OPTIONS for us may be answered (a hop-limited ping).
            if (
                msg.method == "OPTIONS"
                and self.settings.answer_options
                and ruri.user is None
                and self.is_ours(ruri)
            ):
                raise _LocalAnswer(200)
            raise BadMessage("Too Many Hops", status=483)
        first_via = msg.lines[msg.first[b"via"]]
        if first_via.find(self._prefix_b) >= 0 or (msg.repeated and msg.names.count(b"via") > 1):
            if self.branches.looped(msg, msg.get_lines(b"via")):
                raise BadMessage("Loop Detected", status=482)
        if b"proxy-require" in msg.first:
            tags = b", ".join(msg.values(b"proxy-require"))
            raise BadMessage("Bad Extension", status=420, headers=(b"Unsupported: " + tags,))

    def _options_for_us(self, msg: Message) -> bool:
        """An out-of-dialog OPTIONS addressed to this proxy (no user part),
        with no Route beyond us: ours to answer."""
        if not self.settings.answer_options or msg.to_tag is not None:
            return False
        ruri = parse_uri(msg.ruri)
        if ruri.user is not None or not self.is_ours(ruri):
            return False
        if b"route" in msg.first:
            lines = list(msg.lines)
            _, _, next_route, _ = self._pop_routes(msg, lines)
            return next_route is None
        return True

    def _route_request(self, ctx: Context, now: float) -> None:
        msg = ctx.msg
        head = msg.start
        lines = list(msg.lines)
        ruri = msg.ruri
        has_routes = b"route" in msg.first
        strict_token: bytes | None = None
        # 16.4: a strict router upstream put our Record-Route URI in the R-URI.
        if has_routes and ";lr" in ruri:
            strict = parse_uri(ruri)
            if self.is_ours(strict):
                strict_token = (strict.params.get("sf") or "").encode()
                routes = msg.values(b"route")
                last = parse_address(routes[-1], "Route").uri.decode("utf-8", "surrogateescape")
                ruri = last
                head = b" ".join((msg.method.encode(), last.encode(), b"SIP/2.0"))
                remove_route_values(msg, lines, 1, from_end=True)
        popped, hint, next_route, token = (
            self._pop_routes(msg, lines) if has_routes else (0, None, None, None)
        )
        next_hop: URI | None = None
        if msg.to_tag is None:
            # A new request: the Router decides, never the R-URI or a Route.
            if next_route is not None and not self.router.is_backend(ctx.peer.host):
                if self.settings.preloaded_route != "remove":
                    self._deny(ctx, 403, "Preloaded Route Forbidden", now)
                    return
                remove_route_values(msg, lines, 1 << 30)  # ours are gone already
            if msg.method == "OPTIONS" and self.settings.answer_options:
                uri = parse_uri(ruri)
                if uri.user is None and self.is_ours(uri):
                    self._reply(ctx, 200, extra=(_ALLOW,))  # a keep-alive for us
                    return
            if not self.accepting:
                self._reply(ctx, 503, "Shutting Down", extra=(b"Retry-After: 30",))
                return
        else:
            if not popped and strict_token is None:
                self._deny(ctx, 481, "Call/Transaction Does Not Exist", now)
                return
            next_hop = route_uri(next_route) if next_route is not None else parse_uri(ruri)
            dlg = self.dialogs.find(msg.call_id, msg.from_tag, msg.to_tag)
            if not self._may_relay(ctx, dlg, token or strict_token, next_hop):
                return
            if dlg is not None and msg.method != "ACK":
                self.dialogs.on_in_dialog(dlg, msg, now)
            elif dlg is None and msg.method == "BYE" and self.on_foreign_bye is not None:
                self.on_foreign_bye(msg)  # [cluster] another node's dialog: it frees its load
        # RFC 5630 4.1 / RFC 3261 26.2.2: a SIPS request travels over TLS on
        # every hop; one that reached us over UDP/TCP cannot be made secure.
        if ruri[:5].lower() == "sips:" or (next_hop is not None and next_hop.scheme == "sips"):
            if self.listeners[ctx.peer.listener].proto != "tls":
                self._reply(ctx, 416, "SIPS Requires TLS")
                return
            ctx.sips = True
        self._edit_common(ctx, lines)
        ctx.head = head
        ctx.tail = [line for line in lines if line] if b"" in lines else lines
        if next_hop is not None:
            proto = next_hop.params.get("transport")
            if proto is None and hint is not None:
                proto = hint.params.get("transport")
            target = Target(
                next_hop,
                next_hop.params.get("maddr") or next_hop.host,
                next_hop.effective_port(),
                (proto or "udp").lower(),
            )
            ctx.decision = Decision((target,), frozenset())
        else:
            ctx.rr = self.settings.record_route and msg.method in _RR_METHODS
            if ctx.rr:
                ctx.rr_token = self.signer.token(msg.call_id, msg.from_tag or b"")
            ctx.initial = True
            decision = self.router.route(msg, ctx.peer, now)
            if decision.reject is not None:
                status, reason, extra = decision.reject
                self._reply(ctx, status, reason, extra=extra)
                return
            ctx.decision = decision
        self._next_branch(ctx, now)

    def _may_relay(
        self, ctx: Context, dlg: Dialog | None, token: bytes | None, next_hop: URI
    ) -> bool:
        """The relay rules for an in-dialog request (see the module docstring);
        answers the request and returns False when it may not pass."""
        msg, now = ctx.msg, self._now
        status = self._relay_verdict(msg, ctx.peer, dlg, token, next_hop)
        if status == 0:
            return True
        if status == 403:
            self._deny(ctx, 403, "Forbidden", now)
        else:
            self._deny(ctx, 481, "Call/Transaction Does Not Exist", now)
        return False

    def _relay_verdict(
        self, msg: Message, peer: Peer, dlg: Dialog | None, token: bytes | None, next_hop: URI
    ) -> int:
        """0 when an in-dialog request may go to ``next_hop``, else 403 or 481."""
        host = next_hop.params.get("maddr") or next_hop.host
        router = self.router
        if dlg is not None:
            if router.is_backend(host) or _on_dialog_path(dlg, host):
                return 0
            return 403
        if not token:
            return 481
        if not self.signer.verify(token, msg.call_id, msg.from_tag, msg.to_tag):
            return 403
        if router.is_backend(peer.host) or router.is_backend(host):
            return 0
        return 403

    def _deny(self, ctx: Context, status: int, reason: str, now: float) -> None:
        self.stats.relay_denied += 1
        msg, peer = ctx.msg, ctx.peer
        self._log(
            now,
            "%d %s to %s:%d: %s %s (Call-ID %r)",
            status,
            reason,
            peer.host,
            peer.port,
            msg.method,
            msg.ruri[:128],
            msg.call_id[:64],
        )
        self._reply(ctx, status, reason)

    def _edit_common(self, ctx: Context, lines: list[bytes]) -> None:
        """16.6 items 3 (Max-Forwards) and the received/rport of the top Via."""
        msg = ctx.msg
        decrement_max_forwards(msg, lines, self.settings.max_forwards)
        set_top_via(msg, lines, ctx.top_via)
        if b"content-length" not in msg.first:
            lines.append(b"Content-Length: %d" % len(msg.body))
        gate = self.gate  # issue 11: a back end's User-Agent/Server does not leave the edge
        if (
            gate is not None
            and gate.settings.strip_backend_agent
            and gate.is_backend(ctx.peer.host)
        ):
            blank_agents(msg, lines)

    def _next_branch(self, ctx: Context, now: float) -> None:
        """Forward to the next candidate, or give the best final answer."""
        decision = ctx.decision
        assert decision is not None
        while ctx.next_index < len(decision.targets) and ctx.attempts < decision.max_attempts:
            target = decision.targets[ctx.next_index]
            ctx.next_index += 1
            ctx.attempts += 1
            if ctx.attempts > 1:
                self.stats.failovers += 1
            if self._send_branch(ctx, target, now):
                return
        self._answer_best(ctx, now)

    def _send_branch(self, ctx: Context, target: Target, now: float) -> bool:
        if ctx.sips and target.proto != "tls":
            ctx.finals.append((480, None))  # never downgrade a SIPS request (RFC 5630 4.1)
            return False
        lst = listener_for(self.outbound, target.proto, target.host)
        if lst is None:
            ctx.finals.append((503, None))
            self.router.outcome(target, 503, now)
            return False
        msg = ctx.msg
        peer = _new(Peer, (lst.index, target.host, target.port))
        branch_id = self.branches.new(self.branches.loop_hash(msg))
        via_line = lst.via_prefix + b";branch=" + branch_id.encode()
        parts = [ctx.head, via_line]
        if ctx.rr:
            add_record_route(parts, lst, self.listeners[ctx.peer.listener], ctx.rr_token)
        parts.extend(ctx.tail)
        parts.append(b"")
        parts.append(msg.body)
        data = b"\r\n".join(parts)
        invite = msg.method == "INVITE"
        br = Branch(ctx, target, peer, via_line, invite)
        txn = self.txns.new_client(
            branch_id,
            msg.method,
            lst.reliable,
            data,
            peer,
            self._cb_response,
            self._cb_failure,
            br,
            br.make_ack if invite else None,
        )
        if txn is None:
            self.refuse(now, msg.method, target.host, target.port)
            ctx.finals.append((503, None))
            return False
        br.txn = txn
        ctx.pending.append(br)
        self.stats.uac_transactions += 1
        self.stats.fwd_requests += 1
        if invite and ctx.initial:
            self.dialogs.on_branch(ctx, target, now)
        # Kamailio's fr_timer: a next hop silent this long (not even 100
        # Trying) is given up; a new request fails over, an in-dialog one gets
        # its 408 now rather than after Timer B/F (32 s).
        br.timer = self.timers.add(now, self.settings.first_response_timeout, self._cb_fr, br)
        txn.start(now)
        return True

    # == responses =============================================================
    def _on_response(self, msg: Message, now: float) -> None:
        txn = self.txns.client_for(msg)
        if txn is not None:
            txn.receive(msg, now)
            return
        branch = msg.top_branch()
        if self.branches.is_ours(branch) and 200 <= msg.status < 300:
            # A 2xx retransmission after our transactions are gone (16.7, RFC 6026).
            self._forward_response_stateless(msg, now)
            return
        self.stats.drop_replies += 1
        self._log(now, "dropped stray %d response (Call-ID %r)", msg.status, msg.get(b"call-id"))

    def _on_branch_response(self, txn: ClientTransaction, msg: Message, now: float) -> None:
        br = txn.context
        status = msg.status
        if not isinstance(br, Branch):
            # The branch already had its final answer and let go of its
            # context: a retransmitted 2xx goes up statelessly (RFC 6026 7.1).
            if 200 <= status < 300:
                self._forward_response_stateless(msg, now)
            return
        ctx = br.ctx
        if status >= 200:
            # Nothing more to do for this branch but absorb (its ACK, if any,
            # is built already): let go of the branch and its context.
            txn.context = None
            txn.make_ack = None
        if br.timer is not None:
            br.timer.cancel()
            br.timer = None
        if status < 200:
            actions = br.fire("1xx")
            if not actions:
                return
            if "cancel" in actions:
                self._send_cancel(br, now)
            elif "timer_c" in actions:
                # Timer C (16.6 item 11) / Kamailio's fr_inv_timer.
                br.timer = self.timers.add(
                    now, self.settings.final_response_timeout, self._cb_fr, br
                )
            # 16.7 item 5: 100 Trying is not forwarded
            if status != 100 and "relay" in actions and not ctx.answered:
                self._relay_response(ctx, msg, status)
            return
        if 200 <= status < 300:
            # Every 2xx goes upstream, even from a branch we gave up on (16.7 item 5).
            first = not ctx.answered
            if br.fire("final") is not None:
                self.router.outcome(br.target, status, now)
            if ctx.server.state in (
                ServerState.PROCEEDING,
                ServerState.TRYING,
                ServerState.ACCEPTED,
            ):
                self._relay_response(ctx, msg, status)
            else:
                self._forward_response_stateless(msg, now)
            if first and txn.invite and ctx.dialog is not None:
                self.dialogs.on_final(ctx, br.target, status, msg, now, br.peer)
                for other in list(ctx.pending):  # 16.7 item 10: cancel the rest
                    self._give_up(other, now)
            return
        if br.fire("final") is None:
            return  # concluded already
        self.router.outcome(br.target, status, now)
        ctx.finals.append((status, self._strip_via(msg)))
        self._branch_done(ctx, status, now)

    def _on_branch_failure(self, txn: ClientTransaction, code: int, now: float) -> None:
        br = txn.context
        assert isinstance(br, Branch)
        self.stats.timeouts += code == 408
        self.stats.transport_errors += code == 503
        if br.concluded:
            return
        self._conclude_local(br, code, now)

    def _on_fr_timer(self, now: float, br: Branch) -> None:
        """No (final) response in time: give up on this branch (Kamailio fr/fr_inv)."""
        br.timer = None
        if br.concluded:
            return
        self.stats.timeouts += 1
        self._give_up(br, now)
        self._conclude_local(br, 408, now)

    def _conclude_local(self, br: Branch, code: int, now: float) -> None:
        br.fire("final")  # a no-op when _give_up concluded it
        self.router.outcome(br.target, code, now)
        br.ctx.finals.append((code, None))
        self._branch_done(br.ctx, code, now)

    def _give_up(self, br: Branch, now: float) -> None:
        """Stop and conclude a branch: CANCEL it if it rang (else on its first
        provisional, 9.1), or just stop retransmitting."""
        txn = br.txn
        if txn is None:
            return
        if br.timer is not None:
            br.timer.cancel()
            br.timer = None
        actions = br.fire("give_up")
        if not actions:
            return
        if "cancel" in actions:
            self._send_cancel(br, now)
        elif "stop" in actions:
            # Timer B/F still runs: it ends the transaction, which absorbs any
            # late answer meanwhile.
            txn.stop_retransmitting()

    def _branch_done(self, ctx: Context, status: int, now: float) -> None:
        if ctx.pending:
            return
        actions = ctx.fire("all_done")
        if actions is None:
            return  # answered already
        decision = ctx.decision
        if (
            "failover" in actions
            and decision is not None
            and status in decision.failover_codes
            and (self.settings.max_failover == 0 or ctx.attempts <= self.settings.max_failover)
        ):
            self._next_branch(ctx, now)
            return
        self._answer_best(ctx, now)

    def _answer_best(self, ctx: Context, now: float) -> None:
        """16.7 item 6: choose the best final response and send it upstream."""
        if ctx.answered:
            return
        self._release(ctx)
        if ctx.cancelled:
            best: tuple[int, bytes | None] = next(
                (f for f in ctx.finals if f[0] == 487 and f[1] is not None), (487, None)
            )
        elif not ctx.finals:
            best = (503, None)
        else:
            best = min(ctx.finals, key=_rank)
        status, data = best
        if ctx.dialog is not None:
            self.dialogs.on_final(ctx, None, status, None, now)
        if status == 503 and data is not None and self.settings.transform_503:
            status, data = 500, None  # 16.7 item 6: a 503 from downstream becomes 500
        if data is None:
            extra: tuple[bytes, ...] = ()
            reason = None
            if status == 503:
                reason, extra = "Service Unavailable", (b"Retry-After: 5",)
            self._reply(ctx, status, reason, extra=extra)
        else:
            self.stats.fwd_replies += 1
            self._respond(ctx, status, data, now)

    def _relay_response(self, ctx: Context, msg: Message, status: int) -> None:
        data = self._strip_via(msg)
        if data is None:
            return
        self.stats.fwd_replies += 1
        if status >= 200:
            self._release(ctx)
        self._respond(ctx, status, data, self._now)

    @staticmethod
    def _respond(ctx: Context, status: int, data: bytes, now: float) -> None:
        """Send a response up through the context's server transaction."""
        if ctx.server.respond(status, data, now) and status >= 200:
            ctx.fire("final")

    @staticmethod
    def _release(ctx: Context) -> None:
        """The final answer is going up: the server transaction keeps only the
        bytes it must retransmit, so the context can be freed with its last
        branch rather than live on for Timer L/J (32 s)."""
        ctx.server.context = None

    def _strip_via(self, msg: Message) -> bytes | None:
        """The response without our Via (16.7 item 3); None: it was for us."""
        gate = self.gate
        return strip_via(msg, gate is not None and gate.settings.strip_backend_agent)

    def _forward_response_stateless(self, msg: Message, now: float) -> None:
        data = self._strip_via(msg)
        if data is None:
            return
        nxt = via_after_ours(msg)
        if nxt is None:
            return
        lst = listener_for(self.outbound, nxt.transport.lower(), nxt.host)
        if lst is None:
            self.stats.drop_replies += 1
            return
        host, port = nxt.response_address()
        self.stats.fwd_replies += 1
        self.sink.send(Peer(lst.index, host, port), data)

    # == CANCEL and ACK ========================================================
    def _on_cancel(self, msg: Message, peer: Peer, now: float) -> None:
        """16.10."""
        invite = self.server_txns.get(server_key(msg, "INVITE"))
        key = server_key(msg, "CANCEL")
        server = self._new_server(key, msg, peer, False)
        top_via = top_via_value(msg.via, peer)
        if invite is None:
            server.respond(481, make_response(msg, 481, top_via=top_via), now)
            self.stats.local_replies += 1
            return
        server.respond(200, make_response(msg, 200, top_via=top_via), now)
        self.stats.local_replies += 1
        ctx = invite.context
        if not isinstance(ctx, Context):
            return  # the INVITE already has its final answer: CANCEL changes nothing
        if ctx.fire("cancel") is None:
            return  # answered or cancelled already
        ctx.cancel_reason = msg.get_lines(b"reason")
        if not ctx.pending:
            self._answer_best(ctx, now)
            return
        for br in ctx.pending:
            if br.fire("cancel"):
                self._send_cancel(br, now)

    def _send_cancel(self, br: Branch, now: float) -> None:
        """9.1: CANCEL the branch (its machine says when: once, after a provisional)."""
        if br.txn is None:
            return
        br.txn.cancelled(now)  # issue 11: no final within 64*T1 ends the INVITE (9.1)
        data = br.make_cancel(self.settings.max_forwards)
        lst = self.listeners[br.peer.listener]
        txn = self.txns.new_client(
            br.txn.branch, "CANCEL", lst.reliable, data, br.peer, _ignore_response, _ignore_failure
        )
        assert txn is not None  # a CANCEL is never refused
        self.stats.uac_transactions += 1
        txn.start(now)

    def _on_ack(self, msg: Message, peer: Peer, now: float) -> None:
        try:
            invite = self.server_txns.get(server_key(msg, "INVITE"))
        except BadMessage:
            self.stats.drop_requests += 1
            return
        if invite is not None and invite.state is not ServerState.ACCEPTED:
            invite.on_ack(now)  # hop-by-hop ACK of our non-2xx (17.2.1)
            return
        # An ACK for a 2xx: its own transaction, forwarded statelessly (16.11).
        try:
            lines = list(msg.lines)
            if b"route" not in msg.first:
                self.stats.drop_requests += 1
                return
            popped, hint, next_route, token = self._pop_routes(msg, lines)
            if not popped or msg.to_tag is None:
                self.stats.drop_requests += 1
                return
            next_hop = route_uri(next_route) if next_route is not None else parse_uri(msg.ruri)
            mf = msg.max_forwards
            dlg = self.dialogs.find(msg.call_id, msg.from_tag, msg.to_tag)
            verdict = self._relay_verdict(msg, peer, dlg, token, next_hop)
        except BadMessage as e:
            self.stats.drop_requests += 1
            self._log(now, "dropped bad ACK: %s", e.reason)
            return
        if verdict:
            self.stats.drop_requests += 1
            self.stats.relay_denied += 1
            self._log(
                now, "dropped ACK from %s:%d: not relayed (%d)", peer.host, peer.port, verdict
            )
            return
        if dlg is not None:
            self.dialogs.on_ack(dlg, now)
        if mf == 0:
            self.stats.drop_requests += 1
            return
        proto = next_hop.params.get("transport") or (hint.params.get("transport") if hint else None)
        host = next_hop.params.get("maddr") or next_hop.host
        lst = listener_for(self.outbound, (proto or "udp").lower(), host)
        if lst is None:
            self.stats.drop_requests += 1
            return
        top = msg.via
        set_top_via(msg, lines, top_via_value(top, peer))
        decrement_max_forwards(msg, lines, self.settings.max_forwards)
        branch = self.branches.stateless(top.branch or msg.call_id.decode("ascii", "replace"))
        via_line = lst.via_prefix + b";branch=" + branch.encode()
        data = b"\r\n".join((msg.start, via_line, *[x for x in lines if x], b"", msg.body))
        self.stats.fwd_requests += 1
        self.sink.send(Peer(lst.index, host, next_hop.effective_port()), data)

    # == helpers ===============================================================
    def _new_server(self, key: object, msg: Message, peer: Peer, invite: bool) -> ServerTransaction:
        lst = self.listeners[peer.listener]
        resp_peer = peer
        if not lst.reliable:
            via = msg.via
            if not via.has_rport:
                resp_peer = _new(Peer, (peer.listener, peer.host, via.port or 5060))
        txn = self.txns.new_server(key, invite, lst.reliable, resp_peer)
        if self.gate is not None and not lst.reliable and self.gate.quiet(peer.host):
            txn.quiet = True  # issue 11: no Timer G copies to an unverified UDP source
        self.stats.uas_transactions += 1
        return txn

    def _on_client_terminated(self, txn: ClientTransaction) -> None:
        """A client transaction left the table: its branch lets go of it."""
        br = txn.context
        if isinstance(br, Branch):
            if br.timer is not None:
                br.timer.cancel()
                br.timer = None
            txn.context = None

    def refuse(self, now: float, method: str, host: str, port: int) -> None:
        """A transaction table is full: count it and say so (rate-limited)."""
        self.stats.txn_refused += 1
        self._log(
            now,
            "transaction table full (%d): %s for %s:%d refused",
            self.settings.max_transactions,
            method,
            host,
            port,
        )

    def _pop_routes(
        self, msg: Message, lines: list[bytes]
    ) -> tuple[int, URI | None, bytes | None, bytes | None]:
        """16.4 with our own Record-Route values (see headers.pop_routes)."""
        return pop_routes(msg, lines, self._own_routes, self._own_prefixes, self.local_addrs)

    def is_ours(self, uri: URI) -> bool:
        """``uri`` names this proxy."""
        return is_local(uri, self.local_addrs)

    def _reply(
        self,
        ctx: Context,
        status: int,
        reason: str | None = None,
        extra: Sequence[bytes] = (),
    ) -> None:
        data = make_response(ctx.msg, status, reason, tuple(extra), top_via=ctx.top_via)
        if status >= 200:
            self.stats.local_replies += 1
        self._respond(ctx, status, data, self._now)

    def _bad_message(
        self, data: bytes, peer: Peer, err: BadMessage, now: float, msg: Message | None = None
    ) -> None:
        """Answer a broken request when it can be answered; else count and drop."""
        if isinstance(err, _LocalAnswer) and msg is not None:
            self.sink.send(
                self._reply_peer(msg, peer), make_response(msg, err.status, extra=(_ALLOW,))
            )
            self.stats.local_replies += 1
            return
        if msg is None:
            msg = _lenient(data)
        if msg is None or not msg.is_request or msg.method == "ACK" or not _answerable(msg):
            if msg is not None and msg.is_request:
                self.stats.drop_requests += 1
            else:
                self.stats.drop_replies += 1
            self.stats.bad_msg_hdr += 1
            self._log(now, "dropped bad message from %s:%d: %s", peer.host, peer.port, err.reason)
            return
        self.stats.err_requests += 1
        self.stats.local_replies += 1
        reason = err.reason if err.status == 400 else None
        self._log(now, "%d to %s:%d: %s", err.status, peer.host, peer.port, err.reason)
        self.sink.send(
            self._reply_peer(msg, peer), make_response(msg, err.status, reason, err.headers)
        )

    def _reply_peer(self, msg: Message, peer: Peer) -> Peer:
        if self.listeners[peer.listener].reliable:
            return peer
        try:
            via = msg.via
        except BadMessage:
            return peer
        if not via.has_rport:
            return Peer(peer.listener, peer.host, via.port or 5060)
        return peer

    # == edge security (sipfleet.security, issue 11) ================================
    def _guard(self, msg: Message, peer: Peer, now: float) -> bool:
        """Ask the gate about a parsed request; False: dropped or refused here."""
        assert self.gate is not None
        lst = self.listeners[peer.listener]
        verdict = self.gate.check_request(msg, peer.host, peer.port, lst.proto, now)
        if verdict == PASS:
            return True
        self.stats.drop_requests += 1
        if verdict == REFUSE and msg.method != "ACK":
            self._stateless(msg, peer, 403, "Forbidden")
        return False

    def _admit(self, msg: Message, peer: Peer, method: str, now: float) -> bool:
        """The bounds on transactions and dialogs, and overload shedding of new INVITEs."""
        assert self.gate is not None
        new_invite = method == "INVITE" and msg.to_tag is None
        status = self.gate.admit(len(self.server_txns), len(self.dialogs), new_invite)
        if not status:
            return True
        retry = b"Retry-After: %d" % self.gate.settings.retry_after
        self._stateless(msg, peer, status, "Service Unavailable", (retry,))
        return False

    def _stateless(
        self, msg: Message, peer: Peer, status: int, reason: str, extra: tuple[bytes, ...] = ()
    ) -> None:
        """One answer, no transaction (nothing kept, nothing retransmitted)."""
        top_via = top_via_value(msg.via, peer)
        self.sink.send(
            self._reply_peer(msg, peer), make_response(msg, status, reason, extra, top_via=top_via)
        )
        self.stats.local_replies += 1

    def _log(self, now: float, fmt: str, *args: object) -> None:
        """Lines a peer can trigger: rate-limited per call site, with a count of
        what was suppressed, so floods can't fill disks."""
        self.peer_log.info(now, fmt, *args)


_TOKEN: Final = re.compile(rb"[a-z0-9.!%*_+`'~-]+")


class _LocalAnswer(BadMessage):
    """Not an error: a request we answer ourselves during validation."""

    def __init__(self, status: int) -> None:
        super().__init__("answered locally", status)


def _rank(final: tuple[int, bytes | None]) -> tuple[int, int, int]:
    status = final[0]
    # 6xx first, then the lowest class; a real response beats a local one.
    cls = status // 100
    return (0 if cls == 6 else cls, 0 if final[1] is not None else 1, status)


def _ignore_response(txn: ClientTransaction, msg: Message, now: float) -> None:
    pass


def _on_dialog_path(dlg: Dialog, host: str) -> bool:
    """``host`` is a party of the dialog or on its route set: where its
    requests may go."""
    for peer in (dlg.caller_peer, dlg.callee_peer):
        if peer is not None and peer.host == host:
            return True
    for value in (dlg.caller_contact, dlg.callee_contact, *dlg.route_set):
        if not value:
            continue
        try:
            uri = route_uri(value)
        except BadMessage:
            continue
        if (uri.params.get("maddr") or uri.host) == host:
            return True
    return False


def _ignore_failure(txn: ClientTransaction, code: int, now: float) -> None:
    pass


def _lenient(data: bytes) -> Message | None:
    """Best effort at the header lines of a message the parser refused."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    hlines = head.split(b"\r\n")
    start = hlines[0]
    if start.startswith(b"SIP/"):
        return None
    parts = start.split(b" ")
    names: list[bytes] = []
    kept: list[bytes] = []
    for line in hlines[1:]:
        name, colon, _ = line.partition(b":")
        n = name.rstrip(b" \t").lower()
        if not colon or _TOKEN.fullmatch(n) is None:
            continue  # issue 11 (atheris): "\x0bVia: ..." is no Via to copy back
        names.append(COMPACT.get(n, n))
        kept.append(line)
    msg = Message(start, kept, names, b"")
    msg.method = parts[0].decode("ascii", "replace") if parts else ""
    return msg


def _answerable(msg: Message) -> bool:
    """Can the sender match a response? It needs at least a Via and a CSeq to copy;
    the response goes to the packet's source when the Via itself is unreadable."""
    return b"via" in msg.first and b"cseq" in msg.first
