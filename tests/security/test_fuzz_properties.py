"""Property tests (hypothesis) over the parser, the stream framer, the
transaction machines and the whole core: whatever bytes or event order a
peer produces, the answer is a clean BadMessage or a message, never a
traceback, and every transaction ends with its timers (issue 11).

Derandomized, so the normal suite stays deterministic; bench/fuzz_atheris.py
is the coverage-guided run.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import RoundRobinRouter
from sipfleet.security.gate import Gate
from sipfleet.security.settings import SecuritySettings
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.framing import StreamFramer
from sipfleet.sip.message import Message, parse
from sipfleet.testing import UA, RecordingSink
from sipfleet.transaction.client import ClientTransaction
from sipfleet.transaction.server import ServerState, ServerTransaction, TimerConfig
from sipfleet.transaction.timers import Timers

PROPS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc4475"
SEEDS = [p.read_bytes() for p in sorted(VECTORS.glob("*.dat"))]
UAC = UA("127.0.0.1", 5080)
SEEDS.append(UAC.invite("sip:100@127.0.0.1", extra=["User-Agent: x", "Route: <sip:127.0.0.1;lr>"]))
SEEDS.append(UAC.request("MESSAGE", "sip:100@127.0.0.1", body="hi"))
SEEDS.append(UA("127.0.0.1", 5070).respond(parse(SEEDS[-2]), 200))

_TOKENS = [b"\r\n", b"\r\n\r\n", b":", b";", b",", b"<", b">", b"@", b'"', b"\\", b" ", b"\t",
           b"\x00", b"\xff", b"SIP/2.0", b"Via", b"v", b"To", b"f", b"CSeq", b"Content-Length",
           b"l: 99999999999999999999", b";branch=z9hG4bK", b";tag=", b";rport", b"[::1]",
           b"sip:", b"sips:", b"INVITE", b"ACK", b"CANCEL", b"Route", b"Max-Forwards: 0"]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed message with a few splices, deletions, duplications and cuts."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.integers(0, 4))
        i = draw(st.integers(0, len(data)))
        if op == 0:
            data[i:i] = draw(st.sampled_from(_TOKENS))
        elif op == 1:
            del data[i : i + draw(st.integers(1, 16))]
        elif op == 2:
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == 3:
            j = draw(st.integers(0, len(data)))
            data[i:i] = data[min(i, j) : max(i, j)][:200]
        else:
            data = data[:i]
    return bytes(data)


messages = st.one_of(mutated(), st.binary(max_size=300))


def _touch(msg: Message) -> None:
    """Every lazy view the core reads: a value or a BadMessage."""
    for view in ("via", "call_id", "cseq", "from_tag", "to_tag", "max_forwards", "content_length"):
        try:
            getattr(msg, view)
        except BadMessage:
            pass
    try:
        msg.top_branch()
    except BadMessage:
        pass


@PROPS
@given(messages)
def test_parser_answers_a_message_or_bad_message(data: bytes) -> None:
    try:
        msg = parse(data)
    except BadMessage as e:
        assert 400 <= e.status < 600
        return
    _touch(msg)


@PROPS
@given(
    st.lists(st.sampled_from(SEEDS[-3:]), min_size=1, max_size=4),
    st.lists(st.integers(1, 97), max_size=10),
)
def test_framer_splits_any_chunking_the_same(msgs: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(msgs)
    framer = StreamFramer()
    out: list[bytes] = []
    pos = 0
    for c in cuts:
        got, _ = framer.feed(stream[pos : pos + c])
        out += got
        pos += c
    got, _ = framer.feed(stream[pos:])
    out += got
    assert out == msgs


@PROPS
@given(st.binary(max_size=400), st.integers(1, 64))
def test_framer_garbage_is_bad_message_or_waits(data: bytes, chunk: int) -> None:
    framer = StreamFramer(max_size=1024)
    try:
        for i in range(0, len(data), chunk):
            framer.feed(data[i : i + chunk])
    except BadMessage:
        pass


def _proxy(gate: bool) -> tuple[Proxy, RecordingSink]:
    sink = RecordingSink()
    proxy = Proxy(
        [Listener(0, "udp", "127.0.0.1", 5060), Listener(1, "tcp", "127.0.0.1", 5060)],
        sink,
        RoundRobinRouter(["sip:127.0.0.1:5070"]),
        ProxySettings(),
    )
    if gate:
        proxy.gate = Gate(SecuritySettings(pike_density=10**6))
        proxy.gate.set_backends(["127.0.0.1"])
    return proxy, sink


@PROPS
@given(
    st.lists(
        st.tuples(messages, st.sampled_from([0, 1]), st.sampled_from(["127.0.0.1", "127.0.0.2"])),
        max_size=8,
    ),
    st.booleans(),
)
def test_core_never_raises_and_cleans_up(inputs: list[tuple[bytes, int, str]], gate: bool) -> None:
    proxy, sink = _proxy(gate)
    now = 1000.0
    for data, listener, host in inputs:
        proxy.receive(data, Peer(listener, host, 5080), now)
        for _peer, out in sink.sent:
            parse(out, datagram=True)  # what we send parses
        sink.sent.clear()
        now += 0.1
    for _ in range(80):
        now += 2.0
        proxy.handle_timer(now)
    assert not proxy.server_txns and not proxy.client_txns
    assert proxy.stats.internal_errors == 0


class _Sink:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, peer: Peer, data: bytes) -> None:
        self.sent += 1


_SERVER_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("req"), st.just(0)),
        st.tuples(st.just("ack"), st.just(0)),
        st.tuples(st.just("respond"), st.sampled_from([100, 180, 200, 202, 404, 486, 503, 699])),
        st.tuples(st.just("wait"), st.integers(1, 40)),
    ),
    max_size=20,
)


@PROPS
@given(_SERVER_EVENTS, st.booleans(), st.booleans(), st.booleans())
def test_server_transaction_any_order(events, invite: bool, reliable: bool, quiet: bool) -> None:
    timers = Timers()
    ended: list[bool] = []
    txn = ServerTransaction(
        "k", invite, reliable, _Sink(), Peer(0, "h", 1), timers, TimerConfig(),
        lambda t, timed_out: ended.append(timed_out),
    )  # fmt: skip
    txn.quiet = quiet
    now = 0.0
    for kind, arg in events:
        if kind == "req":
            txn.on_request(now)
        elif kind == "ack":
            txn.on_ack(now)
        elif kind == "respond":
            txn.respond(arg, b"SIP/2.0 %d X\r\n\r\n" % arg, now)
        else:
            now += arg * 0.25
            timers.run(now)
    assert len(ended) <= 1
    final = txn.status >= 200
    now += 100.0
    timers.run(now)
    assert len(ended) == (1 if final else 0)
    assert (txn.state is ServerState.TERMINATED) == final
    if not final:
        assert len(timers) == 0


_CLIENT_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("resp"), st.sampled_from([100, 180, 183, 200, 202, 302, 404, 486, 503])),
        st.tuples(st.just("transport"), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 80)),
        st.tuples(st.just("cancel"), st.just(0)),
    ),
    max_size=20,
)


@PROPS
@given(_CLIENT_EVENTS, st.booleans(), st.booleans())
def test_client_transaction_any_order(events, invite: bool, reliable: bool) -> None:
    timers = Timers()
    finals: list[int] = []
    failures: list[int] = []
    ended: list[int] = []
    request = UAC.invite("sip:1@h") if invite else UAC.request("MESSAGE", "sip:1@h")
    responder = UA("h", 1)
    txn = ClientTransaction(
        ("b", "INVITE" if invite else "MESSAGE"), "b", invite, reliable, request, _Sink(),
        Peer(0, "h", 1), timers, TimerConfig(),
        lambda t, m, now: finals.append(m.status) if m.status >= 200 else None,
        lambda t, code, now: failures.append(code),
        lambda t: ended.append(1),
        (lambda m: b"ACK") if invite else None,
    )  # fmt: skip
    now = 0.0
    txn.start(now)
    req = parse(request)
    for kind, arg in events:
        if kind == "resp":
            txn.receive(parse(responder.respond(req, arg)), now)
        elif kind == "transport":
            txn.transport_error(now)
        elif kind == "cancel":
            txn.cancelled(now)
        else:
            now += arg * 0.25
            timers.run(now)
    txn.cancelled(now)  # the TU's Timer C: a CANCEL ends even a ringing INVITE
    now += 200.0
    timers.run(now)
    assert ended == [1]  # every client transaction ends, once
    assert len(failures) <= 1
    assert not (failures and finals and finals[0] < 300 and not invite)
    assert len(timers) == 0
