"""JSON-RPC as Kamailio 5.6.3's jsonrpcs answers it, and its text layout byte for byte.

The expectations were measured against the real Kamailio (see
tests/e2e/test_rpc_kamailio_compare.py for the live comparison and
vectors/INDEX.md for the captured bodies).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from sipfleet.control.jsonrpc import (
    DocumentTooLarge,
    JsonRpcHandler,
    JsonRpcReply,
    JsonStreamReader,
    valid_reply_name,
)
from sipfleet.control.kjson import (
    MAX_DEPTH,
    dumps_compact,
    dumps_pretty,
    loads_lenient,
    nesting_depth,
)
from sipfleet.control.registry import Param, Registry, RpcFault

VECTORS = Path(__file__).parent / "vectors"


def build() -> Registry:
    r = Registry()
    r.add("core.version", lambda: "sipfleet 0.1.0 (x86_64/linux)", doc="Version.")
    r.add("test.nothing", lambda: None, doc="Adds nothing.")
    r.add(
        "dispatcher.set_state",
        lambda state, group, address: f"{state}/{group}/{address}",
        doc="Set state.",
        params=[Param("state", autoconvert=True), Param("group", "int"), Param("address")],
    )

    def refuse() -> None:
        raise RpcFault(500, "Ongoing reload")

    r.add("dispatcher.reload", refuse, doc="Reload.")
    r.add("test.code", lambda: (_ for _ in ()).throw(RpcFault(-32000, "odd")), doc="Odd code.")
    return r


HANDLER = JsonRpcHandler(build())


def answer(request: object, **kw: object) -> JsonRpcReply:
    data = request if isinstance(request, bytes) else orjson.dumps(request)
    reply = HANDLER.handle(data, **kw)  # type: ignore[arg-type]
    assert isinstance(reply, JsonRpcReply)
    return reply


def doc(request: object) -> tuple[int, str, object]:
    reply = answer(request)
    return reply.status, reply.reason, orjson.loads(reply.body)


R = {"jsonrpc": "2.0"}

# (request, HTTP status, reason, reply document) -- as Kamailio 5.6.3 answered.
CASES = [
    (
        {**R, "method": "core.version", "id": 1},
        200,
        "OK",
        {**R, "result": "sipfleet 0.1.0 (x86_64/linux)", "id": 1},
    ),
    (
        {**R, "method": "no.such", "id": 1},
        500,
        "Method Not Found",
        {**R, "error": {"code": 500, "message": "Method Not Found"}, "id": 1},
    ),
    # No id: answered anyway, without one.
    ({**R, "method": "core.version"}, 200, "OK", {**R, "result": "sipfleet 0.1.0 (x86_64/linux)"}),
    # id echo: strings and numbers as given; true -> 1; null/objects -> 0.
    ({**R, "method": "test.nothing", "id": "abc"}, 200, "OK", {**R, "result": {}, "id": "abc"}),
    ({**R, "method": "test.nothing", "id": None}, 200, "OK", {**R, "result": {}, "id": 0}),
    ({**R, "method": "test.nothing", "id": True}, 200, "OK", {**R, "result": {}, "id": 1}),
    ({**R, "method": "test.nothing", "id": {"a": 1}}, 200, "OK", {**R, "result": {}, "id": 0}),
    (
        {**R, "method": "test.nothing", "id": 12345678901},
        200,
        "OK",
        {**R, "result": {}, "id": 12345678901},
    ),
    ({**R, "method": "test.nothing", "id": 2.0}, 200, "OK", {**R, "result": {}, "id": 2}),
    # Not a usable request: the method is not run, the result is {}.
    ({"method": "dispatcher.reload", "id": 1}, 200, "OK", {**R, "result": {}, "id": 1}),
    (
        {"jsonrpc": "1.0", "method": "dispatcher.reload", "id": 1},
        200,
        "OK",
        {**R, "result": {}, "id": 1},
    ),
    (
        {"jsonrpc": 2.0, "method": "dispatcher.reload", "id": 1},
        200,
        "OK",
        {**R, "result": {}, "id": 1},
    ),
    ({**R, "method": 5, "id": 1}, 200, "OK", {**R, "result": {}, "id": 1}),
    ({**R, "id": 1}, 200, "OK", {**R, "result": {}, "id": 1}),
    (
        {**R, "method": "dispatcher.reload", "params": "x", "id": 1},
        200,
        "OK",
        {**R, "result": {}, "id": 1},
    ),
    (
        {**R, "method": "dispatcher.reload", "params": None, "id": 1},
        200,
        "OK",
        {**R, "result": {}, "id": 1},
    ),
    # A batch is not supported: an array has no members, so no id either.
    ([{**R, "method": "core.version", "id": 1}], 200, "OK", {**R, "result": {}}),
    ("str", 200, "OK", {**R, "result": {}}),
    # Faults carry the handler's code; the HTTP status is the code.
    (
        {**R, "method": "dispatcher.reload", "id": 1},
        500,
        "Ongoing reload",
        {**R, "error": {"code": 500, "message": "Ongoing reload"}, "id": 1},
    ),
    (
        {**R, "method": "test.code", "id": 1},
        500,
        "odd",
        {**R, "error": {"code": -32000, "message": "odd"}, "id": 1},
    ),
    # Params: positional; object values in order, keys ignored; extras ignored.
    (
        {
            **R,
            "method": "dispatcher.set_state",
            "params": {"z": "ap", "y": 1, "x": "sip:a"},
            "id": 1,
        },
        200,
        "OK",
        {**R, "result": "ap/1/sip:a", "id": 1},
    ),
    (
        {**R, "method": "dispatcher.set_state", "params": ["ap", 1, "sip:a", "extra"], "id": 1},
        200,
        "OK",
        {**R, "result": "ap/1/sip:a", "id": 1},
    ),
    # Wrong types, as jsonrpcs reads them: "1" for an int is 0; 1 for an autoconvert str is "1".
    (
        {**R, "method": "dispatcher.set_state", "params": ["ip", "1", "sip:a"], "id": 1},
        200,
        "OK",
        {**R, "result": "ip/0/sip:a", "id": 1},
    ),
    (
        {**R, "method": "dispatcher.set_state", "params": [1, 1.7, "sip:a"], "id": 1},
        200,
        "OK",
        {**R, "result": "1/1/sip:a", "id": 1},
    ),
    (
        {**R, "method": "dispatcher.set_state", "params": ["ip", 1], "id": 1},
        500,
        "Invalid Parameters",
        {**R, "error": {"code": 500, "message": "Invalid Parameters"}, "id": 1},
    ),
    (
        {**R, "method": "dispatcher.set_state", "params": ["ip", 1, 5], "id": 1},
        500,
        "Invalid Parameters",
        {**R, "error": {"code": 500, "message": "Invalid Parameters"}, "id": 1},
    ),
]


@pytest.mark.parametrize(("request_", "status", "reason", "expected"), CASES)
def test_answers_as_kamailio(request_, status, reason, expected):
    assert doc(request_) == (status, reason, expected)


def test_trailing_bytes_after_the_document_are_ignored():
    assert doc(b'{"jsonrpc":"2.0","method":"core.version","id":1} trailing')[2] == {
        **R,
        "result": "sipfleet 0.1.0 (x86_64/linux)",
        "id": 1,
    }


def test_unparseable_json_is_a_parse_error_for_http_and_nothing_for_the_fifo():
    reply = answer(b"not json")
    assert (reply.status, reply.reason, reply.parsed) == (400, "Parse Error", False)
    assert orjson.loads(reply.body) == {**R, "error": {"code": 400, "message": "Parse Error"}}
    assert HANDLER.handle(b"not json", fifo=True) is None


@pytest.mark.parametrize(
    ("request_", "runs"),
    [
        ({**R, "method": "core.version", "reply_name": "kamailio_receiver_42", "id": 1}, True),
        ({**R, "method": "core.version", "id": 1}, False),
        ({**R, "method": "core.version", "reply_name": "../etc/x", "id": 1}, False),
        ({**R, "method": "core.version", "reply_name": 5, "id": 1}, False),
    ],
)
def test_fifo_requests_must_name_a_safe_reply_pipe(request_, runs):
    reply = HANDLER.handle(orjson.dumps(request_), fifo=True)
    if runs:
        assert isinstance(reply, JsonRpcReply) and reply.reply_name == "kamailio_receiver_42"
    else:
        assert reply is None


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("kamailio_receiver_1", True),
        ("a.b", False),
        ("a/b", False),
        ("a\\b", False),
        ("", False),
        ("x" * 128, False),
    ],
)
def test_reply_names(name, ok):
    assert valid_reply_name(name) is ok


def test_fault_reply_keeps_the_request_id():
    reply = HANDLER.fault_reply(b'{"jsonrpc":"2.0","method":"x","id":9}', RpcFault(500, "Too Big"))
    assert orjson.loads(reply.body) == {**R, "error": {"code": 500, "message": "Too Big"}, "id": 9}
    assert orjson.loads(HANDLER.fault_reply(b"junk", RpcFault(500, "x")).body) == {
        **R,
        "error": {"code": 500, "message": "x"},
    }


def test_async_handlers_settle_when_awaited():
    r = Registry()

    async def wait(n: int) -> dict[str, int]:
        await asyncio.sleep(0)  # sleep-ok: one loop turn (no time passes)
        if n < 0:
            raise RpcFault(400, "Negative")
        return {"waited": n}

    r.add("x.wait", wait, doc="Waits.", params=[Param("n", "int")])
    handler = JsonRpcHandler(r, pretty=False)

    async def run(n: int) -> bytes:
        pending = handler.handle(orjson.dumps({**R, "method": "x.wait", "params": [n], "id": 3}))
        assert asyncio.iscoroutine(pending)
        reply = await pending
        return reply.body

    assert orjson.loads(asyncio.run(run(2))) == {**R, "result": {"waited": 2}, "id": 3}
    assert (
        asyncio.run(run(-1))
        == b'{"jsonrpc":"2.0","error":{"code":400,"message":"Negative"},"id":3}'
    )


# -- the text layout: byte for byte what Kamailio wrote --------------------


@pytest.mark.parametrize("name", sorted(p.name for p in VECTORS.glob("jsonrpc-*.json")))
def test_pretty_layout_matches_kamailio_byte_for_byte(name):
    captured = (VECTORS / name).read_bytes()
    assert dumps_pretty(orjson.loads(captured)) == captured


def test_handler_reproduces_kamailio_bodies():
    assert (
        answer({**R, "method": "no.such", "id": 1}).body
        == (VECTORS / "jsonrpc-method-not-found.json").read_bytes()
    )
    assert (
        answer({"method": "test.nothing", "id": "abc"}).body
        == (VECTORS / "jsonrpc-no-version.json").read_bytes()
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({}, "{\n}"),
        ([], "[]"),
        ({"a": {}}, '{\n\t"a":\t{\n\t}\n}'),
        ({"a": []}, '{\n\t"a":\t[]\n}'),
        ([1, "x", None, True, False], '[1, "x", null, true, false]'),
        ({"a": [{"b": 1}]}, '{\n\t"a":\t[{\n\t\t\t"b":\t1\n\t\t}]\n}'),
        (1.5, "1.500000"),
        (2.0, "2"),
        (1e-7, "1.000000e-07"),
        (3e12, "3000000000000"),
        (12.5e12, "12500000000000"),
        (float("nan"), "null"),
        (2**70, str(2**70)),
        ("é\x7f\x1f", '"é\x7f\\u001f"'),
    ],
)
def test_pretty_printer_rules(value, text):
    assert dumps_pretty(value) == text.encode()


def test_compact_printer_and_its_fallbacks():
    assert dumps_compact({"a": [1, None], 2: b"x"}) == b'{"a":[1,null],"2":"x"}'
    assert orjson.loads(dumps_compact({"big": 2**70, "s": "t\tab"})) == {"big": 2**70, "s": "t\tab"}


def test_lenient_loader():
    assert loads_lenient(b' {"a": 1} \n') == {"a": 1}
    assert loads_lenient(b'{"a": 1}{"b": 2}') == {"a": 1}
    with pytest.raises(ValueError):
        loads_lenient(b"garbage")


def test_lenient_loader_keeps_raw_control_characters_in_strings():
    # kamcli's tm.t_uac_wait_block puts raw CR LF between headers, as srjson accepts.
    raw = b'{"params": ["a\r\nb", "c\td\x01e", "\\\\"], "k\n": 1}'
    assert loads_lenient(raw) == {"params": ["a\r\nb", "c\td\x01e", "\\"], "k\n": 1}


@pytest.mark.parametrize(
    ("data", "depth"),
    [
        (b"1", 0),
        (b"[[1], {}]", 2),
        (b'{"a": "[[[{{{"}', 1),
        (b'["\\"[[", 1]', 1),  # an escaped quote does not end the string
        (b'["\\\\", [[]]]', 3),  # an escaped backslash does
        (b'[["a[[[[', 2),  # an unclosed string holds no structure
        (b"[" * 100_000, 100_000),
    ],
)
def test_nesting_depth(data, depth):
    assert nesting_depth(data) == depth


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"jsonrpc":"2.0","method":"core.version","params":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"{" * 3000,
        b'{"a":' * 200 + b"1" + b"}" * 200 + b"\x01",  # deep and not strict JSON either
    ],
)
def test_too_deep_is_a_value_error(data):
    with pytest.raises(ValueError):
        loads_lenient(data)
    assert nesting_depth(data) > MAX_DEPTH


def test_deep_json_is_a_counted_parse_error():
    handler = JsonRpcHandler(build())
    reply = handler.handle(b"[" * 100_000)
    assert isinstance(reply, JsonRpcReply)
    assert (reply.status, reply.reason, reply.parsed) == (400, "Parse Error", False)
    assert handler.handle(b"[" * 100_000, fifo=True) is None
    assert handler.parse_errors == 2
    ok = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert loads_lenient(ok) is not None


def test_raw_crlf_in_params_is_answered():
    reply = answer(
        b'{"jsonrpc":"2.0","method":"dispatcher.set_state","params":["a\r\n",1,"x\ty"],"id":1}'
    )
    assert orjson.loads(reply.body)["result"] == "a\r\n/1/x\ty"


def test_parse_errors_are_logged_rate_limited(caplog):
    clock = [0.0]
    handler = JsonRpcHandler(build(), clock=lambda: clock[0])
    with caplog.at_level("INFO", logger="sipfleet.control.jsonrpc"):
        for i in range(5000):
            clock[0] = i * 0.001  # 5,000 bad requests in 5 s
            handler.handle(b"{bad")
    lines = [r.getMessage() for r in caplog.records]
    assert handler.parse_errors == 5000
    assert 10 <= len(lines) <= 10 + 5 * 10 * 2
    assert any("suppressed" in line for line in lines)


# -- stream framing, as the jsonrpcs FIFO reads ------------------------------


def test_stream_reader_cuts_documents_at_their_closing_brace():
    docs = [b'{"a": "}{", "b": {"c": "\\"}"}}', b'\n{"x": [1, {"y": 2}]}', b"  {}"]
    stream = b"".join(docs) + b"\n{"
    # Any split of the stream gives the same documents.
    for step in (1, 2, 3, 7, len(stream)):
        reader = JsonStreamReader()
        got: list[bytes] = []
        for i in range(0, len(stream), step):
            got += reader.feed(stream[i : i + step])
        assert got == docs
        assert reader.buffered == 2  # "\n{" waits for more


def test_stream_reader_escapes_across_reads():
    reader = JsonStreamReader()
    assert reader.feed(b'{"a": "x\\') == []
    assert reader.feed(b'"}') == []  # the quote was escaped: still inside the string
    assert reader.feed(b'"}') == [b'{"a": "x\\"}"}']


def test_stream_reader_is_bounded_and_recovers():
    reader = JsonStreamReader(max_size=64)
    with pytest.raises(DocumentTooLarge):
        reader.feed(b'{"a": "' + b"x" * 100)
    assert reader.buffered == 0
    assert reader.feed(b'{"ok": 1}') == [b'{"ok": 1}']
    # A stray closing brace before any document is not a document.
    assert reader.feed(b'} {"n": 2}') == [b'} {"n": 2}']
