"""Property tests of the parser's pieces (hypothesis, derandomized: the same examples
on every run). Messages are built from the RFC 3261 grammar; hostile input is
arbitrary bytes and valid messages with random octets changed."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from sipfleet.sip.address import parse_address, split_commas, tag_of
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.framing import PING, StreamFramer
from sipfleet.sip.message import KNOWN_METHODS, check_request, parse
from sipfleet.sip.uri import parse_uri
from sipfleet.sip.via import parse_via, split_first

FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None)

# Plain alphabets, not from_regex: generation stays cheap (milliseconds per example).
TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
token = st.text(TOKEN_CHARS, min_size=1, max_size=12)
label = st.text(LABEL_CHARS, max_size=8).map(lambda s: "h" + s)
host = st.one_of(
    st.lists(label, min_size=1, max_size=3).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
port = st.integers(1, 65535)
user = st.text(LABEL_CHARS + "ABC_.+-", min_size=1, max_size=12)
# Header values: visible ASCII and spaces, no CR/LF, not starting with whitespace.
value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    lambda s: "v" + s
)
body = st.binary(max_size=200)


@st.composite
def sip_uri(draw: st.DrawFn) -> str:
    u = draw(st.one_of(st.none(), user))
    p = draw(st.one_of(st.none(), port))
    params = draw(st.lists(token, max_size=3))
    text = "sip:" + (f"{u}@" if u else "") + draw(host) + (f":{p}" if p else "")
    return text + "".join(f";{x}" for x in params)


@st.composite
def message(draw: st.DrawFn) -> bytes:
    """A request or response that check_request accepts (requests) and a proxy forwards."""
    is_request = draw(st.booleans())
    method = draw(st.sampled_from(sorted(KNOWN_METHODS)))
    if is_request:
        start = f"{method} {draw(sip_uri())} SIP/2.0"
    else:
        start = f"SIP/2.0 {draw(st.integers(100, 699))} {draw(value)}"
    via_host = draw(host)
    lines = [
        f"Via: SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {via_host}:{draw(port)}"
        f";branch=z9hG4bK{draw(token)}",
        f"From: <{draw(sip_uri())}>;tag={draw(token)}",
        f"To: <{draw(sip_uri())}>",
        f"Call-ID: {draw(token)}@{draw(host)}",
        f"CSeq: {draw(st.integers(0, 2**31 - 1))} {method}",
        f"Max-Forwards: {draw(st.integers(0, 255))}",
    ]
    extra = draw(st.lists(st.tuples(token, value), max_size=3))
    lines += [f"X-{n}: {v}" for n, v in extra]
    lines = draw(st.permutations(lines))
    payload = draw(body)
    head = "\r\n".join([start, *lines, f"Content-Length: {len(payload)}", "", ""])
    return head.encode() + payload


@FAST
@given(message())
def test_parse_to_bytes_round_trips(data: bytes) -> None:
    """A message the proxy does not touch is forwarded as the bytes that came in
    (RFC 3261 16.6: a proxy copies what it does not change)."""
    msg = parse(data)
    if msg.is_request:
        check_request(msg)
    assert msg.to_bytes() == data
    again = parse(msg.to_bytes())
    assert (again.start, again.lines, again.names, again.body) == (
        msg.start,
        msg.lines,
        msg.names,
        msg.body,
    )
    assert msg.top_branch() == msg.via.branch
    assert parse(data, datagram=False).body == msg.body


@st.composite
def stream(draw: st.DrawFn) -> tuple[list[bytes], int, bytes, list[int]]:
    """Messages with keep-alive pings between them, and where to cut the stream."""
    parts: list[bytes] = []
    messages: list[bytes] = []
    pings = 0
    for m in draw(st.lists(message(), min_size=1, max_size=3)):
        n = draw(st.integers(0, 2))
        parts += [PING] * n
        pings += n
        parts.append(m)
        messages.append(m)
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    return messages, pings, data, cuts


@FAST
@given(stream())
def test_framer_cuts_any_split_of_a_stream_identically(
    case: tuple[list[bytes], int, bytes, list[int]],
) -> None:
    """RFC 3261 18.3 / RFC 5626 3.5.1: however TCP segments the stream, the same
    messages and the same number of pings come out."""
    messages, pings, data, cuts = case
    framer = StreamFramer()
    out: list[bytes] = []
    seen = 0
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        got, n = framer.feed(data[a:b])
        out += got
        seen += n
    assert out == messages
    assert seen == pings
    assert framer.pending == 0


# Octets that mean something to the grammar, as a fuzzer's dictionary: random bytes
# alone rarely land a digit of another script ('²' is a digit to str.isdigit()).
DICTIONARY = [
    b":",
    b";",
    b",",
    b"=",
    b"@",
    b"<",
    b">",
    b"[",
    b"]",
    b'"',
    b"\\",
    b" ",
    b"\t",
    b"\r\n",
    b"\r\n ",
    b"\r\n\r\n",
    b"0",
    b"65536",
    b"99999999",
    b"1" * 12,
    b"\xc2\xb2",
    b"\xd9\xa3",
    b"\xff",
    b"rport=",
    b";rport=\xc2\xb2",
    b"branch=",
    b"tag=",
    b"[::1]",
    b"z9hG4bK",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with a few octets inserted, deleted or replaced."""
    data = bytearray(draw(message()))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        junk = draw(st.one_of(st.binary(min_size=1, max_size=4), st.sampled_from(DICTIONARY)))
        if op == "insert":
            data[i:i] = junk
        elif op == "delete":
            del data[i : i + len(junk)]
        else:
            data[i : i + len(junk)] = junk
    return bytes(data)


def _only_bad_message(fn: Callable[[], object]) -> None:
    try:
        fn()
    except BadMessage:
        pass


def _everything(data: bytes) -> None:
    msg = parse(data)
    if msg.is_request:
        check_request(msg)
    for view in (
        lambda: msg.via,
        lambda: msg.top_branch(),
        lambda: msg.cseq,
        lambda: msg.call_id,
        lambda: msg.from_tag,
        lambda: msg.to_tag,
        lambda: msg.max_forwards,
        lambda: msg.content_length,
        lambda: msg.values(b"route"),
        lambda: parse_uri(msg.ruri) if msg.is_request else None,
    ):
        _only_bad_message(view)
    msg.to_bytes()


@FAST
@given(st.one_of(mutated(), st.binary(max_size=300)))
def test_hostile_input_raises_only_bad_message(data: bytes) -> None:
    """Bad input gets a clear error (BadMessage: 400/413/414/505/513...), never another
    exception a peer could use to make us log tracebacks."""
    _only_bad_message(lambda: _everything(data))
    _only_bad_message(lambda: StreamFramer(max_size=256).feed(data))
    _only_bad_message(lambda: parse(data, datagram=False))


@FAST
@given(st.binary(max_size=80))
def test_header_value_parsers_raise_only_bad_message(value: bytes) -> None:
    """RFC 3261 25.1: any Via / address / URI text is parsed or refused with BadMessage."""
    _only_bad_message(lambda: parse_via(value))
    _only_bad_message(lambda: parse_via(split_first(value)[0]))
    _only_bad_message(lambda: parse_address(value))
    split_commas(value)
    tag_of(value)
    _only_bad_message(lambda: parse_uri(value.decode("utf-8", "surrogateescape")))


@FAST
@given(st.text(max_size=60))
def test_uri_parser_on_any_text_raises_only_bad_message(text: str) -> None:
    """RFC 3261 19.1: the Request-URI arrives as any UTF-8 text."""
    _only_bad_message(lambda: parse_uri("sip:" + text))
    _only_bad_message(lambda: parse_uri(text))


@FAST
@given(sip_uri())
def test_generated_uris_parse(text: str) -> None:
    """RFC 3261 19.1.1: every URI of the grammar parses, host lower-case and bare."""
    u = parse_uri(text)
    assert u.scheme == "sip" and str(u) == text
    assert not u.host.startswith("[") and u.host == u.host.lower()


digits = st.text(st.characters(categories=["Nd"]), min_size=1, max_size=6)


@FAST
@given(host, digits)
def test_a_uri_port_is_ascii_digits_in_range(h: str, text: str) -> None:
    """RFC 3261 25.1: port = 1*DIGIT (ASCII); any other digits are a 400, not a crash."""
    ok = text.isascii() and 0 < int(text) < 65536
    try:
        u = parse_uri(f"sip:{h}:{text}")
    except BadMessage:
        assert not ok
    else:
        assert ok and u.port == int(text)


@FAST
@given(digits)
def test_a_via_rport_is_a_port_or_the_flag(text: str) -> None:
    """RFC 3581 4: rport carries a port (1-65535) or nothing; anything else is the flag."""
    for sep in (b";", b" ;"):  # the fast path and the full grammar
        v = parse_via(b"SIP/2.0/UDP h" + sep + b"rport=" + text.encode())
        if text.isascii() and 0 < int(text) < 65536:
            assert v.rport == int(text)
        else:
            assert v.rport is True


@st.composite
def from_value(draw: st.DrawFn) -> bytes:
    """A From/To value: optional display name, URI (with or without <>), parameters."""
    uri = draw(sip_uri())
    # One of each name, case-insensitively: a parameter appears once (RFC 3261 25.1).
    params = draw(
        st.lists(
            st.tuples(st.sampled_from(["tag", "TAG", "x", "expires"]), token),
            max_size=3,
            unique_by=lambda p: p[0].lower(),
        )
    )
    tail = "".join(f";{n}={v}" for n, v in params)
    if draw(st.booleans()):
        display = draw(st.sampled_from(["", '"Bob" ', "Bob ", '"A;tag=no" ']))
        return f"{display}<{uri}>{tail}".encode()
    if ";" in uri:  # addr-spec: URI parameters would be read as header parameters
        uri = uri.partition(";")[0]
    return f"{uri}{tail}".encode()


@FAST
@given(from_value())
def test_tag_shortcut_agrees_with_the_full_parse(value: bytes) -> None:
    """RFC 3261 19.3: the From/To tag; the proxy's shortcut (tag_of) and the full
    name-addr parse find the same one."""
    assert tag_of(value) == parse_address(value).tag
