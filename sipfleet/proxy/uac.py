"""Requests the proxy writes as a user agent of its own: the BYEs that end a
dialog (``dlg.end_dlg``, a 2xx whose ACK never came), built from what the
dialog table remembers of both sides (RFC 3261 15.1.1, 12.2.1.1).

Pure: the proxy core sends them through ``Proxy.originate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sipfleet.proxy.router import Target
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.uri import URI, parse_uri

if TYPE_CHECKING:
    from sipfleet.proxy.dialogs import Dialog
    from sipfleet.proxy.net import Listener, Peer

__all__ = ["ByeRequest", "bye_requests", "split_routes", "uri_in"]


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
