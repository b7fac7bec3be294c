"""tm's ``t_uac_*`` RPC methods: an operator sends one request from the proxy.

    tm.t_uac_start       METHOD RURI NEXTHOP SOCKET HEADERS [BODY]  send, answer {} at once
    tm.t_uac_wait        same: answer [code, reason, (ruri, next hop, routes,)
                         rest of the reply] once the final reply is in
    tm.t_uac_wait_block  same: answer {"code": C, "text": reason}

As Kamailio 5.6.3's tm (rpc_uac.c): NEXTHOP and SOCKET may be "." or ""
(none); HEADERS are CRLF-separated and must hold From and To; From gets a
tag, Call-ID and CSeq (10) are generated when not given; a BODY needs a
Content-Type and forbids Content-Length. The checks answer tm's faults in
tm's order (400 "Empty method", 400 "Invalid request uri ..." ...). No
final reply within the transaction's time (Timer F for non-INVITE, the
proxy's final_response_timeout for INVITE) reads as 408 "Request Timeout",
as tm's faked reply does.

The request goes only where the call says: the next hop when given, else
the R-URI's host (its maddr, port and transport). It is an operator's
method: nothing a peer sends can make sipfleet use it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sipfleet.control.registry import Param, Registry, RpcFault
from sipfleet.proxy.router import Target
from sipfleet.sip.address import Address, parse_address
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.message import Message
from sipfleet.sip.uri import URI, parse_uri

if TYPE_CHECKING:
    from sipfleet.proxy.core import Proxy

__all__ = ["UacRequest", "Waiter", "build_uac_request", "register_uac_methods"]

log = logging.getLogger("sipfleet.rpc")

DEFAULT_CSEQ = 10  # tm's DEFAULT_CSEQ
MAX_PENDING = 256  # t_uac_wait*/block calls waiting at once; more are refused
# Headers the proxy writes itself: the caller's copies would be duplicates.
_OWN = {b"via", b"v", b"max-forwards", b"content-length", b"l"}
_IDS = {b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"}


_Outcome = tuple[int, "Message | None"]


class Waiter(Protocol):
    """A one-shot result the handler awaits (the loop's future, injected so
    this module needs no event loop)."""

    def done(self) -> bool: ...
    def set_result(self, result: _Outcome, /) -> None: ...
    def __await__(self) -> Generator[Any, None, _Outcome]: ...


@dataclass(frozen=True, slots=True)
class UacRequest:
    method: str
    ruri: str
    target: Target
    headers: tuple[bytes, ...]
    body: bytes


def _unfold(text: str) -> list[bytes] | None:
    """CRLF-separated header lines, continuation lines joined; None if one is not a header."""
    lines: list[bytes] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        if not raw.strip():
            continue
        if raw[0] in " \t":
            if not lines:
                return None
            lines[-1] += b" " + raw.strip().encode()
            continue
        name, colon, _ = raw.partition(":")
        if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
            return None
        lines.append(raw.strip().encode())
    return lines


def _name(line: bytes) -> bytes:
    return line.partition(b":")[0].strip().lower()


def _value(line: bytes) -> bytes:
    return line.partition(b":")[2].strip()


def _address(value: bytes) -> Address | None:
    """A From/To value as Kamailio's parse_to accepts it: an address, then only ;params."""
    try:
        addr = parse_address(value, "address")
    except BadMessage:
        return None
    rest = addr.params.strip()
    if rest and not rest.startswith(b";"):
        return None
    return addr


def _uri(text: str, what: str) -> URI:
    try:
        return parse_uri(text)
    except BadMessage:
        raise RpcFault(400, f'Invalid {what} "{text}"') from None


def build_uac_request(
    params: Sequence[object], listeners: Sequence[tuple[str, str, int]]
) -> UacRequest:
    """Check the RPC's params as tm does and build the request; RpcFault on bad input.

    ``listeners``: (proto, host, port) of each SIP listener, for SOCKET.
    """
    got = 0
    for p in params[:5]:
        if not isinstance(p, str):
            break
        got += 1
    if got < 5:
        # tm prints rpc->scan's count, which jsonrpcs makes negative when short.
        raise RpcFault(400, f"too few parameters ({-got}/5)")
    method, ruri, nexthop, socket, headers = (str(p) for p in params[:5])
    body_param = params[5] if len(params) > 5 else ""
    body = body_param if isinstance(body_param, str) else ""
    if not method:
        raise RpcFault(400, "Empty method")
    ruri_parsed = _uri(ruri, "request uri")
    hop = None if nexthop in (".", "") else _uri(nexthop, "next-hop uri")
    if socket not in (".", ""):
        proto, _, hostport = socket.partition(":")
        host, _, port = hostport.rpartition(":")
        if not proto or not host or not port.isdigit() or host.startswith("("):
            raise RpcFault(400, f'Invalid send socket "{socket}"')
        host = host.strip("[]")
        if not any(
            (lp, lh, lport) == (proto.lower(), host, int(port)) for lp, lh, lport in listeners
        ):
            raise RpcFault(400, f'No local socket for "{socket}"')
    lines = _unfold(headers)
    if lines is None:
        raise RpcFault(400, "Invalid headers")
    names = [_name(x) for x in lines]

    def first(*keys: bytes) -> bytes | None:
        return next((_value(x) for x, n in zip(lines, names, strict=True) if n in keys), None)

    to = first(b"to", b"t")
    # Kamailio's header parser reads To at once (a bad one fails the whole
    # block) and From only when asked: kamcli 3.0's ping folds its Contact
    # line into To and gets 400 "Invalid headers" from Kamailio 5.6.3 too.
    if to is not None and _address(to) is None:
        raise RpcFault(400, "Invalid headers")
    if body and not any(n in (b"content-type", b"c") for n in names):
        raise RpcFault(400, "Content-Type missing")
    if body and any(n in (b"content-length", b"l") for n in names):
        raise RpcFault(400, "Content-Length disallowed")
    if to is None:
        raise RpcFault(400, "To missing")
    frm = first(b"from", b"f")
    if frm is None:
        raise RpcFault(400, "From missing")
    from_addr = _address(frm)
    if from_addr is None:
        raise RpcFault(400, "Error in From")
    cseq_num = DEFAULT_CSEQ
    cseq = first(b"cseq")
    if cseq is not None:
        num, _, cmethod = cseq.partition(b" ")
        if not num.isdigit():
            raise RpcFault(400, "Non-numerical CSeq")
        if cmethod.strip().decode("utf-8", "replace") != method:
            raise RpcFault(400, "CSeq method mismatch")
        cseq_num = int(num)
    call_id = first(b"call-id", b"i") or (os.urandom(8).hex() + "@sipfleet").encode()
    from_line = frm if from_addr.tag else frm + b";tag=" + os.urandom(8).hex().encode()
    built = [
        b"From: " + from_line,
        b"To: " + to,
        b"Call-ID: " + call_id,
        b"CSeq: %d %s" % (cseq_num, method.encode()),
    ]
    built += [x for x, n in zip(lines, names, strict=True) if n not in _IDS and n not in _OWN]
    where = hop or ruri_parsed
    host = where.params.get("maddr") or where.host
    target = Target(ruri_parsed, host, where.effective_port(), where.transport)
    return UacRequest(method, ruri, target, tuple(built), body.encode())


def _reason(code: int, msg: Message | None) -> str:
    if msg is not None:
        return msg.reason.decode("utf-8", "replace")
    return _TEXT.get(code, "Unknown")


_TEXT = {408: "Request Timeout", 503: "Service Unavailable"}


def _wait_result(code: int, msg: Message | None) -> list[object]:
    """tm's rpc_uac_callback: code, reason, then for a 2xx the remote target,
    next hop and route set, then the reply from its first header on."""
    out: list[object] = [code, _reason(code, msg)]
    if msg is None:
        return [*out, "", "", "", ""]
    if 200 <= code < 300:
        contact = msg.get(b"contact")
        if contact:
            try:
                target = parse_address(contact, "Contact").uri.decode("utf-8", "replace")
            except BadMessage:
                target = ""
            if target:
                routes = list(reversed(msg.values(b"record-route")))
                hop = target
                if routes:
                    try:
                        first = parse_address(routes[0], "Record-Route").uri.decode(
                            "utf-8", "replace"
                        )
                        if ";lr" in first:
                            hop = first
                    except BadMessage:
                        pass
                route_text = (
                    ("Route: " + ", ".join(r.decode("utf-8", "replace") for r in routes))
                    if routes
                    else ""
                )
                out += [target, hop, route_text]
    rest = b"\r\n".join((*msg.lines, b"", msg.body))
    out.append(rest.decode("utf-8", "replace"))
    return out


def register_uac_methods(
    registry: Registry,
    proxy: Callable[[], Proxy],
    now: Callable[[], float],
    invite_timeout: Callable[[], float],
    new_waiter: Callable[[], Waiter],
) -> None:
    """``proxy()`` gives the running proxy, ``now()`` the loop's clock,
    ``new_waiter()`` a future of the loop."""
    pending: set[Waiter] = set()

    def listeners() -> list[tuple[str, str, int]]:
        return [(x.proto, x.host, x.port) for x in proxy().listeners]

    def send(req: UacRequest, done: Callable[[int | None, Message | None, float], None]) -> None:
        timeout = invite_timeout() if req.method == "INVITE" else None
        sent = proxy().originate(
            req.method,
            req.ruri,
            req.target,
            req.headers,
            done,
            now(),
            timeout=timeout,
            body=req.body,
        )
        if not sent:
            raise RpcFault(500, "RPC/UAC error")

    def start(*params: object) -> None:
        req = build_uac_request(params, listeners())

        def done(code: int | None, msg: Message | None, at: float) -> None:
            log.info("tm.t_uac_start %s %s: %s", req.method, req.ruri, code or "no reply")

        send(req, done)

    async def wait_for(params: Sequence[object]) -> tuple[int, Message | None]:
        req = build_uac_request(params, listeners())
        if len(pending) >= MAX_PENDING:
            raise RpcFault(500, "RPC/UAC error")
        fut = new_waiter()

        def done(code: int | None, msg: Message | None, at: float) -> None:
            if not fut.done():
                fut.set_result((408, None) if code is None else (code, msg))

        send(req, done)
        pending.add(fut)
        try:
            return await fut
        finally:
            pending.discard(fut)

    async def wait(*params: object) -> list[object]:
        code, msg = await wait_for(params)
        return _wait_result(code, msg)

    async def wait_block(*params: object) -> dict[str, Any]:
        code, msg = await wait_for(params)
        return {"code": code, "text": _reason(code, msg)}

    spec = [
        Param(n, "any", optional=True)
        for n in ("method", "ruri", "nexthop", "socket", "headers", "body")
    ]
    registry.add(
        "tm.t_uac_start",
        start,
        doc="starts a tm uac using  a list of string parameters: method, ruri, dst_uri, "
        "send_sock, headers (CRLF separated) and body (optional)",
        params=spec,
    )
    registry.add(
        "tm.t_uac_wait",
        wait,
        doc="starts a tm uac and waits for the final reply, using a list of string "
        "parameters: method, ruri, dst_uri send_sock, headers (CRLF separated) and body "
        "(optional)",
        params=spec,
    )
    registry.add(
        "tm.t_uac_wait_block",
        wait_block,
        doc="starts a tm uac and waits for the final reply in blocking mode, using a list "
        "of string parameters: method, ruri, dst_uri send_sock, headers (CRLF separated) "
        "and body (optional)",
        params=spec,
    )
