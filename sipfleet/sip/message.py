"""SIP messages (RFC 3261 sections 7, 20, 25), parsed lazily from bytes.

``parse`` splits the start line and the header lines and indexes header
names (compact forms folded to their long names, case-insensitive); a typed
view of a header (Via, CSeq, tags ...) is built only when asked for and then
cached. Header lines the proxy does not change are forwarded as the very
bytes that came in.
"""

from __future__ import annotations

import re
from typing import Final

from sipfleet.sip.address import parse_address, split_commas, tag_of
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.via import Via, parse_via, split_first

__all__ = [
    "COMPACT",
    "MAX_CSEQ",
    "Limits",
    "Message",
    "parse",
]

# RFC 3261 section 7.3.3 and the IANA registry of compact forms.
COMPACT: Final[dict[bytes, bytes]] = {
    b"a": b"accept-contact",
    b"b": b"referred-by",
    b"c": b"content-type",
    b"d": b"request-disposition",
    b"e": b"content-encoding",
    b"f": b"from",
    b"i": b"call-id",
    b"j": b"reject-contact",
    b"k": b"supported",
    b"l": b"content-length",
    b"m": b"contact",
    b"n": b"identity-info",
    b"o": b"event",
    b"r": b"refer-to",
    b"s": b"subject",
    b"t": b"to",
    b"u": b"allow-events",
    b"v": b"via",
    b"x": b"session-expires",
    b"y": b"identity",
}

MAX_CSEQ: Final = 2**31 - 1  # RFC 3261 8.1.1.5
_FOLD = re.compile(rb"[ \t]*\r\n[ \t]+")
_TOKEN = re.compile(rb"[A-Za-z0-9.!%*_+`'~-]+")
KNOWN_METHODS: Final = frozenset(
    [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    ]
)
_KNOWN_B: Final = frozenset(m.encode() for m in KNOWN_METHODS)
# int(bytes) goes through the buffer protocol: a lookup is several times cheaper
# for the small numbers that fill SIP headers (ports are in via.py).
_NUMBERS: Final = {b"%d" % i: i for i in range(10000)}
_STATUS: Final = {b"%d" % i: i for i in range(100, 700)}
_COMPACT_KEYS: Final = frozenset(COMPACT)
_NAMES: Final = re.compile(rb"\r\n([A-Za-z0-9.!%*_+`'~-]+)[ \t]*:")
_REQUIRED: Final = (b"to", b"from", b"call-id", b"cseq", b"via")
# The usual shapes of From/To, checked in one C call: ``"Name" <uri>;params``,
# ``token words <uri>;params`` or a bare addr-spec. Anything else takes the
# slow, exact path of parse_address.
_NAME_ADDR: Final = re.compile(
    rb"[ \t]*(?:(?:\"(?:[^\"\\\r\n]|\\.)*\"|[A-Za-z0-9.!%*_+`'~ -]*)[ \t]*<[^<>\s]+>"
    rb"|[^<>\s;,\"?]+)(?:[ \t]*;[^\r\n]*)?[ \t]*"
)
_SINGLE = (b"call-id", b"cseq", b"from", b"to", b"max-forwards", b"content-length")


class Limits:
    """Hard limits on what we accept; each bounds memory or CPU per message."""

    __slots__ = ("max_header_count", "max_line_length", "max_message_size")

    def __init__(
        self,
        max_message_size: int = 65536,
        max_header_count: int = 256,
        max_line_length: int = 8192,
    ) -> None:
        self.max_message_size = max_message_size
        self.max_header_count = max_header_count
        self.max_line_length = max_line_length


DEFAULT_LIMITS: Final = Limits()


class Message:
    """A request or a response: start line, raw header lines, body.

    ``names[i]`` is the lower-case long name of ``lines[i]``.
    """

    __slots__ = (
        "_call_id",
        "_cseq",
        "_from_tag",
        "_mf",
        "_to_tag",
        "_via",
        "body",
        "first",
        "is_request",
        "lines",
        "method",
        "names",
        "reason",
        "ruri",
        "start",
        "status",
    )

    def __init__(self, start: bytes, lines: list[bytes], names: list[bytes], body: bytes) -> None:
        self.start = start
        self.lines = lines
        self.names = names
        # name -> index of its first line, built in C; lookups then hash instead
        # of comparing every name.
        first = self.first = dict(zip(names, range(len(names)), strict=True))
        if len(first) != len(names):  # a repeated name: keep its first line
            for i in range(len(names) - 1, -1, -1):
                first[names[i]] = i
        self.body = body
        self.is_request = True
        self.method = ""
        self.ruri = ""
        self.status = 0
        self.reason = b""
        self._via: Via | None = None
        self._cseq: tuple[int, str] | None = None
        self._call_id: bytes | None = None
        self._from_tag: bytes | bool | None = False
        self._to_tag: bytes | bool | None = False
        self._mf: int | bool | None = False

    # -- raw header access -------------------------------------------------
    def has(self, name: bytes) -> bool:
        return name in self.first

    def pos(self, name: bytes) -> int:
        """Index of the first line of header ``name`` in ``lines``, -1 if absent."""
        return self.first.get(name, -1)

    @property
    def repeated(self) -> bool:
        """Some header name occurs on more than one line."""
        return len(self.first) != len(self.names)

    def positions(self, name: bytes) -> list[int]:
        if len(self.first) == len(self.names):
            i = self.first.get(name)
            return [] if i is None else [i]
        return [i for i, n in enumerate(self.names) if n == name]

    def get(self, name: bytes) -> bytes | None:
        """Value of the first line of header ``name`` (lower-case long form)."""
        i = self.first.get(name)
        if i is None:
            return None
        return self.lines[i].partition(b":")[2].strip()

    def get_lines(self, name: bytes) -> list[bytes]:
        """Values of every line of header ``name``, not comma-split."""
        lines = self.lines
        return [lines[i].partition(b":")[2].strip() for i in self.positions(name)]

    def values(self, name: bytes) -> list[bytes]:
        """Every value of a list header, comma-split across all its lines."""
        out: list[bytes] = []
        for v in self.get_lines(name):
            out.extend(split_commas(v))
        return out

    # -- typed views (parsed on first use) -----------------------------------
    @property
    def via(self) -> Via:
        """The topmost Via."""
        v = self._via
        if v is None:
            raw = self.get(b"via")
            if raw is None:
                raise BadMessage("Missing Via header")
            v = self._via = parse_via(split_first(raw)[0])
        return v

    def top_branch(self) -> str:
        """The branch of the topmost Via, cheaply (a response's top Via is ours;
        ``via`` does the full, validating parse)."""
        v = self._via
        if v is not None:
            return v.branch
        i = self.first.get(b"via")
        if i is None:
            raise BadMessage("Missing Via header")
        line = self.lines[i]
        i = line.find(b";branch=")
        if i < 0 or line[:i].find(b",") >= 0:
            return self.via.branch
        j = line.find(b";", i + 8)
        k = line.find(b",", i + 8)
        if k >= 0 and (j < 0 or k < j):
            j = k
        return (line[i + 8 : j] if j >= 0 else line[i + 8 :]).strip().decode("ascii", "replace")

    @property
    def call_id(self) -> bytes:
        c = self._call_id
        if c is None:
            c = self.get(b"call-id")
            if not c:
                raise BadMessage("Missing Call-ID header")
            self._call_id = c
        return c

    @property
    def cseq(self) -> tuple[int, str]:
        c = self._cseq
        if c is None:
            raw = self.get(b"cseq")
            if raw is None:
                raise BadMessage("Missing CSeq header")
            parts = raw.split()
            if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10:
                raise BadMessage("Malformed CSeq header")
            method = parts[1]
            if method not in _KNOWN_B and _TOKEN.fullmatch(method) is None:
                raise BadMessage("Malformed CSeq header")
            num = _NUMBERS.get(parts[0])
            if num is None:
                num = int(parts[0])
            if num > MAX_CSEQ:
                raise BadMessage("CSeq number too large")
            c = self._cseq = (num, method.decode("ascii"))
        return c

    @property
    def from_tag(self) -> bytes | None:
        t = self._from_tag
        if t is False:
            raw = self.get(b"from")
            t = self._from_tag = tag_of(raw) if raw is not None else None
        return t  # type: ignore[return-value]

    @property
    def to_tag(self) -> bytes | None:
        t = self._to_tag
        if t is False:
            raw = self.get(b"to")
            t = self._to_tag = tag_of(raw) if raw is not None else None
        return t  # type: ignore[return-value]

    @property
    def max_forwards(self) -> int | None:
        mf = self._mf
        if mf is False:
            raw = self.get(b"max-forwards")
            if raw is None:
                mf = None
            else:
                mf = _NUMBERS.get(raw)
                if mf is None:
                    if not raw.isdigit() or len(raw) > 9:
                        raise BadMessage("Bad Max-Forwards header")
                    mf = int(raw)
                if mf > 255:
                    raise BadMessage("Bad Max-Forwards header")
            self._mf = mf
        return mf

    @property
    def content_length(self) -> int | None:
        raw = self.get(b"content-length")
        if raw is None:
            return None
        if not raw.isdigit() or len(raw) > 9:
            raise BadMessage("Bad Content-Length header")
        n = _NUMBERS.get(raw)
        return n if n is not None else int(raw)

    # -- output --------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return b"\r\n".join((self.start, *self.lines, b"", self.body))

    def __repr__(self) -> str:
        if self.is_request:
            return f"<Message {self.method} {self.ruri}>"
        return f"<Message {self.status} {self.reason.decode('utf-8', 'replace')}>"


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS, datagram: bool = True) -> Message:
    """Parse one message; BadMessage when it breaks the grammar.

    ``datagram``: the bytes are a whole UDP datagram, so a body shorter than
    Content-Length is an error and octets beyond it are discarded (RFC 3261
    18.3); a stream framer hands over exactly one message.
    """
    if len(data) > limits.max_message_size:
        raise BadMessage("Message Too Large", status=513)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise BadMessage("Missing end of headers")
    head = data[:end]
    lines = head.split(b"\r\n")
    # All header names in one C-level pass; a line that is not "token: value"
    # (a folded continuation, or garbage) leaves the counts unequal.
    names = _NAMES.findall(head.lower())
    if len(names) != len(lines) - 1:
        if head.find(b"\r\n ") >= 0 or head.find(b"\r\n\t") >= 0:
            head = _FOLD.sub(b" ", head)  # RFC 3261 7.3.1: folding is equivalent to one SP
            lines = head.split(b"\r\n")
            names = _NAMES.findall(head.lower())
        if len(names) != len(lines) - 1:
            raise BadMessage("Malformed header line")
    start = lines[0]
    del lines[0]
    if len(lines) > limits.max_header_count:
        raise BadMessage("Too many header fields")
    if len(head) > limits.max_line_length:
        if len(start) > limits.max_line_length:
            if start.startswith(b"SIP/"):
                raise BadMessage("Status line too long")
            raise BadMessage("Request-URI Too Long", status=414)  # RFC 3261 21.4.12
        if max(map(len, lines)) > limits.max_line_length:  # lines: not empty, head is long
            raise BadMessage("Header line too long")
    if not _COMPACT_KEYS.isdisjoint(names):
        names = [COMPACT.get(n, n) for n in names]
    body = data[end + 4 :]
    msg = Message(start, lines, names, body)
    _parse_start(msg, start)
    if b"content-length" in msg.first:
        cl = msg.content_length
        assert cl is not None
        if cl > len(body):
            raise BadMessage("Content-Length larger than message")
        if cl < len(body):
            if not datagram:
                raise BadMessage("Content-Length smaller than message")
            msg.body = body[:cl]
    return msg


def _parse_start(msg: Message, start: bytes) -> None:
    if start.startswith(b"SIP/"):
        parts = start.split(b" ", 2)
        if len(parts) < 2:
            raise BadMessage("Malformed status line")
        version = parts[0]
        code = parts[1]
        if version != b"SIP/2.0":
            raise BadMessage("Version Not Supported", status=505)
        status = _STATUS.get(code)
        if status is None:
            raise BadMessage("Bad status code")
        msg.is_request = False
        msg.status = status
        msg.reason = parts[2] if len(parts) == 3 else b""
        return
    parts = start.split(b" ")
    if len(parts) == 3 and parts[2] == b"SIP/2.0" and parts[0] in _KNOWN_B and parts[1][:1] != b"<":
        msg.method = parts[0].decode()
        msg.ruri = parts[1].decode("utf-8", "surrogateescape")
        return
    if start.endswith((b" ", b"\t")):
        # RFC 4475 3.1.2.10: be liberal, and never forward the extra SP.
        start = msg.start = start.rstrip(b" \t")
    parts = start.split(b" ")
    if len(parts) != 3:
        raise BadMessage("Malformed Request-Line")
    method, ruri, version = parts
    if _TOKEN.fullmatch(method) is None:
        raise BadMessage("Malformed method")
    if version.upper() != b"SIP/2.0":
        if re.fullmatch(rb"SIP/[0-9]+\.[0-9]+", version, re.I):
            raise BadMessage("Version Not Supported", status=505)
        raise BadMessage("Malformed Request-Line")
    if not ruri or ruri[0] == 0x3C:
        raise BadMessage("Malformed Request-URI")
    msg.method = method.decode("ascii")
    msg.ruri = ruri.decode("utf-8", "surrogateescape")


def check_request(msg: Message) -> None:
    """Rules every request must meet before a proxy acts on it (RFC 3261 8.2, 16.3)."""
    names = msg.names
    first = msg.first
    if len(first) != len(names):
        for name in _SINGLE:
            if names.count(name) > 1:
                raise BadMessage(f"Multiple {name.decode().title()} headers")
    for name in _REQUIRED:
        if name not in first:
            raise BadMessage(f"Missing {name.decode().title()} header")
    if msg.cseq[1] != msg.method:
        if msg.method not in KNOWN_METHODS:
            raise BadMessage("Not Implemented", status=501)  # RFC 4475 3.1.2.18
        raise BadMessage("CSeq method does not match Request-Line")
    lines = msg.lines
    for name, what in ((b"from", "From"), (b"to", "To")):
        value = lines[first[name]].partition(b":")[2]
        if _NAME_ADDR.fullmatch(value) is None:
            parse_address(value, what)
    msg.via  # noqa: B018  (parse the top Via now: a bad one is the sender's 400)
    msg.max_forwards  # noqa: B018
