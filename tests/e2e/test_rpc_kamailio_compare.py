"""sipfleet and Debian's Kamailio 5.6.3 asked the same questions, answers compared.

Here: system.*, core.*, unknown methods, and JSON-RPC/BINRPC edge cases, on
every transport both have (HTTP, kamcmd, kamctl, datagrams). The
dispatcher.* comparisons reuse the same two fixtures once those methods are
registered (see kamailio_ref.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import kamailio_ref as ref
import pytest

from sipfleet.aio.rpc_client import call_dgram
from sipfleet.control.binrpc import PacketReader, PacketType, encode_packet, encode_request
from sipfleet.control.core_methods import ServerInfo, register_core_methods
from sipfleet.control.registry import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def build(registry: Registry) -> None:
    register_core_methods(registry, ServerInfo(started_at=time.time()))


kamailio = ref.kamailio_fixture()
sipfleet = ref.sipfleet_fixture(build)


def both(kamailio: Any, sipfleet: Any, request: Any) -> tuple[Any, Any]:
    return kamailio.post(request), sipfleet.post(request)


# Requests whose answers do not depend on which server answers: compared byte for byte.
SAME_BYTES = [
    {"jsonrpc": "2.0", "method": "no.such", "id": 1},
    {"jsonrpc": "2.0", "method": "no.such", "id": "abc"},
    {"jsonrpc": "2.0", "method": "no.such"},
    {"jsonrpc": "2.0", "method": "system.methodHelp", "params": ["system.listMethods"], "id": 1},
    {"jsonrpc": "2.0", "method": "system.methodHelp", "params": ["system.methodHelp"], "id": 2},
    {
        "jsonrpc": "2.0",
        "method": "system.methodHelp",
        "params": ["system.methodSignature"],
        "id": 3,
    },
    {"jsonrpc": "2.0", "method": "system.methodHelp", "params": ["core.version"], "id": 4},
    {"jsonrpc": "2.0", "method": "system.methodHelp", "params": ["core.uptime"], "id": 5},
    {"jsonrpc": "2.0", "method": "system.methodHelp", "params": ["core.info"], "id": 6},
    {"jsonrpc": "2.0", "method": "system.methodHelp", "params": ["no.such"], "id": 7},
    {"jsonrpc": "2.0", "method": "system.methodHelp", "id": 8},
    {"jsonrpc": "2.0", "method": "system.methodHelp", "params": {"name": "core.version"}, "id": 9},
    {"jsonrpc": "2.0", "method": "system.methodSignature", "params": ["core.version"], "id": 10},
    {"jsonrpc": "2.0", "method": "system.methodSignature", "id": 11},
    {"jsonrpc": "2.0", "method": "no.such", "id": None},
    {"jsonrpc": "2.0", "method": "no.such", "id": True},
    {"jsonrpc": "2.0", "method": "no.such", "id": 1.5},
    {"jsonrpc": "2.0", "method": "no.such", "id": [1]},
    {"jsonrpc": "2.0", "method": "no.such", "id": 12345678901},
    {"method": "core.version", "id": 12},
    {"jsonrpc": "1.0", "method": "core.version", "id": 13},
    {"jsonrpc": "2.0", "method": 5, "id": 14},
    {"jsonrpc": "2.0", "method": "core.version", "params": "x", "id": 15},
    {"jsonrpc": "2.0", "method": "core.version", "params": None, "id": 16},
    [{"jsonrpc": "2.0", "method": "core.version", "id": 17}],
    b'"just a string"',
    b'{"jsonrpc":"2.0","method":"no.such","id":18} trailing bytes',
]


@pytest.mark.parametrize("request_", SAME_BYTES)
def test_http_answers_are_byte_identical(kamailio, sipfleet, request_):
    k, s = both(kamailio, sipfleet, request_)
    assert (s.status, s.reason, s.content_type) == (k.status, k.reason, k.content_type)
    assert s.body == k.body


def test_list_methods_has_kamailios_shape_and_our_methods(kamailio, sipfleet):
    k, s = both(kamailio, sipfleet, {"jsonrpc": "2.0", "method": "system.listMethods", "id": 1})
    assert k.status == s.status == 200
    k_names, s_names = k.json["result"], s.json["result"]
    assert isinstance(k_names, list) and isinstance(s_names, list)
    assert all(isinstance(n, str) for n in s_names)
    assert s_names == sorted(s_names) and k_names == sorted(k_names)
    assert set(s_names) <= set(k_names)  # system.* and core.*: a subset of Kamailio's
    assert s_names == sipfleet.registry.names()
    # Same layout: one line, items joined by ", ".
    assert re.search(rb'\n\t"result":\t\["[^\n]*"\],\n', s.body)
    assert re.search(rb'\n\t"result":\t\["[^\n]*"\],\n', k.body)


def test_core_methods_have_kamailios_shapes(kamailio, sipfleet):
    for method in ("core.version", "core.uptime", "core.info"):
        k, s = both(kamailio, sipfleet, {"jsonrpc": "2.0", "method": method, "id": 1})
        k_result, s_result = k.json["result"], s.json["result"]
        assert type(k_result) is type(s_result), method
        if isinstance(k_result, dict):
            assert list(s_result) == list(k_result), method
            assert {key: type(v) for key, v in s_result.items()} == {
                key: type(v) for key, v in k_result.items()
            }, method
    uptime = sipfleet.rpc("core.uptime")["result"]
    ctime = r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}$"
    assert re.match(ctime, uptime["now"]) and re.match(ctime, uptime["up_since"])
    assert re.match(r"^sipfleet \S+ \(\S+/\S+\)", sipfleet.rpc("core.version")["result"])


def test_unparseable_json_is_our_one_deliberate_difference(kamailio, sipfleet):
    # Kamailio closes the connection without an HTTP answer; sipfleet says why.
    assert kamailio.post_raw(b"{not json", timeout=1.0) is None
    s = sipfleet.post(b"{not json")
    assert (s.status, s.reason) == (400, "Parse Error")


@pytest.mark.parametrize(
    "args",
    [
        ["no.such"],
        ["system.methodHelp"],
        ["system.methodHelp", "no.such"],
        ["system.methodHelp", "core.uptime"],
        ["system.methodHelp", "s:5"],
        ["system.methodHelp", "5"],
        ["system.methodSignature"],
        ["system.methodSignature", "core.info"],
    ],
)
def test_kamcmd_prints_the_same(kamailio, sipfleet, args):
    k, s = kamailio.kamcmd(*args), sipfleet.kamcmd(*args)
    assert (s.returncode, s.stdout, s.stderr) == (k.returncode, k.stdout, k.stderr)


def test_kamcmd_uptime_layout(kamailio, sipfleet):
    def shape(text: str) -> list[str]:
        return [line.split(":")[0] for line in text.splitlines()]

    assert shape(sipfleet.kamcmd("core.uptime").stdout) == shape(
        kamailio.kamcmd("core.uptime").stdout
    )
    assert shape(sipfleet.kamcmd("core.info").stdout) == shape(kamailio.kamcmd("core.info").stdout)


@pytest.mark.parametrize(
    "args",
    [
        ["no.such"],
        ["system.methodHelp", "core.version"],
        ["system.methodHelp"],
        ["system.methodSignature"],
    ],
)
def test_kamctl_rpc_prints_the_same(kamailio, sipfleet, args):
    def normalized(out: str) -> str:
        return re.sub(r'"id":\s*\d+', '"id": N', out)  # kamctl's id is its pid

    k, s = kamailio.kamctl_rpc(*args), sipfleet.kamctl_rpc(*args)
    assert s.returncode == k.returncode == 0
    assert normalized(s.stdout) == normalized(k.stdout)


@pytest.mark.parametrize(
    ("method", "params"),
    [("no.such", []), ("system.methodHelp", ["core.version"]), ("system.methodHelp", [])],
)
def test_datagram_replies_are_byte_identical(kamailio, sipfleet, tmp_path, method, params):
    async def raw(path: Path) -> bytes:
        loop = asyncio.get_running_loop()
        me = tmp_path / f"c{abs(hash((str(path), method))) % 10**6}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(str(me))
            s.setblocking(False)
            request = {"jsonrpc": "2.0", "method": method, "params": params, "id": 7}
            await loop.sock_sendto(s, json.dumps(request).encode(), str(path))
            data = await asyncio.wait_for(loop.sock_recv(s, 65536), 5)
        me.unlink()
        return data

    assert sipfleet.call_soon(raw(sipfleet.dgram_path)) == sipfleet.call_soon(
        raw(kamailio.dgram_path)
    )
    # And our kamcli-style client reads Kamailio's answer.
    doc = sipfleet.call_soon(
        call_dgram(f"unixd:{kamailio.dgram_path}", "core.version", reply_dir=tmp_path)
    )
    assert doc["result"].startswith("kamailio 5.")


@pytest.mark.parametrize(
    "data",
    [
        encode_request("no.such", [], 0x1234),
        encode_request("system.methodHelp", [], 9),
        encode_request("system.methodHelp", ["core.uptime"], 9),
        encode_request("system.methodHelp", [5], 9),
        encode_request("system.methodSignature", [], 9),
        encode_packet(PacketType.REPLY, 7, b"\x71abcdef\x00"),  # a reply is no request
        encode_packet(PacketType.REQUEST, 7, b"\x10\x05"),  # an int where the method name goes
        encode_packet(PacketType.REQUEST, 7, b""),  # no method at all
        b"\xa2\x00\x01\x07\x00",  # bad magic
    ],
)
def test_binrpc_answers_are_byte_identical(kamailio, sipfleet, data):
    def exchange(path: Path) -> tuple[bytes, bool]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(path))
            s.sendall(data)
            got, closed = b"", False
            while not PacketReader().feed(got):
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                got += chunk
            if not closed:
                s.settimeout(0.15)
                try:
                    closed = s.recv(1) == b""
                except TimeoutError:
                    closed = False
            return got, closed

    k, s = exchange(kamailio.ctl_path), exchange(sipfleet.ctl_path)
    assert s == k
