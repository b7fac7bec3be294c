"""BINRPC, the binary protocol of Kamailio's ctl module and kamcmd.

Packet: ``0xA1``, then ``type<<4 | (LL-1)<<2 | (CL-1)``, the body length in
LL bytes and the cookie in CL bytes (big-endian, minimal); a reply echoes
the request's cookie. Types: 0 request, 1 reply, 3 fault.

Record: a tag byte ``S|size(3)|type(4)``. S=0: size is the value's length
(0-7). S=1: size is how many bytes of length follow. Values: 0 int (32-bit,
minimal big-endian, so negative ints take 4 bytes), 1 string (NUL ended, the
length counts the NUL), 2 double (value*1000 as an int), 3 struct and 4
array (start tags 0x03/0x04, end tags 0x83/0x84), 5 a member name inside a
struct (its value follows), 6 bytes.

A request body is the method name then the params; a fault body is an int
code then a string; a reply body is the records the method added.

How results map, as Kamailio 5.6's ctl writes them (read off the wire):

- a top-level list is a sequence of top-level records (``system.listMethods``
  sends one string record per name, not an array);
- a dict is a struct of members;
- a list inside a struct is written as a *struct* (kamcmd cannot read arrays
  inside structs), its one-key dict items as members: JSON
  ``"RECORDS": [{"SET": ...}, {"SET": ...}]`` is ``RECORDS: { SET: .. SET: .. }``;
- None (JSON null) is the string ``<null string>``, what kamcmd shows for
  dispatcher's unset attributes; a method that returns None adds nothing;
- True/False are ints; ints outside 32 bits and floats outside the
  fixed-point range travel as decimal strings rather than wrapping silently.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sipfleet.control.registry import Dialect, Registry, RpcFault, settle

__all__ = [
    "MAGIC",
    "NULL_STRING",
    "BinRpcError",
    "BinRpcHandler",
    "BinRpcReply",
    "Packet",
    "PacketReader",
    "PacketType",
    "RecordType",
    "decode_fault",
    "decode_records",
    "encode_fault",
    "encode_packet",
    "encode_reply",
    "encode_request",
]

log = logging.getLogger(__name__)

MAGIC = 0xA1  # magic 0xA, version 1
NULL_STRING = "<null string>"
_MAX_DEPTH = 64  # nesting bound for decoding: a hostile packet cannot recurse us to death


class PacketType(enum.IntEnum):
    REQUEST = 0
    REPLY = 1
    FAULT = 3


class RecordType(enum.IntEnum):
    INT = 0
    STR = 1
    DOUBLE = 2
    STRUCT = 3
    ARRAY = 4
    AVP = 5
    BYTES = 6


class BinRpcError(ValueError):
    """A malformed packet or record; the message is Kamailio's wording."""


CORRUPTED = "corrupted packet"
TYPE_MISMATCH = "record doesn't match type"
END_OF_PACKET = "end of packet encountered"
BAD_RECORD = "bad record"


@dataclass(frozen=True, slots=True)
class Packet:
    type: PacketType
    cookie: int
    body: bytes


def _minimal(n: int) -> bytes:
    """Big-endian bytes of an unsigned 32-bit value, at least one byte."""
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


def encode_packet(ptype: PacketType, cookie: int, body: bytes) -> bytes:
    if len(body) >= 1 << 32:
        raise ValueError("BINRPC body over 4 GiB")
    length = _minimal(len(body))
    ck = _minimal(cookie & 0xFFFFFFFF)
    head = bytes([MAGIC, (ptype << 4) | ((len(length) - 1) << 2) | (len(ck) - 1)])
    return head + length + ck + body


def _parse_header(buf: bytes | bytearray) -> tuple[PacketType, int, int, int] | None:
    """(type, body length, cookie, header length), or None if more bytes are needed."""
    if len(buf) < 4:  # the smallest header: 2 fixed bytes, 1 length, 1 cookie
        if buf and buf[0] != MAGIC:
            raise BinRpcError(CORRUPTED)
        return None
    if buf[0] != MAGIC:
        raise BinRpcError(CORRUPTED)
    try:
        ptype = PacketType(buf[1] >> 4)
    except ValueError:
        raise BinRpcError(CORRUPTED) from None
    ll = ((buf[1] >> 2) & 3) + 1
    cl = (buf[1] & 3) + 1
    hlen = 2 + ll + cl
    if len(buf) < hlen:
        return None
    length = int.from_bytes(buf[2 : 2 + ll], "big")
    cookie = int.from_bytes(buf[2 + ll : hlen], "big")
    return ptype, length, cookie, hlen


class PacketReader:
    """Incremental framing for a stream: partial reads, several packets a read.

    ``max_body`` bounds what one peer can make us buffer (1 MiB: a request is
    a method name and a few params; replies are read by clients with their
    own, larger bound).
    """

    def __init__(self, max_body: int = 1 << 20) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self.last_cookie = 0  # for a fault about a packet we could not frame

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        """Raises BinRpcError on a corrupt or oversize header: the stream is lost."""
        self._buf += data
        packets: list[Packet] = []
        while True:
            header = _parse_header(self._buf)
            if header is None:
                break
            ptype, length, cookie, hlen = header
            self.last_cookie = cookie
            if length > self.max_body:
                raise BinRpcError(f"packet of {length} bytes over the {self.max_body} byte limit")
            if len(self._buf) < hlen + length:
                break
            packets.append(Packet(ptype, cookie, bytes(self._buf[hlen : hlen + length])))
            del self._buf[: hlen + length]
        return packets


# -- encoding ---------------------------------------------------------------


def _int_record(value: int, rtype: RecordType = RecordType.INT) -> bytes:
    raw = (value & 0xFFFFFFFF).to_bytes(4, "big").lstrip(b"\0")
    return bytes([(len(raw) << 4) | rtype]) + raw


def _str_record(data: bytes, rtype: RecordType) -> bytes:
    if rtype in (RecordType.STR, RecordType.AVP):
        data += b"\0"
    if len(data) < 8:
        return bytes([(len(data) << 4) | rtype]) + data
    length = _minimal(len(data))
    return bytes([((8 | len(length)) << 4) | rtype]) + length + data


def _scalar(value: object, out: bytearray) -> bool:
    """Append ``value`` if it is a scalar; False for containers."""
    if value is None:
        out += _str_record(NULL_STRING.encode(), RecordType.STR)
    elif isinstance(value, bool):
        out += _int_record(int(value))
    elif isinstance(value, int):
        if -(1 << 31) <= value < 1 << 32:
            out += _int_record(value)
        else:
            out += _str_record(str(value).encode(), RecordType.STR)
    elif isinstance(value, float):
        scaled = value * 1000
        if math.isfinite(scaled) and -(1 << 31) <= scaled < 1 << 31:
            out += _int_record(int(scaled), RecordType.DOUBLE)
        else:
            out += _str_record(repr(value).encode(), RecordType.STR)
    elif isinstance(value, str):
        out += _str_record(value.encode("utf-8", "surrogateescape"), RecordType.STR)
    elif isinstance(value, bytes | bytearray):
        out += _str_record(bytes(value), RecordType.BYTES)
    else:
        return False
    return True


def _member(name: str, value: object, out: bytearray) -> None:
    out += _str_record(name.encode("utf-8", "surrogateescape"), RecordType.AVP)
    _in_struct(value, out)


def _in_struct(value: object, out: bytearray) -> None:
    """A value inside a struct: lists become structs, as 5.6's ctl writes them."""
    if _scalar(value, out):
        return
    out.append(RecordType.STRUCT)
    if isinstance(value, Mapping):
        for key, item in value.items():
            _member(str(key), item, out)
    elif isinstance(value, Iterable):
        for item in value:
            if isinstance(item, Mapping) and len(item) == 1:
                ((key, inner),) = item.items()
                _member(str(key), inner, out)
            else:
                _in_struct(item, out)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} in BINRPC")
    out.append(0x80 | RecordType.STRUCT)


def _top(value: object, out: bytearray) -> None:
    """A record outside any struct: dicts are structs, lists are arrays."""
    if _scalar(value, out):
        return
    if isinstance(value, Mapping):
        _in_struct(value, out)
    elif isinstance(value, Iterable):
        out.append(RecordType.ARRAY)
        for item in value:
            _top(item, out)
        out.append(0x80 | RecordType.ARRAY)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} in BINRPC")


def encode_body(value: object) -> bytes:
    """A reply body: None adds nothing; a list's items are top-level records."""
    out = bytearray()
    if value is None:
        pass
    elif isinstance(value, list | tuple):
        for item in value:
            _top(item, out)
    else:
        _top(value, out)
    return bytes(out)


def encode_reply(value: object, cookie: int) -> bytes:
    return encode_packet(PacketType.REPLY, cookie, encode_body(value))


def encode_fault(code: int, message: str, cookie: int) -> bytes:
    body = _int_record(code) + _str_record(message.encode("utf-8", "replace"), RecordType.STR)
    return encode_packet(PacketType.FAULT, cookie, body)


def encode_request(method: str, params: Sequence[object], cookie: int) -> bytes:
    out = bytearray(_str_record(method.encode(), RecordType.STR))
    for param in params:
        _top(param, out)
    return encode_packet(PacketType.REQUEST, cookie, bytes(out))


# -- decoding ---------------------------------------------------------------


class _End:
    """An end tag, returned by _read to the container that is reading."""

    def __init__(self, rtype: int) -> None:
        self.rtype = rtype


class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.body)

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise BinRpcError(END_OF_PACKET)
        chunk = self.body[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def tag(self) -> tuple[int, int, bool]:
        """(type, value length, S bit)."""
        (b,) = self._take(1)
        rtype, size = b & 0x0F, b >> 4
        if size & 8:
            return rtype, int.from_bytes(self._take(size & 7), "big"), True
        return rtype, size, False

    def read(self, depth: int, in_struct: bool) -> object:
        if depth > _MAX_DEPTH:
            raise BinRpcError(BAD_RECORD)
        rtype, length, ext = self.tag()
        if rtype in (RecordType.STRUCT, RecordType.ARRAY):
            self._take(length)  # 0 for a well-formed tag
            if ext:
                return _End(rtype)
            return self._container(rtype, depth + 1)
        raw = self._take(length)
        if rtype == RecordType.INT:
            return _signed(raw)
        if rtype == RecordType.STR:
            return raw[:-1].decode("utf-8", "replace")
        if rtype == RecordType.DOUBLE:
            return _signed(raw) / 1000
        if rtype == RecordType.BYTES:
            return raw
        if rtype == RecordType.AVP:
            raise BinRpcError(BAD_RECORD if in_struct else TYPE_MISMATCH)
        raise BinRpcError(TYPE_MISMATCH)

    def _container(self, rtype: int, depth: int) -> object:
        items: list[tuple[str | None, object]] = []
        while True:
            if self.at_end():
                raise BinRpcError(END_OF_PACKET)
            if rtype == RecordType.STRUCT and self.body[self.pos] & 0x0F == RecordType.AVP:
                _, length, _ext = self.tag()
                name = self._take(length)[:-1].decode("utf-8", "replace")
                value = self.read(depth, True)
                if isinstance(value, _End):
                    raise BinRpcError(BAD_RECORD)
                items.append((name, value))
                continue
            value = self.read(depth, rtype == RecordType.STRUCT)
            if isinstance(value, _End):
                if value.rtype != rtype:
                    raise BinRpcError(BAD_RECORD)
                break
            items.append((None, value))
        if rtype == RecordType.ARRAY:
            return [v for _, v in items]
        names = [n for n, _ in items]
        if None not in names and len(set(names)) == len(names):
            return {n: v for n, v in items}
        # Repeated member names (or bare values): the shape Kamailio's JSON
        # transport gives such a struct, a list of one-key objects.
        return [v if n is None else {n: v} for n, v in items]


def _signed(raw: bytes) -> int:
    value = int.from_bytes(raw, "big") & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def decode_records(body: bytes) -> list[object]:
    """Every top-level record of a body as JSON-like values."""
    reader = _Reader(body)
    values: list[object] = []
    while not reader.at_end():
        value = reader.read(0, False)
        if isinstance(value, _End):
            raise BinRpcError(BAD_RECORD)
        values.append(value)
    return values


def decode_fault(body: bytes) -> RpcFault:
    values = decode_records(body)
    code = values[0] if values and isinstance(values[0], int) else 500
    message = values[1] if len(values) > 1 and isinstance(values[1], str) else ""
    return RpcFault(code, message)


# -- serving ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BinRpcReply:
    data: bytes
    close: bool = False
    """ctl closes the connection after a packet it could not make sense of."""


class BinRpcHandler:
    """Turns one request packet into its reply packet, per Kamailio's ctl."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def handle(self, packet: Packet) -> BinRpcReply | Awaitable[BinRpcReply]:
        cookie = packet.cookie
        if packet.type != PacketType.REQUEST:
            return BinRpcReply(encode_fault(400, f"bad request: {CORRUPTED}", cookie), close=True)
        reader = _Reader(packet.body)
        try:
            name = reader.read(0, False)
            if not isinstance(name, str):
                raise BinRpcError(TYPE_MISMATCH)
        except BinRpcError as e:
            return BinRpcReply(encode_fault(400, f"bad request method: {e}", cookie), close=True)
        method = self.registry.get(name)
        if method is None:
            return BinRpcReply(encode_fault(500, f"command {name} not found", cookie))
        try:
            params = decode_records(packet.body[reader.pos :])
        except BinRpcError:
            # ctl reads params lazily, so a bad record is a failed rpc->scan.
            return BinRpcReply(
                encode_fault(method.bad_params.code, method.bad_params.message, cookie)
            )

        def on_value(value: object) -> BinRpcReply:
            try:
                return BinRpcReply(encode_reply(value, cookie))
            except (TypeError, ValueError):
                log.exception("binrpc: cannot encode the result of %s", name)
                return BinRpcReply(encode_fault(500, "Internal Server Error", cookie))

        return settle(
            lambda: method.invoke(params, Dialect.BINRPC),
            on_value,
            lambda fault: BinRpcReply(encode_fault(fault.code, fault.message, cookie)),
        )
