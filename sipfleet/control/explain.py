"""``sipfleet.explain_route``: where a request would go, and why, changing nothing.

    sipfleet.explain_route RURI [METHOD [HEADERS [SOURCE]]]

HEADERS is an object ``{"X-Tenant": "acme"}``, a list of ``"Name: value"``
lines, or one string of CRLF-separated lines; SOURCE is the sender's
``IP[:PORT]`` (default 127.0.0.1:5060). The routing policy is evaluated as
for a real request, then the dispatcher's selection runs on copies of the
round-robin and weight cursors (``Dispatcher.preview``), so asking never
moves the next real pick. The answer names the route (and the routes passed
over before it), its sets and algorithm, the candidates in the order the
proxy would try them, and each destination left out with the reason.

Also ``sipfleet.audit`` (who, what, result): records an operator tool's
action (the MCP server's) as an ``audit`` event, so it shows with the other
events, in the log and in webhooks.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import Any, Protocol

from sipfleet.control.registry import Param, Registry, RpcFault
from sipfleet.dispatch.destination import Destination
from sipfleet.dispatch.dispatcher import Dispatcher
from sipfleet.dispatch.flags import DS_DISABLED, DS_NOPING, state_letters
from sipfleet.dispatch.policy import RoutingPolicy
from sipfleet.dispatch.select import Keys, LoadView, NoDestination, Selection
from sipfleet.dispatch.settings import ALGORITHMS
from sipfleet.dispatch.state import AdminState, Health
from sipfleet.proxy.net import Peer
from sipfleet.sip.address import parse_address
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.message import Message, parse

__all__ = ["ExplainApp", "explain_route", "register_explain_methods"]

log = logging.getLogger("sipfleet.audit")

_MAX_HEADERS = 64  # an explain request is a handful of headers
_MAX_TEXT = 256  # audit fields are cut to this many characters


class _RouterLike(Protocol):
    @property
    def policy(self) -> RoutingPolicy: ...
    @property
    def load(self) -> LoadView: ...


class _Events(Protocol):
    def emit(self, kind: str, data: dict[str, Any]) -> Any: ...


class ExplainApp(Protocol):
    """What explain and audit use of the running process."""

    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def router(self) -> Any: ...
    @property
    def events(self) -> Any: ...
    @property
    def now(self) -> Any: ...


def _header_lines(headers: object) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if headers is None or headers == "":
        return out
    if isinstance(headers, Mapping):
        items = [(str(k), str(v)) for k, v in headers.items()]
    else:
        if isinstance(headers, str):
            lines: list[object] = list(headers.replace("\r\n", "\n").split("\n"))
        elif isinstance(headers, list):
            lines = list(headers)
        else:
            raise RpcFault(400, "Bad headers: give an object, a list of 'Name: value' or a string")
        items = []
        for line in lines:
            if not isinstance(line, str) or not line.strip():
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise RpcFault(400, f"Bad header line {line[:60]!r}: expected 'Name: value'")
            items.append((name.strip(), value.strip()))
    if len(items) > _MAX_HEADERS:
        raise RpcFault(400, f"Too many headers (at most {_MAX_HEADERS})")
    for name, value in items:
        if not name or any(c in name for c in ": \r\n\t") or "\r" in value or "\n" in value:
            raise RpcFault(400, f"Bad header {name[:60]!r}")
        out.append((name, value))
    return out


def _source(text: str) -> Peer:
    text = text.strip()
    host, port = text, 5060
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not p.isdigit():
            raise RpcFault(400, f"Bad source {text!r}: expected IP[:PORT]")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise RpcFault(400, f"Bad source {text!r}: expected IP[:PORT]") from None
    return Peer(0, host, port)


def _request(ruri: str, method: str, headers: list[tuple[str, str]], source: Peer) -> Message:
    if not ruri or any(c.isspace() for c in ruri):
        raise RpcFault(400, "Bad R-URI: expected e.g. sip:alice@example.com")
    if not method.isalpha() or len(method) > 32:
        raise RpcFault(400, f"Bad method {method[:40]!r}")
    given = {n.lower() for n, _ in headers}
    host = f"[{source.host}]" if ":" in source.host else source.host
    lines = [f"Via: SIP/2.0/UDP {host}:{source.port};branch=z9hG4bK-explain"]
    defaults = {
        "from": f"<sip:explain@{host}>;tag=explain",
        "to": f"<{ruri}>",
        "call-id": f"explain-{os.urandom(6).hex()}",
        "cseq": f"1 {method}",
        "max-forwards": "70",
    }
    for name, value in defaults.items():
        if name not in given:
            lines.append(f"{name.title()}: {value}")
    lines += [f"{n}: {v}" for n, v in headers if n.lower() not in ("via", "content-length")]
    lines.append("Content-Length: 0")
    data = f"{method} {ruri} SIP/2.0\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    try:
        msg = parse(data.encode("utf-8", "surrogateescape"))
        if not msg.is_request:
            raise BadMessage("not a request")
    except BadMessage as e:
        raise RpcFault(400, f"Bad request: {e}") from None
    return msg


def _keys(msg: Message) -> Keys:
    def addr(name: bytes) -> str:
        value = msg.get(name)
        if value is None:
            return ""
        try:
            return parse_address(value).uri.decode("utf-8", "surrogateescape")
        except BadMessage:
            return ""

    auth: str | None = None
    for name in (b"proxy-authorization", b"authorization"):
        value = msg.get(name)
        if value is not None:
            text = value.decode("utf-8", "replace")
            _, _, rest = text.partition("username=")
            user = rest.split(",")[0].strip().strip('"')
            if user:
                auth = user
                break
    return Keys(
        method=msg.method,
        call_id=msg.call_id.decode("utf-8", "surrogateescape"),
        from_uri=addr(b"from"),
        to_uri=addr(b"to"),
        ruri=msg.ruri,
        auth_username=auth,
    )


def _conditions(route: Any) -> dict[str, Any]:
    match = route.cfg.match
    return {k: v for k, v in match.as_dict().items() if v not in (None, [], {})}


def _dest_row(d: Destination, dispatcher: Dispatcher, load: LoadView) -> dict[str, Any]:
    st = dispatcher.state(d)
    flags = st.flags() | (d.flags & DS_NOPING) | (DS_DISABLED if st.skip_admin else 0)
    return {
        "set": d.set_id,
        "uri": d.uri,
        "duid": d.duid,
        "flags": state_letters(flags),
        "admin": st.admin.value,
        "health": st.health.value,
        "load": load.load(d.load_key),
        "maxload": d.attrs.maxload,
        "priority": d.priority,
    }


def _skip_reason(d: Destination, dispatcher: Dispatcher, load: LoadView, alg: int) -> str:
    st = dispatcher.state(d)
    if st.admin is AdminState.DISABLED:
        return "disabled by the operator" + (f" ({st.admin_by})" if st.admin_by else "")
    if st.admin is AdminState.DRAINING:
        return "draining: takes no new calls" + (f" ({st.admin_by})" if st.admin_by else "")
    if st.health is Health.INACTIVE:
        return "inactive: failed its health probes"
    if d.attrs.maxload and load.load(d.load_key) >= d.attrs.maxload:
        return f"full: {load.load(d.load_key)} calls, maxload {d.attrs.maxload}"
    if alg == 8:
        return "serial: a lower-order entry comes first"
    return "usable, beyond the candidate limit"


def explain_route(
    app: ExplainApp,
    ruri: str,
    method: str = "INVITE",
    headers: object = None,
    source: str = "127.0.0.1",
) -> dict[str, Any]:
    """The answer of ``sipfleet.explain_route`` (see the module docstring)."""
    method = method.upper() if method else "INVITE"
    peer = _source(source or "127.0.0.1")
    msg = _request(ruri, method, _header_lines(headers), peer)
    router: _RouterLike = app.router
    d = app.dispatcher
    load = router.load
    passed: list[dict[str, Any]] = []
    chosen = None
    for r in router.policy.routes:
        if r.matches(msg, peer):
            chosen = r
            break
        passed.append({"route": r.cfg.name, "conditions": _conditions(r)})
    out: dict[str, Any] = {
        "request": {"method": method, "ruri": ruri, "source": f"{peer.host}:{peer.port}"},
        "routes_passed": passed,
    }
    if chosen is None:
        out.update(route=None, result="404 No Route", destination=None, candidates=[], skipped=[])
        out["why"] = "no [[route]] matches this request"
        return out
    cfg = chosen.cfg
    alg = cfg.algorithm if cfg.algorithm is not None else d.config.algorithm
    hash_string: str | None = None
    if cfg.hash_header:
        v = msg.get(cfg.hash_header.lower().encode())
        hash_string = v.decode("utf-8", "replace") if v is not None else ""
    sel = d.preview(
        [(s, alg) for s in cfg.sets],
        _keys(msg),
        now=app.now(),
        limit=chosen.limit,
        hash_string=hash_string,
        load=load,
        consistent=cfg.consistent_hash,
    )
    out.update(
        route=cfg.name,
        conditions=_conditions(chosen),
        sets=list(cfg.sets),
        algorithm=alg,
        algorithm_name=ALGORITHMS.get(alg, "?"),
        limit=chosen.limit,
    )
    candidates: list[Destination] = list(sel.candidates) if isinstance(sel, Selection) else []
    rows = []
    for i, c in enumerate(candidates):
        row = _dest_row(c, d, load)
        row["order"] = i + 1
        rows.append(row)
    in_list = {(c.set_id, c.uri) for c in candidates}
    skipped = []
    for set_id in cfg.sets:
        for c in d.destinations():
            if c.set_id != set_id or (c.set_id, c.uri) in in_list:
                continue
            row = _dest_row(c, d, load)
            row["reason"] = _skip_reason(c, d, load, alg)
            skipped.append(row)
    out["candidates"] = rows
    out["skipped"] = skipped
    if candidates:
        first = candidates[0]
        out["destination"] = first.uri
        out["result"] = "forward"
        parallel = isinstance(sel, Selection) and sel.parallel
        out["why"] = (
            f"route {cfg.name!r} matched; algorithm {alg} ({ALGORITHMS.get(alg, '?')}) "
            f"over set{'s' if len(cfg.sets) > 1 else ''} {', '.join(map(str, cfg.sets))} "
            f"picks {first.uri}"
            + (", forking to every candidate at once" if parallel else "")
            + (f"; {len(candidates) - 1} more to fail over to" if len(candidates) > 1 else "")
        )
    else:
        out["destination"] = None
        detail = sel.detail if isinstance(sel, NoDestination) else "no candidate"
        retry = f" (Retry-After: {cfg.retry_after})" if cfg.retry_after else ""
        out["result"] = f"503 Service Unavailable{retry}"
        out["why"] = f"route {cfg.name!r} matched but {detail}"
    return out


def _cut(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def register_explain_methods(registry: Registry, app: ExplainApp) -> None:
    def explain(
        ruri: str, method: object = None, headers: object = None, source: object = None
    ) -> dict[str, Any]:
        if method is not None and not isinstance(method, str):
            raise RpcFault(400, "Bad method: give a string, e.g. INVITE")
        if source is not None and not isinstance(source, str):
            raise RpcFault(400, "Bad source: give IP[:PORT]")
        return explain_route(app, ruri, method or "INVITE", headers, source or "127.0.0.1")

    def audit(who: str, action: str, result: str, details: object = None) -> str:
        data: dict[str, Any] = {"who": _cut(who), "action": _cut(action), "result": _cut(result)}
        if isinstance(details, Mapping):
            data["details"] = {_cut(k): _cut(v) for k, v in list(details.items())[:16]}
        elif details is not None:
            data["details"] = _cut(details)
        app.events.emit("audit", data)
        return "Ok."

    registry.add(
        "sipfleet.explain_route",
        explain,
        doc="Where a request would be routed and why (changes nothing): ruri [method [headers [source]]]",
        params=[
            Param("ruri", "str"),
            Param("method", "any", optional=True),
            Param("headers", "any", optional=True),
            Param("source", "any", optional=True),
        ],
    )
    registry.add(
        "sipfleet.audit",
        audit,
        doc="Record an operator tool's action as an audit event: who action result [details]",
        params=[
            Param("who", "str"),
            Param("action", "str"),
            Param("result", "str"),
            Param("details", "any", optional=True),
        ],
    )
