"""The proxy as a user agent of its own (its UAC side).

``originate`` sends a request of ours (an OPTIONS probe, a BYE, a request
of tm.t_uac_*) through a client transaction and reports its outcome once;
``end_dialog`` and ``hang_up`` end a dialog with a BYE to each side, built
from what the dialog table remembers of both (RFC 3261 15.1.1, 12.2.1.1);
``extra_headers`` reads the header lines an operator adds to them.

Pure: everything goes out through the proxy core's transaction table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sipfleet.proxy.headers import listener_for
from sipfleet.proxy.net import Peer
from sipfleet.proxy.router import Target
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.uri import URI, parse_uri

if TYPE_CHECKING:
    from sipfleet.proxy.core import Proxy
    from sipfleet.proxy.dialogs import Dialog
    from sipfleet.proxy.net import Listener
    from sipfleet.sip.message import Message
    from sipfleet.transaction.client import ClientTransaction
    from sipfleet.transaction.timers import Timer

__all__ = [
    "ByeRequest",
    "OnDone",
    "bye_requests",
    "end_dialog",
    "extra_headers",
    "hang_up",
    "originate",
    "split_routes",
    "uri_in",
]

# on_done(final status or None, the final response or None, now)
OnDone = Callable[[int | None, "Message | None", float], None]


class ByeRequest:
    """A BYE towards one side of a dialog."""

    __slots__ = ("headers", "ruri", "side", "target")

    def __init__(self, side: str, ruri: str, target: Target, headers: tuple[bytes, ...]) -> None:
        self.side = side  # "callee" or "caller"
        self.ruri = ruri
        self.target = target
        self.headers = headers


def uri_in(value: bytes) -> bytes:
    """The URI of a name-addr or addr-spec header value (Contact, Route)."""
    v = value.strip()
    lt = v.find(b"<")
    if lt >= 0:
        gt = v.find(b">", lt)
        return v[lt + 1 : gt if gt > 0 else None].strip()
    return v.split(b";", 1)[0].strip()


def _is_own(is_ours: Callable[[URI], bool], value: bytes) -> bool:
    try:
        uri = parse_uri(uri_in(value).decode("utf-8", "surrogateescape"))
    except BadMessage:
        return False
    return is_ours(uri)


def split_routes(
    is_ours: Callable[[URI], bool], route_set: Sequence[bytes]
) -> tuple[list[bytes], list[bytes]]:
    """(toward the callee, toward the caller), in the order a request visits them.

    ``route_set`` is the 2xx's Record-Route set, top first: the entries above
    ours lie between us and the callee, those below between us and the
    caller (RFC 3261 12.1.1, 12.1.2). Our own entries (two with a double
    Record-Route) are left out: the proxy puts its own Via on what it sends.
    """
    rr = list(route_set)
    ours = [i for i, v in enumerate(rr) if _is_own(is_ours, v)]
    if not ours:  # we are not on the path: act as each side would
        return list(reversed(rr)), rr
    return list(reversed(rr[: ours[0]])), rr[ours[-1] + 1 :]


def _with_tag(value: bytes, tag: bytes | None) -> bytes:
    if tag is None or b";tag=" in value.lower().replace(b" ", b""):
        return value
    return value + b";tag=" + tag


def _header_value(line: bytes) -> bytes:
    return line.partition(b":")[2].strip()


def bye_requests(
    dlg: Dialog,
    listeners: Sequence[Listener],
    is_ours: Callable[[URI], bool],
    extra: Sequence[bytes] = (),
) -> list[ByeRequest]:
    """The BYEs ending a dialog, one toward each side (RFC 3261 15.1.1).

    Toward the callee as the caller would send it (caller's From, callee's
    To, caller's CSeq + 1, the route set beyond us), toward the caller the
    mirror image. Each side is reached where the proxy last heard from it
    (the caller's INVITE, the callee's 2xx), else through the first Route,
    else at its Contact (where the proxy sends its in-dialog requests).
    Raises ValueError when a side cannot be addressed.
    """
    to_callee, to_caller = split_routes(is_ours, dlg.route_set)
    caller_id = _header_value(dlg.from_line)
    callee_id = _with_tag(_header_value(dlg.to_line), dlg.to_tag)

    def bye(
        side: str,
        contact: bytes,
        peer: Peer | None,
        routes: list[bytes],
        ids: tuple[bytes, bytes],
        cseq: int,
    ) -> ByeRequest:
        text = uri_in(contact)
        if not text:
            raise ValueError(f"the {side} left no Contact")
        try:
            uri = parse_uri(text.decode("utf-8", "surrogateescape"))
        except BadMessage as e:
            raise ValueError(f"{side} Contact {text!r}: {e.reason}") from None
        target: Target | None = None
        if peer is not None and 0 <= peer.listener < len(listeners):
            target = Target(uri, peer.host, peer.port, listeners[peer.listener].proto)
        if target is None and routes:
            target = Target.from_uri(uri_in(routes[0]).decode("utf-8", "surrogateescape"))
        if target is None:
            host = uri.params.get("maddr") or uri.host
            target = Target(uri, host, uri.effective_port(), uri.transport)
        headers = [
            b"From: " + ids[0],
            b"To: " + ids[1],
            b"Call-ID: " + dlg.call_id,
            b"CSeq: %d BYE" % cseq,
        ]
        if routes:
            headers.append(b"Route: " + b", ".join(routes))
        return ByeRequest(side, uri.raw, target, (*headers, *extra))

    return [
        bye(
            "callee",
            dlg.callee_contact,
            dlg.callee_peer,
            to_callee,
            (caller_id, callee_id),
            dlg.caller_cseq + 1,
        ),
        bye(
            "caller",
            dlg.caller_contact,
            dlg.caller_peer,
            to_caller,
            (callee_id, caller_id),
            dlg.callee_cseq + 1,
        ),
    ]


def extra_headers(text: str) -> list[bytes]:
    """Extra header lines for our BYEs (dlg.end_dlg): CRLF-separated, blanks
    and lines without a colon dropped."""
    lines = text.replace("\r\n", "\n").split("\n")
    return [line.strip().encode() for line in lines if line.strip() and ":" in line]


# -- sending ---------------------------------------------------------------------
def originate(
    proxy: Proxy,
    method: str,
    ruri: str,
    target: Target,
    headers: Sequence[bytes],
    on_done: OnDone,
    now: float,
    timeout: float | None = None,
    body: bytes = b"",
) -> bool:
    """Send a request of our own; False when it cannot go (no listener for
    the target, or the transaction table is full).

    ``headers`` carries From, To, Call-ID, CSeq and any Route (and the
    Content-Type of a ``body``); Via, Max-Forwards and Content-Length are
    added. ``on_done(code, response, now)`` is called once: with the final
    response, or with None when none came within ``timeout`` (or Timer F)
    or the transport failed.
    """
    lst = listener_for(proxy.outbound, target.proto, target.host)
    if lst is None:
        return False
    peer = Peer(lst.index, target.host, target.port)
    branch_id = proxy.branches.new("00000000")
    via_line = lst.via_prefix + b";branch=" + branch_id.encode()
    data = b"\r\n".join(
        (
            b"%s %s SIP/2.0" % (method.encode(), ruri.encode()),
            via_line,
            b"Max-Forwards: %d" % proxy.settings.max_forwards,
            *headers,
            b"Content-Length: %d" % len(body),
            b"",
            body,
        )
    )
    origin = _Origin(on_done)
    txn = proxy.txns.new_client(
        branch_id, method, lst.reliable, data, peer, _origin_response, _origin_failure, origin
    )
    if txn is None:
        proxy.refuse(now, method, target.host, target.port)
        return False
    if timeout is not None:
        origin.timer = proxy.timers.add(now, timeout, _origin_timeout, txn)
    proxy.stats.uac_transactions += 1
    txn.start(now)
    return True


def end_dialog(
    proxy: Proxy,
    dlg: Dialog,
    reason: str,
    now: float,
    extra: Sequence[bytes] = (),
    on_bye: Callable[[str, int | None], None] | None = None,
) -> int:
    """A BYE to each side of an answered or confirmed dialog, then the dialog
    and its load go. Returns how many BYEs were sent; ``on_bye(side, code)``
    hears each one's answer (None: none came)."""
    sent = 0
    try:
        byes = bye_requests(dlg, proxy.listeners, proxy.is_ours, extra)
    except ValueError as e:
        proxy.peer_log.info(now, "dialog %r: no BYE sent: %s", dlg.call_id[:64], e)
        byes = []
    for bye in byes:

        def done(code: int | None, msg: Message | None, t: float, side: str = bye.side) -> None:
            if on_bye is not None:
                on_bye(side, code)

        if originate(proxy, "BYE", bye.ruri, bye.target, bye.headers, done, now):
            sent += 1
    proxy.dialogs.end(dlg, reason, now)
    return sent


def hang_up(proxy: Proxy, dlg: Dialog, now: float) -> None:
    """A BYE to each side, answers ignored (the dialog table ends the dialog)."""
    try:
        byes = bye_requests(dlg, proxy.listeners, proxy.is_ours)
    except ValueError:
        return
    for bye in byes:
        originate(proxy, "BYE", bye.ruri, bye.target, bye.headers, _ignore_done, now)


class _Origin:
    """What a request we originated is waiting for."""

    __slots__ = ("done", "on_done", "timer")

    def __init__(self, on_done: OnDone) -> None:
        self.on_done = on_done
        self.done = False
        self.timer: Timer | None = None

    def finish(self, code: int | None, msg: Message | None, now: float) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.on_done(code, msg, now)


def _origin_response(txn: ClientTransaction, msg: Message, now: float) -> None:
    if msg.status >= 200 and isinstance(txn.context, _Origin):
        txn.context.finish(msg.status, msg, now)


def _origin_failure(txn: ClientTransaction, code: int, now: float) -> None:
    if isinstance(txn.context, _Origin):
        txn.context.finish(None, None, now)


def _origin_timeout(now: float, txn: ClientTransaction) -> None:
    origin = txn.context
    if isinstance(origin, _Origin):
        origin.timer = None
        txn.stop_retransmitting()  # Timer F still cleans up
        origin.finish(None, None, now)


def _ignore_done(code: int | None, msg: Message | None, now: float) -> None:
    pass
