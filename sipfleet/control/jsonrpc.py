"""JSON-RPC 2.0 as Kamailio's jsonrpcs module answers it (5.6, measured).

What a caller sees, and why it is not textbook JSON-RPC:

- Params are positional; an object's values are read in order, its keys
  ignored. Extra params are ignored.
- A fault is ``{"code": C, "message": M}`` with Kamailio's own codes (500,
  400, 404...); over HTTP the status line is ``C M``.
- Unknown method: 500 "Method Not Found".
- A request without ``"jsonrpc": "2.0"``, without a string ``method``, with
  ``params`` that is neither array nor object, or that is not an object at
  all (a batch): the method is not run and the result is ``{}``.
- No ``id``: still answered, without an ``id``. An ``id`` that is a string or
  number is echoed; ``true`` becomes 1; null, objects and arrays become 0.
- Text after the first JSON value is ignored; raw control characters (CR,
  LF, TAB ...) inside strings are kept, as srjson keeps them (kamcli sends
  raw CR LF in ``tm.t_uac_wait_block``'s headers).
- Unparseable JSON, or nesting deeper than ``kjson.MAX_DEPTH``: Kamailio
  drops the request (HTTP: closes without a reply). sipfleet answers HTTP
  and stream callers 400 "Parse Error", which no compatible client can have
  relied on; FIFO and datagram callers get nothing, as from Kamailio. Each
  is counted (``parse_errors``) and logged, rate-limited.

``JsonStreamReader`` cuts a byte stream into documents the way the jsonrpcs
FIFO does: a document ends where its outermost braces close.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from sipfleet.control.kjson import dumps_compact, dumps_pretty, loads_lenient
from sipfleet.control.registry import Dialect, Registry, RpcFault, settle
from sipfleet.ratelog import RateLimitedLog

__all__ = [
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "DocumentTooLarge",
    "JsonRpcHandler",
    "JsonRpcReply",
    "JsonStreamReader",
    "valid_reply_name",
]

log = logging.getLogger(__name__)

METHOD_NOT_FOUND = RpcFault(500, "Method Not Found")
PARSE_ERROR = RpcFault(400, "Parse Error")


@dataclass(frozen=True, slots=True)
class JsonRpcReply:
    status: int
    """HTTP status: 200, or the fault code (500 when it is no HTTP status)."""
    reason: str
    """HTTP reason phrase: "OK", or the fault message."""
    body: bytes
    reply_name: str | None = None
    """FIFO transport: the reply pipe's file name inside the reply directory."""
    parsed: bool = True
    """False for the "Parse Error" reply to unparseable input (HTTP and
    stream callers get it; FIFO and datagram callers get nothing)."""


class _NoId:
    """Marker: the request had no ``id`` member, so the reply has none."""


_NO_ID: Final = _NoId()


def _echo_id(doc: object) -> object:
    if not isinstance(doc, dict) or "id" not in doc:
        return _NO_ID
    rid = doc["id"]
    if isinstance(rid, str):
        return rid
    if isinstance(rid, bool):
        return int(rid)
    if isinstance(rid, int):
        return rid
    if isinstance(rid, float):
        return int(rid) if rid.is_integer() else rid
    return 0  # srjson reads valuedouble of null, objects and arrays: 0


def valid_reply_name(name: str) -> bool:
    """jsonrpcs refuses reply names with '.', '/' or '\\' (no escaping the reply dir)."""
    return bool(name) and not any(c in name for c in "./\\\0") and len(name) < 128


def _http_status(code: int) -> int:
    return code if 100 <= code <= 599 else 500


def _reason(message: str) -> str:
    return message.replace("\r", " ").replace("\n", " ")


class JsonRpcHandler:
    """Turns one JSON-RPC request document into its reply, per jsonrpcs."""

    def __init__(
        self,
        registry: Registry,
        *,
        pretty: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._dumps = dumps_pretty if pretty else dumps_compact
        self._clock = clock
        self._peer_log = RateLimitedLog(log)
        self.parse_errors = 0
        """Requests that were not JSON (or nested deeper than kjson.MAX_DEPTH)."""

    def handle(
        self, data: bytes, *, fifo: bool = False
    ) -> JsonRpcReply | Awaitable[JsonRpcReply] | None:
        """The reply to ``data``, or None when nothing must be sent back.

        ``fifo``: the request must name its reply pipe (``reply_name``); without
        a usable one the method is not run, as in jsonrpcs.
        """
        try:
            doc = loads_lenient(data)
        except ValueError as e:
            self.parse_errors += 1
            self._peer_log.warning(
                self._clock(), "jsonrpc: unparseable request (%d bytes): %s", len(data), e
            )
            if fifo:
                return None
            return replace(self._fault(_NO_ID, None, PARSE_ERROR), parsed=False)
        reply_name: str | None = None
        if fifo:
            name = doc.get("reply_name") if isinstance(doc, dict) else None
            if not isinstance(name, str) or not valid_reply_name(name):
                self._peer_log.warning(
                    self._clock(),
                    "jsonrpc fifo: dropping request without a usable reply_name: %r",
                    name if not isinstance(name, str) else name[:64],
                )
                return None
            reply_name = name
        rid = _echo_id(doc)
        if not isinstance(doc, dict) or doc.get("jsonrpc") != "2.0":
            return self._result(rid, reply_name, None)
        name = doc.get("method")
        if not isinstance(name, str):
            return self._result(rid, reply_name, None)
        method = self.registry.get(name)
        if method is None:
            return self._fault(rid, reply_name, METHOD_NOT_FOUND)
        params = doc.get("params", [])
        if isinstance(params, Mapping):
            raw = list(params.values())
        elif isinstance(params, list):
            raw = params
        else:
            return self._result(rid, reply_name, None)
        return settle(
            lambda: method.invoke(raw, Dialect.JSON),
            lambda value: self._result(rid, reply_name, value),
            lambda fault: self._fault(rid, reply_name, fault),
        )

    def fault_reply(self, data: bytes, fault: RpcFault) -> JsonRpcReply:
        """``fault`` as the answer to request ``data`` (same id), e.g. when
        the real answer cannot be delivered."""
        try:
            doc = loads_lenient(data)
        except ValueError:
            doc = None
        return self._fault(_echo_id(doc), None, fault)

    def _document(self, rid: object, key: str, value: object) -> bytes:
        doc: dict[str, object] = {"jsonrpc": "2.0", key: value}
        if rid is not _NO_ID:
            doc["id"] = rid
        return self._dumps(doc)

    def _result(self, rid: object, reply_name: str | None, value: object) -> JsonRpcReply:
        # A Kamailio method that adds nothing answers an empty object.
        body = self._document(rid, "result", {} if value is None else value)
        return JsonRpcReply(200, "OK", body, reply_name)

    def _fault(self, rid: object, reply_name: str | None, fault: RpcFault) -> JsonRpcReply:
        error = {"code": fault.code, "message": fault.message}
        body = self._document(rid, "error", error)
        return JsonRpcReply(_http_status(fault.code), _reason(fault.message), body, reply_name)


class DocumentTooLarge(ValueError):
    """A document grew past the reader's bound; its bytes were dropped."""


_TOKENS = re.compile(rb'["\\{}]')


class JsonStreamReader:
    """Cuts a stream into JSON documents by brace depth, outside strings.

    As in the jsonrpcs FIFO, bytes before the first '{' belong to the
    document (which then fails to parse and is dropped). Bounded by
    ``max_size`` so a writer that never closes its braces cannot grow the
    buffer without limit.
    """

    def __init__(self, max_size: int = 1 << 20) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._scan = 0  # where scanning resumes
        self._skip = -1  # index of an escaped byte inside a string
        self._depth = 0
        self._found = False
        self._in_string = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _reset(self) -> None:
        self._scan, self._skip, self._depth = 0, -1, 0
        self._found = self._in_string = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the documents completed by them.

        Raises DocumentTooLarge (after dropping the oversize bytes); the
        reader stays usable.
        """
        self._buf += data
        docs: list[bytes] = []
        buf = self._buf
        pos = self._scan
        while True:
            m = _TOKENS.search(buf, pos)
            if m is None:
                break
            i = m.start()
            pos = i + 1
            if i == self._skip:
                continue
            c = buf[i]
            if self._in_string:
                if c == 0x5C:  # backslash: the next byte is escaped
                    self._skip = i + 1
                elif c == 0x22:
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c == 0x7B:
                self._depth += 1
                self._found = True
            elif c == 0x7D and self._depth > 0:
                self._depth -= 1
                if self._found and self._depth == 0:
                    docs.append(bytes(buf[:pos]))
                    del buf[:pos]
                    self._reset()
                    pos = 0
        self._scan = len(buf)
        if len(buf) > self.max_size:
            size = len(buf)
            buf.clear()
            self._reset()
            raise DocumentTooLarge(f"JSON document over {self.max_size} bytes ({size} buffered)")
        return docs
