"""The control plane against hostile input (issue 9 items 4 and 6, issue 15's
leniency): cross-site and DNS-rebinding requests to the HTTP transport,
JSON nested 100,000 deep on every JSON transport, and raw control
characters inside JSON strings as kamcli sends them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import kamailio_ref as ref
import pytest
from waits import wait_for

from sipfleet.control.core_methods import ServerInfo, register_core_methods
from sipfleet.control.registry import Param, Registry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

DEEP = b"[" * 100_000
DEEP_OBJECT = b'{"a":' * 20_000 + b"1" + b"}" * 20_000  # whole, for the stream framers
# kamcli writes params between quotes as they are: raw CR LF stays raw.
RAW_CRLF = b'{"jsonrpc":"2.0","method":"test.echo","params":["a\r\nb","c\td\x01"],"id":7}'
BRIEF_EXAMPLE = b'{"jsonrpc":"2.0","method":"core.version","params":["a\r\nb"],"id":1}'
RPC = {"jsonrpc": "2.0", "method": "test.echo", "params": ["ok"], "id": 1}


def build(registry: Registry) -> None:
    register_core_methods(registry, ServerInfo(started_at=time.time()))
    registry.add(
        "test.echo",
        lambda *args: list(args),
        doc="Returns its params.",
        params=[Param(f"p{i}", "any", optional=True) for i in range(4)],
    )


sipfleet = ref.sipfleet_fixture(build, config={"dgram": {"udp": "127.0.0.1:0"}})


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert bad == []


# -- nesting and leniency on every JSON transport -----------------------------------


def test_deep_json_over_http_is_a_parse_error(sipfleet, caplog):
    before = sipfleet.servers.jsonrpc.parse_errors
    for body in (DEEP, DEEP + b"]" * 100_000, DEEP_OBJECT):
        answer = sipfleet.post(body)
        assert (answer.status, answer.reason) == (400, "Parse Error")
        assert answer.json["error"] == {"code": 400, "message": "Parse Error"}
    assert sipfleet.servers.jsonrpc.parse_errors == before + 3
    assert sipfleet.post(RPC).json["result"] == ["ok"]  # and it serves on
    _no_tracebacks(caplog)


def test_deep_json_on_the_ctl_stream_is_a_parse_error(sipfleet, caplog):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sipfleet.ctl_path))
        s.sendall(DEEP_OBJECT + json.dumps(RPC).encode())
        got, docs = "", []
        while len(docs) < 2:
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {got!r}"
            got += chunk.decode()
            docs = _documents(got)
    first, second = docs[:2]
    assert first["error"] == {"code": 400, "message": "Parse Error"}
    assert second["result"] == ["ok"]
    _no_tracebacks(caplog)


def _documents(text: str) -> list[Any]:
    """The whole JSON documents at the start of ``text`` (each reply is one
    pretty-printed document and a newline)."""
    decoder, docs, pos = json.JSONDecoder(), [], 0
    while text[pos:].strip():
        start = len(text) - len(text[pos:].lstrip())
        try:
            doc, pos = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            break
        docs.append(doc)
    return docs


def _dgram(family: int, server: Any, payload: bytes, tmp: Path, wait: float) -> bytes | None:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp / f"c{os.getpid()}.sock") if family == socket.AF_UNIX else ("127.0.0.1", 0))
        s.settimeout(wait)
        s.sendto(payload, server)
        try:
            return s.recv(65536)
        except TimeoutError:
            return None
        finally:
            if family == socket.AF_UNIX:
                (tmp / f"c{os.getpid()}.sock").unlink()


@pytest.mark.parametrize("kind", ["unix", "udp"])
def test_deep_json_by_datagram_gets_nothing_and_raw_crlf_is_answered(
    sipfleet, tmp_path, kind, caplog
):
    if kind == "unix":
        family, server = socket.AF_UNIX, str(sipfleet.dgram_path)
    else:
        host, port = sipfleet.servers.endpoints["dgram_udp"].removeprefix("udp:").rsplit(":", 1)
        family, server = socket.AF_INET, (host, int(port))
    before = sipfleet.servers.jsonrpc.parse_errors
    deep = DEEP[:60_000]  # one UDP datagram
    assert _dgram(family, server, deep, tmp_path, 0.5) is None  # as jsonrpcs: dropped
    assert sipfleet.servers.jsonrpc.parse_errors == before + 1
    reply = _dgram(family, server, RAW_CRLF, tmp_path, 5)
    assert reply is not None
    assert json.loads(reply)["result"] == ["a\r\nb", "c\td\x01"]
    reply = _dgram(family, server, BRIEF_EXAMPLE, tmp_path, 5)
    assert reply is not None and json.loads(reply)["result"].startswith("sipfleet")
    _no_tracebacks(caplog)


def test_raw_control_characters_over_http(sipfleet):
    answer = sipfleet.post(RAW_CRLF)
    assert answer.status == 200
    assert answer.json == {"jsonrpc": "2.0", "result": ["a\r\nb", "c\td\x01"], "id": 7}
    assert sipfleet.post(BRIEF_EXAMPLE).json["result"].startswith("sipfleet")


@pytest.mark.skipif(shutil.which("kamcli") is None, reason="kamcli is not installed")
def test_kamcli_sends_raw_crlf_and_gets_an_answer(sipfleet, tmp_path):
    """kamcli (Debian's 2.0) pastes its params between quotes unescaped."""
    ini = tmp_path / "kamcli.ini"
    ini.write_text(
        "[main]\ndomain=test.com\n[ctl]\ntype=jsonrpc\n[jsonrpc]\ntransport=socket\n"
        f"srvaddr={sipfleet.dgram_path}\nrcvaddr={tmp_path / 'reply.sock'}\noutformat=json\n"
    )
    out = subprocess.run(
        ["kamcli", "-c", str(ini), "--no-default-configs", "rpc", "test.echo", "a\r\nb", "i:5"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Timeout" not in out.stderr
    assert json.loads(out.stdout)["result"] == ["a\r\nb", 5]


def test_deep_json_on_the_fifo_gets_nothing_and_the_fifo_serves_on(sipfleet, caplog):
    name = f"sf_hostile_{os.getpid()}"
    reply = Path("/tmp") / name
    os.mkfifo(reply, 0o600)
    fd = os.open(reply, os.O_RDONLY | os.O_NONBLOCK)
    try:
        deep = b'{"reply_name":"' + name.encode() + b'","params":' + DEEP + b"}"
        good = json.dumps({**RPC, "reply_name": name}).encode()
        with open(sipfleet.fifo_path, "wb") as f:
            f.write(deep + good)
        got = b""

        def replied() -> bool:
            nonlocal got
            with contextlib.suppress(BlockingIOError):
                got += os.read(fd, 65536)
            return b"}" in got

        wait_for("the reply on the FIFO", replied, 15, 0.01, seen=lambda: got)
        assert json.loads(got)["result"] == ["ok"]  # one reply: the good request's
        _no_tracebacks(caplog)
    finally:
        os.close(fd)
        reply.unlink()


# -- the HTTP guard ---------------------------------------------------------------


def _post(control: Any, headers: dict[str, str], body: bytes | None = None, path: str = "/RPC"):
    answer = ref.http_post(
        "127.0.0.1", control.http_port, path, body or json.dumps(RPC).encode(), headers=headers
    )
    assert answer is not None
    return answer


def test_content_type_must_be_json(sipfleet):
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""):
        answer = _post(sipfleet, {"Content-Type": ctype})
        assert answer.status == 415, ctype
        assert b"Content-Type: application/json" in answer.body
    for ctype in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        assert _post(sipfleet, {"Content-Type": ctype}).status == 200, ctype


def test_host_must_name_this_server(sipfleet):
    port = sipfleet.http_port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", "127.0.0.1"):
        assert _post(sipfleet, {"Host": host}).status == 200, host
    for host in (
        f"attacker.example:{port}",  # a DNS-rebinding page's own name
        "attacker.example",
        f"127.0.0.1:{port + 1 if port < 65535 else 1}",
        f"127.0.0.2:{port}",
        f"[::1]:{port}",  # not the bound address
        "",
        "a:b:c",
    ):
        answer = _post(sipfleet, {"Host": host})
        assert answer.status == 421, host
        assert not answer.body.startswith(b"{")  # not a JSON-RPC answer: nothing ran
    # Every path, not only /RPC: routes added later are guarded too.
    assert _post(sipfleet, {"Host": "attacker.example"}, path="/metrics").status == 421
    assert _post(sipfleet, {"Host": "localhost"}, path="/metrics").status == 404


def test_origin_must_be_this_server(sipfleet):
    port = sipfleet.http_port
    for origin, host in (
        (f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"),
        (f"http://localhost:{port}", f"localhost:{port}"),
    ):
        assert _post(sipfleet, {"Origin": origin, "Host": host}).status == 200, origin
    for origin in (
        "http://attacker.example",
        f"http://localhost:{port}",  # another origin than the Host the request names
        f"https://127.0.0.1:{port}",
        f"http://127.0.0.1:{port + 1 if port < 65535 else 1}",
        "null",  # sandboxed frames and file:// pages
        "",
    ):
        answer = _post(sipfleet, {"Origin": origin})
        assert answer.status == 403, origin
        assert b"cross-origin" in answer.body
    assert _post(sipfleet, {"Origin": "http://attacker.example"}, path="/x").status == 403


def test_configured_names_and_token_with_the_guard(tmp_path):
    token = "0123456789abcdef-token"
    config = {
        "http": {"token": token, "allowed_hosts": ["lb1.example.net", "lb2.example.net:8443"]}
    }
    with ref.sipfleet_running(tmp_path, build, config=config) as control:
        auth = {"Authorization": f"Bearer {token}"}
        assert _post(control, {**auth, "Host": "LB1.example.net:9999"}).status == 200
        assert _post(control, {**auth, "Host": "lb2.example.net:8443"}).status == 200
        assert _post(control, {**auth, "Host": "lb2.example.net:8444"}).status == 421
        assert _post(control, {**auth, "Host": "lb3.example.net"}).status == 421
        # The Host check comes first: a rebinding page learns nothing about the token.
        assert _post(control, {"Host": "evil.example"}).status == 421
        assert _post(control, {}).status == 401
        assert _post(control, {**auth, "Origin": "http://evil.example"}).status == 403
        origin = {"Origin": "https://lb2.example.net:8443", "Host": "lb2.example.net:8443"}
        assert _post(control, {**auth, **origin}).status == 403  # we serve http here
        origin = {"Origin": "http://lb1.example.net", "Host": "lb1.example.net"}
        assert _post(control, {**auth, **origin}).status == 200
        assert control.servers.http.guard.refused == 6


def test_malformed_http_is_one_line_without_traceback_and_rate_limited(sipfleet, caplog):
    garbage = [
        b"POST /RPC HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n",
    ]
    with caplog.at_level(logging.INFO):
        for i in range(400):
            with socket.create_connection(("127.0.0.1", sipfleet.http_port), timeout=5) as s:
                s.sendall(garbage[i % 2])
                assert s.recv(12) == b"HTTP/1.0 400"
    lines = [r for r in caplog.records if r.name.startswith("sipfleet.aio.rpc_http")]
    assert 1 <= len(lines) <= 60, len(lines)
    assert all(r.exc_info is None and r.levelno <= logging.WARNING for r in lines)
    assert "Duplicate Content-Length" in lines[0].getMessage()
