"""BINRPC: records, packets, stream framing, and the ctl request semantics.

Captured Kamailio 5.6.3 packets (vectors/INDEX.md) pin the encoding byte
for byte, including how JSON results map onto structs (dispatcher.list).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from sipfleet.control.binrpc import (
    NULL_STRING,
    BinRpcError,
    BinRpcHandler,
    BinRpcReply,
    Packet,
    PacketReader,
    PacketType,
    decode_fault,
    decode_records,
    encode_body,
    encode_fault,
    encode_packet,
    encode_reply,
    encode_request,
)
from sipfleet.control.registry import Param, Registry, RpcFault

VECTORS = Path(__file__).parent / "vectors"


def one_packet(data: bytes) -> Packet:
    packets = PacketReader(max_body=1 << 30).feed(data)
    assert len(packets) == 1
    return packets[0]


# -- records ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (7, b"\x10\x07"),
        (0x1234, b"\x20\x12\x34"),
        (255, b"\x10\xff"),
        (256, b"\x20\x01\x00"),
        (2**31 - 1, b"\x40\x7f\xff\xff\xff"),
        (-1, b"\x40\xff\xff\xff\xff"),  # negative ints take all 4 bytes
        (-5, b"\x40\xff\xff\xff\xfb"),
        (-(2**31), b"\x40\x80\x00\x00\x00"),
        ("", b"\x11\x00"),
        ("abcdef", b"\x71abcdef\x00"),
        ("abcdefg", b"\x91\x08abcdefg\x00"),  # 8 bytes with the NUL: external length
        ("x" * 300, b"\xa1\x01\x2d" + b"x" * 300 + b"\x00"),
        (b"raw", b"\x36raw"),
        (2.5, b"\x22\x09\xc4"),  # doubles are value*1000 in an int
        (-0.001, b"\x42\xff\xff\xff\xff"),
        (True, b"\x10\x01"),
        (None, b"\x91\x0e<null string>\x00"),
        ({}, b"\x03\x83"),
        ({"intval": 3, "s": "abc"}, b"\x03\x75intval\x00\x10\x03\x25s\x00\x41abc\x00\x83"),
    ],
)
def test_record_encoding(value, encoded):
    assert encode_body([value]) == encoded


@pytest.mark.parametrize(
    "value",
    [
        0,
        1,
        -1,
        -5,
        2**31 - 1,
        -(2**31),
        255,
        65536,
        "",
        "é ü",
        "x" * 70000,
        b"\x00\x01",
        2.5,
        -1234.567,
        {"a": {"b": {"c": [1, 2]}}},
        {"neg": -7, "nested": {"deep": {"deeper": {"s": "v"}}}},
    ],
)
def test_records_round_trip(value):
    decoded = decode_records(encode_body(value))
    assert decoded == [value]


def test_lists_at_top_level_are_a_record_each():
    # As system.listMethods: one string record per name, not an array.
    body = encode_body(["a.b", "c.d"])
    assert body == b"\x41a.b\x00\x41c.d\x00"
    assert decode_records(body) == ["a.b", "c.d"]
    assert encode_body(None) == b"" and encode_body([]) == b""


def test_nested_lists_become_arrays_outside_structs_and_structs_inside():
    assert encode_body([[1, 2]]) == b"\x04\x10\x01\x10\x02\x84"
    # Inside a struct a list is written as a struct (kamcmd reads no arrays
    # there); one-key dicts become members, as dispatcher.list's RECORDS.
    inner = encode_body({"R": [{"SET": 1}, {"SET": 2}]})
    assert inner == b"\x03\x25R\x00\x03\x45SET\x00\x10\x01\x45SET\x00\x10\x02\x83\x83"
    assert decode_records(inner) == [{"R": [{"SET": 1}, {"SET": 2}]}]
    assert decode_records(encode_body({"c": [1, 2]})) == [{"c": [1, 2]}]


def test_values_beyond_the_wire_ranges_travel_as_strings():
    assert decode_records(encode_body([2**40, -(2**33), 1e12, float("inf")])) == [
        str(2**40),
        str(-(2**33)),
        "1000000000000.0",
        "inf",
    ]
    # Unsigned 32-bit values keep their bit pattern, as Kamailio's %u fields.
    assert decode_records(encode_body(3_000_000_000)) == [3_000_000_000 - 2**32]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\x71abc", "end of packet encountered"),  # truncated string
        (b"\x03\x25a\x00", "end of packet encountered"),  # unterminated struct
        (b"\x25a\x00\x10\x01", "record doesn't match type"),  # a member outside a struct
        (b"\x83", "bad record"),  # an end tag with nothing open
        (b"\x03\x84", "bad record"),  # struct closed as an array
        (b"\x07", "record doesn't match type"),  # unknown type
        (b"\x03" * 100, "bad record"),  # nesting beyond the bound
    ],
)
def test_decoding_errors(body, error):
    with pytest.raises(BinRpcError, match=error):
        decode_records(body)


# -- packets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body_len", "cookie", "header"),
    [
        (0, 0, b"\xa1\x10\x00\x00"),
        (33, 7, b"\xa1\x10\x21\x07"),
        (399, 7, b"\xa1\x14\x01\x8f\x07"),
        (70000, 0x1234, b"\xa1\x19\x01\x11\x70\x12\x34"),
        (5, 0xDEADBEEF, b"\xa1\x13\x05\xde\xad\xbe\xef"),
    ],
)
def test_headers_use_minimal_sizes(body_len, cookie, header):
    packet = encode_packet(PacketType.REPLY, cookie, b"\x00" * body_len)
    assert packet[: len(header)] == header
    assert one_packet(packet) == Packet(PacketType.REPLY, cookie, b"\x00" * body_len)


def test_framing_survives_partial_reads_and_batches():
    packets = [
        encode_request("core.version", [], 1),
        encode_request("dispatcher.set_state", ["ip", 1, "sip:10.0.0.1"], 2),
        encode_reply({"x": "y" * 300}, 3),
    ]
    stream = b"".join(packets)
    for step in (1, 2, 5, len(stream)):
        reader = PacketReader()
        got: list[Packet] = []
        for i in range(0, len(stream), step):
            got += reader.feed(stream[i : i + step])
        assert [p.cookie for p in got] == [1, 2, 3]
        assert reader.buffered == 0
    assert decode_records(got[1].body) == ["dispatcher.set_state", "ip", 1, "sip:10.0.0.1"]


def test_big_replies_of_several_megabytes():
    value = {
        "RECORDS": [
            {"SET": {"ID": i, "URI": f"sip:10.0.{i // 256}.{i % 256}:5060"}} for i in range(60_000)
        ]
    }
    packet = encode_reply(value, 0x51F)
    assert len(packet) > 2_500_000
    assert packet[1] == 0x19  # a reply, 3 bytes of length, 2 of cookie
    reader = PacketReader(max_body=8 << 20)
    got: list[Packet] = []
    for i in range(0, len(packet), 65536):
        got += reader.feed(packet[i : i + 65536])
    assert len(got) == 1 and got[0].cookie == 0x51F
    assert decode_records(got[0].body) == [value]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xa2\x00\x01\x07\x00", "corrupted packet"),
        (b"{", "corrupted packet"),
        (b"\xa1\x20\x00\x00", "corrupted packet"),  # type 2 does not exist
    ],
)
def test_framing_errors(data, error):
    with pytest.raises(BinRpcError, match=error):
        PacketReader().feed(data)


def test_framing_is_bounded():
    with pytest.raises(BinRpcError, match="limit"):
        PacketReader(max_body=1024).feed(encode_packet(PacketType.REQUEST, 1, b"\x00" * 2000)[:8])


def test_faults():
    packet = encode_fault(500, "command no.such not found", 9)
    assert packet == (VECTORS / "binrpc-command-not-found.bin").read_bytes()
    got = one_packet(packet)
    assert got.type == PacketType.FAULT
    assert decode_fault(got.body) == RpcFault(500, "command no.such not found")


# -- Kamailio's own packets ------------------------------------------------


def test_dispatcher_list_json_maps_onto_kamailios_binrpc_bytes():
    """The JSON and the BINRPC answer to dispatcher.list, captured from one
    Kamailio: our encoder turns the first into the second, byte for byte."""
    json_result = orjson.loads((VECTORS / "jsonrpc-dispatcher-list.json").read_bytes())["result"]
    captured = (VECTORS / "binrpc-dispatcher-list.bin").read_bytes()
    assert encode_reply(json_result, 7) == captured
    decoded = decode_records(one_packet(captured).body)
    assert decoded[0]["RECORDS"][1]["SET"]["TARGETS"][0]["DEST"]["ATTRS"]["SOCKET"] == NULL_STRING


@pytest.mark.parametrize(
    ("name", "cookie", "value"),
    [
        ("binrpc-dispatcher-hash.bin", 11, {"hashid": 1412806172, "slot": 1}),
        ("binrpc-methodhelp-missing.bin", 12, RpcFault(400, "Method Name Expected")),
    ],
)
def test_captured_packets_decode_and_reencode(name, cookie, value):
    captured = (VECTORS / name).read_bytes()
    packet = one_packet(captured)
    assert packet.cookie == cookie
    if isinstance(value, RpcFault):
        assert decode_fault(packet.body) == value
        assert encode_fault(value.code, value.message, cookie) == captured
    else:
        assert decode_records(packet.body) == [value]
        assert encode_reply(value, cookie) == captured


# -- serving requests, as ctl answers them ----------------------------------


def build() -> Registry:
    r = Registry()
    r.add("core.version", lambda: "sipfleet 0.1.0", doc="Version.")
    r.add(
        "dispatcher.hash",
        lambda n, v1, v2="": {"hashid": len(v1 + v2), "slot": n},
        doc="Hash.",
        params=[Param("n", "int"), Param("v1"), Param("v2", optional=True)],
    )
    r.add("test.obj", lambda: object(), doc="Unencodable.")

    async def later(n: int) -> list[int]:
        await asyncio.sleep(0)  # sleep-ok: one loop turn (no time passes)
        return list(range(n))

    r.add("test.later", later, doc="Async.", params=[Param("n", "int")])
    return r


HANDLER = BinRpcHandler(build())


def serve(method: str, *params: object, cookie: int = 5) -> tuple[BinRpcReply, Packet]:
    reply = HANDLER.handle(one_packet(encode_request(method, params, cookie)))
    assert isinstance(reply, BinRpcReply)
    return reply, one_packet(reply.data)


def test_answers_and_faults_as_ctl():
    reply, packet = serve("dispatcher.hash", 7, "alice")
    assert (packet.type, packet.cookie, reply.close) == (PacketType.REPLY, 5, False)
    assert decode_records(packet.body) == [{"hashid": 5, "slot": 7}]
    # ctl's scan is typed: "7" is no int (kamcmd s:7), 123 no string.
    for params in (["7", "alice"], [7, 123], [7], [7.5, "alice"]):
        _, packet = serve("dispatcher.hash", *params)
        assert decode_fault(packet.body) == RpcFault(500, "Invalid Parameters")
    _, packet = serve("no.such")
    assert decode_fault(packet.body) == RpcFault(500, "command no.such not found")
    _, packet = serve("system.methodHelp")
    assert decode_fault(packet.body) == RpcFault(400, "Method Name Expected")
    _, packet = serve("system.listMethods")
    assert decode_records(packet.body)[:2] == ["core.version", "dispatcher.hash"]


def test_unencodable_results_are_internal_errors(caplog):
    _, packet = serve("test.obj")
    assert decode_fault(packet.body) == RpcFault(500, "Internal Server Error")


def test_async_methods():
    async def run() -> Packet:
        pending = HANDLER.handle(one_packet(encode_request("test.later", [3], 8)))
        assert asyncio.iscoroutine(pending)
        return one_packet((await pending).data)

    packet = asyncio.run(run())
    assert decode_records(packet.body) == [0, 1, 2]


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (Packet(PacketType.REPLY, 7, b"\x71abcdef\x00"), "bad request: corrupted packet"),
        (
            Packet(PacketType.REQUEST, 7, b"\x10\x05"),
            "bad request method: record doesn't match type",
        ),
        (Packet(PacketType.REQUEST, 7, b""), "bad request method: end of packet encountered"),
        (
            Packet(PacketType.REQUEST, 7, b"\x03\x83"),
            "bad request method: record doesn't match type",
        ),
    ],
)
def test_bad_packets_get_400_and_close_the_connection(packet, message):
    # The messages Kamailio 5.6.3 sent for the same packets.
    reply = HANDLER.handle(packet)
    assert isinstance(reply, BinRpcReply) and reply.close
    got = one_packet(reply.data)
    assert (got.type, got.cookie) == (PacketType.FAULT, 7)
    assert decode_fault(got.body) == RpcFault(400, message)


def test_undecodable_params_are_the_methods_scan_fault():
    body = b"\x91\x10dispatcher.hash\x00" + b"\x10\x07\x71abc"  # truncated second param
    reply = HANDLER.handle(Packet(PacketType.REQUEST, 3, body))
    assert isinstance(reply, BinRpcReply) and not reply.close
    assert decode_fault(one_packet(reply.data).body) == RpcFault(500, "Invalid Parameters")
