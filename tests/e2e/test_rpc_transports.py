"""Every control transport of a running sipfleet, driven by the real clients:
Debian's kamcmd (BINRPC) and kamctl (JSON-RPC FIFO), a kamcli-style
datagram client, HTTP, and the sipfleet CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kamailio_ref as ref
import pytest
from click.testing import CliRunner

from sipfleet.aio.rpc_client import (
    RpcUnreachable,
    call_binrpc,
    call_ctl_json,
    call_dgram,
    call_http,
)
from sipfleet.cli.rpc import rpc_cmd
from sipfleet.control.binrpc import PacketReader, PacketType, decode_fault, encode_request
from sipfleet.control.core_methods import ServerInfo, register_core_methods
from sipfleet.control.registry import Param, Registry, RpcFault

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

needs_kamcmd = pytest.mark.skipif(not Path(ref.KAMCMD).exists(), reason="kamcmd is not installed")
needs_kamctl = pytest.mark.skipif(not Path(ref.KAMCTL).exists(), reason="kamctl is not installed")
STARTED = time.time() - 42


def build(registry: Registry) -> None:
    register_core_methods(registry, ServerInfo(started_at=STARTED))
    registry.add(
        "test.echo",
        lambda *args: list(args),
        doc="Returns its params.",
        params=[Param(f"p{i}", "any", optional=True) for i in range(6)],
    )
    registry.add(
        "test.big",
        lambda n: {"ITEMS": [{"ITEM": f"{i:08d}" + "x" * 92} for i in range(n)]},
        doc="About n*110 bytes of BINRPC.",
        params=[Param("n", "int")],
    )

    def fault() -> None:
        raise RpcFault(404, "Destination Group Not Found")

    registry.add("test.fault", fault, doc="Always faults.")

    async def slow(ms: int) -> str:
        await asyncio.sleep(ms / 1000)  # sleep-ok: a slow RPC method is the behaviour here
        return f"slept {ms} ms"

    registry.add("test.slow", slow, doc="Finishes later.", params=[Param("ms", "int")])
    registry.add("test.null", lambda: {"a": None, "b": [1, 2]}, doc="A null and an array.")


sipfleet = ref.sipfleet_fixture(
    build,
    config={
        "dgram": {"udp": "127.0.0.1:0"},
        "binrpc": {"tcp": "127.0.0.1:0", "udp": "127.0.0.1:0"},
    },
)


# -- kamcmd (BINRPC on the unix socket) ----------------------------------------


@needs_kamcmd
def test_kamcmd_lists_every_method(sipfleet):
    out = sipfleet.kamcmd("system.listMethods")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == sipfleet.registry.names()
    assert out.stdout == sipfleet.kamcmd("ls").stdout  # kamcmd's own alias


@needs_kamcmd
def test_kamcmd_core_methods(sipfleet):
    version = sipfleet.kamcmd("core.version").stdout.strip()
    assert version.startswith("sipfleet 0.1.0 (")
    lines = sipfleet.kamcmd("core.uptime").stdout.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert [line.split(":")[0] for line in lines[1:-1]] == ["\tnow", "\tup_since", "\tuptime"]
    assert int(lines[3].split(": ")[1]) >= 42
    info = sipfleet.kamcmd("core.info").stdout
    assert "\tversion: sipfleet 0.1.0\n" in info
    assert re.search(r"\tcompiled: (compiled with mypyc \(\d+ modules\)|pure Python)\n", info)


@needs_kamcmd
@pytest.mark.parametrize(
    ("args", "stdout"),
    [
        (["no.such"], "error: 500 - command no.such not found\n"),
        (["system.methodHelp"], "error: 400 - Method Name Expected\n"),
        (["system.methodHelp", "no.such"], "error: 400 - command not found\n"),
        (["system.methodHelp", "test.fault"], "Always faults.\n"),
        (["system.methodSignature", "core.version"], "error: 500 - Not Implemented Yet\n"),
        (["test.fault"], "error: 404 - Destination Group Not Found\n"),
        (["test.slow", "20"], "slept 20 ms\n"),
        (["test.slow", "s:20"], "error: 500 - Invalid Parameters\n"),  # ctl's typed scan
        (["test.echo", "5", "s:5", "abc", "2.5"], "5\n5\nabc\n2.500000\n"),
        (["test.null"], "{\n\ta: <null string>\n\tb: {\n\t\t1\n\t\t2\n\t}\n}\n"),
    ],
)
def test_kamcmd_answers(sipfleet, args, stdout):
    out = sipfleet.kamcmd(*args)
    assert (out.returncode, out.stdout) == (0, stdout), out.stderr


@needs_kamcmd
def test_kamcmd_reads_replies_up_to_its_own_buffer(sipfleet):
    out = sipfleet.kamcmd("test.big", "1000")  # ~110 KiB
    assert out.returncode == 0 and out.stdout.count("ITEM: ") == 1000
    # kamcmd's reply buffer is 128 KiB (MAX_REPLY_SIZE): past it, kamcmd itself
    # refuses. The server sends it whole; our own client reads it.
    out = sipfleet.kamcmd("test.big", "2000")
    assert "ERROR: reply too big" in out.stderr
    big = sipfleet.call_soon(call_binrpc(f"unix:{sipfleet.ctl_path}", "test.big", [25_000]))
    assert len(big.values[0]["ITEMS"]) == 25_000  # ~2.7 MB


@needs_kamcmd
def test_kamcmd_over_udp(sipfleet):
    """``kamcmd -s udp:HOST:PORT``, as with ctl's ``udp:`` listener: one request per
    datagram; a reply over one datagram's size is a fault, and the server goes on."""
    udp = sipfleet.servers.endpoints["binrpc_udp"]

    def kamcmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ref.KAMCMD, "-s", udp, *args], capture_output=True, text=True, timeout=10
        )

    assert kamcmd("test.echo", "5", "abc").stdout == "5\nabc\n"
    assert kamcmd("system.listMethods").stdout.splitlines() == sipfleet.registry.names()
    assert kamcmd("test.fault").stdout == "error: 404 - Destination Group Not Found\n"
    assert kamcmd("test.slow", "20").stdout == "slept 20 ms\n"
    assert kamcmd("test.big", "100").stdout.count("ITEM: ") == 100  # ~11 KB
    assert kamcmd("test.big", "1000").stdout == "error: 500 - Reply Too Big For A Datagram\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        host, port = udp.removeprefix("udp:").rsplit(":", 1)
        s.settimeout(0.3)
        s.sendto(b"\xa1\x00garbage", (host, int(port)))  # a torn packet: dropped
        with pytest.raises(TimeoutError):
            s.recv(65536)
        s.settimeout(2)
        s.sendto(b"\x00" * 8, (host, int(port)))  # not BINRPC: a 400 fault back
        reply = PacketReader().feed(s.recv(65536))[0]
        assert reply.type == PacketType.FAULT
        assert decode_fault(reply.body).code == 400
    assert kamcmd("core.version").stdout.startswith("sipfleet")


def test_binrpc_over_tcp_and_several_requests_on_one_connection(sipfleet):
    tcp = sipfleet.servers.endpoints["binrpc_tcp"]
    assert sipfleet.call_soon(call_binrpc(tcp, "core.version")).values[0].startswith("sipfleet")

    async def pipeline() -> list[Any]:
        reader, writer = await asyncio.open_unix_connection(str(sipfleet.ctl_path))
        writer.write(b"".join(encode_request("test.echo", [i], 100 + i) for i in range(3)))
        framer = PacketReader()
        packets: list[Any] = []
        while len(packets) < 3:
            packets += framer.feed(await reader.read(65536))
        writer.write(b"\xa2garbage")  # corrupt: answered 400, then closed
        packets += framer.feed(await reader.read(65536))
        eof = await reader.read(1)
        writer.close()
        return [*packets, eof]

    *packets, eof = sipfleet.call_soon(pipeline())
    assert [p.cookie for p in packets[:3]] == [100, 101, 102]
    assert packets[3].type == PacketType.FAULT
    assert decode_fault(packets[3].body) == RpcFault(400, "bad request: corrupted packet")
    assert eof == b""


# -- the CLI's JSON-RPC on the ctl socket ------------------------------------


def test_json_on_the_ctl_socket_gives_exact_json(sipfleet):
    doc = sipfleet.call_soon(call_ctl_json(sipfleet.ctl_path, "test.null"))
    assert doc["result"] == {"a": None, "b": [1, 2]}
    doc = sipfleet.call_soon(call_ctl_json(sipfleet.ctl_path, "test.big", [40_000]))
    assert len(doc["result"]["ITEMS"]) == 40_000


def _cli(*args: str, env: dict[str, str] | None = None) -> Any:
    """The CLI in-process (fast); its exit code, stdout and stderr."""
    result = CliRunner().invoke(rpc_cmd, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_cli_exit_codes_and_output(sipfleet):
    run_dir = str(sipfleet.run_dir)
    assert _cli("--run-dir", run_dir, "test.echo", "1", "s:2", "i:3", "x", "-4") == (
        0,
        '[1,"2",3,"x",-4]\n',
        "",
    )
    assert _cli("test.slow", "10", env={"SIPFLEET_RUN_DIR": run_dir})[:2] == (0, '"slept 10 ms"\n')
    code, out, _ = _cli("--run-dir", run_dir, "--pretty", "test.null")
    assert json.loads(out) == {"a": None, "b": [1, 2]} and out.count("\n") > 1
    assert _cli("--run-dir", run_dir, "test.fault") == (
        1,
        "",
        "error: 404 - Destination Group Not Found\n",
    )
    url = f"http://127.0.0.1:{sipfleet.http_port}/RPC"
    assert _cli("--url", url, "system.methodHelp", "test.fault")[:2] == (0, '"Always faults."\n')
    code, _, err = _cli("--socket", str(sipfleet.run_dir / "nope"), "core.version")
    assert code == 2 and "cannot reach sipfleet at unix:" in err


def test_cli_as_a_process(sipfleet):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sipfleet.cli.rpc",
            "--run-dir",
            str(sipfleet.run_dir),
            "test.fault",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (out.returncode, out.stdout, out.stderr) == (
        1,
        "",
        "error: 404 - Destination Group Not Found\n",
    )


# -- kamctl rpc (the JSON-RPC FIFO) ---------------------------------------------


@needs_kamctl
def test_kamctl_rpc_over_the_fifo(sipfleet):
    out = sipfleet.kamctl_rpc("system.listMethods")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["result"] == sipfleet.registry.names()
    out = sipfleet.kamctl_rpc("test.echo", "abc", "5", "s:6", "i:7")
    assert json.loads(out.stdout)["result"] == ["abc", 5, "6", 7]
    doc = json.loads(sipfleet.kamctl_rpc("no.such").stdout)
    assert doc["error"] == {"code": 500, "message": "Method Not Found"}
    # kamctl's monitor greps the pretty layout: `"result": "<value>"` on one line.
    assert '  "result": "sipfleet 0.1.0' in sipfleet.kamctl_rpc("core.version").stdout


def _fifo_exchange(
    fifo: Path, request: bytes, names: list[str], timeout: float = 15.0
) -> dict[str, bytes]:
    """Make reply FIFOs in /tmp (as kamctl does), send ``request``, collect each reply:
    until every one was written and closed, or ``timeout`` (then what came)."""
    replies = {name: Path("/tmp") / name for name in names}
    fds: dict[str, int] = {}
    got = dict.fromkeys(names, b"")
    try:
        for name, path in replies.items():
            os.mkfifo(path, 0o600)
            fds[name] = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fifo, "wb") as f:
            f.write(request)
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                try:
                    chunk = os.read(fds[name], 65536)
                except BlockingIOError:
                    continue
                if chunk:
                    got[name] += chunk
                elif got[name]:
                    pending.discard(name)  # the server wrote and closed
            # sleep-ok: the poll interval of this bounded read; with a short timeout it
            # is the window in which no reply may come (the bad reply_name below)
            time.sleep(0.01)
        return got
    finally:
        for fd in fds.values():
            os.close(fd)
        for path in replies.values():
            path.unlink(missing_ok=True)


def test_fifo_serves_requests_in_order_and_refuses_unsafe_reply_names(sipfleet):
    two = (
        b'{"jsonrpc":"2.0","method":"test.echo","params":[1],"reply_name":"sf_e2e_a","id":1}\n'
        b'{"jsonrpc":"2.0","method":"test.echo","params":[2],"reply_name":"sf_e2e_b","id":2}'
    )
    got = _fifo_exchange(sipfleet.fifo_path, two, ["sf_e2e_a", "sf_e2e_b"])
    assert json.loads(got["sf_e2e_a"])["result"] == [1]
    assert json.loads(got["sf_e2e_b"])["result"] == [2]
    bad = b'{"jsonrpc":"2.0","method":"core.version","reply_name":"../tmp/sf_e2e_c","id":3}'
    assert _fifo_exchange(sipfleet.fifo_path, bad, ["sf_e2e_c"], timeout=0.5) == {"sf_e2e_c": b""}


# -- datagrams (kamcli's socket transport) ---------------------------------------


def test_datagrams_unix_and_udp(sipfleet, tmp_path):
    unixd = f"unixd:{sipfleet.dgram_path}"
    doc = sipfleet.call_soon(call_dgram(unixd, "test.slow", [5], reply_dir=tmp_path))
    assert doc["result"] == "slept 5 ms"
    doc = sipfleet.call_soon(
        call_dgram(sipfleet.servers.endpoints["dgram_udp"], "test.echo", ["u"])
    )
    assert doc["result"] == ["u"]
    doc = sipfleet.call_soon(call_dgram(unixd, "test.big", [20_000], reply_dir=tmp_path))
    assert doc["error"] == {"code": 500, "message": "Reply Too Big For A Datagram"}
    assert not list(tmp_path.iterdir())  # the client's reply socket is gone


def test_datagram_from_an_unbound_socket_gets_no_reply(sipfleet):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(b'{"jsonrpc":"2.0","method":"core.version","id":1}', str(sipfleet.dgram_path))
        with pytest.raises(OSError):
            s.recv(100)


# -- HTTP ---------------------------------------------------------------------------


def test_http_statuses(sipfleet):
    ok = sipfleet.post({"jsonrpc": "2.0", "method": "test.slow", "params": [1], "id": 1})
    assert (ok.status, ok.reason, ok.content_type) == (200, "OK", "application/json")
    fault = sipfleet.post({"jsonrpc": "2.0", "method": "test.fault", "id": 2})
    assert (fault.status, fault.reason) == (404, "Destination Group Not Found")
    assert fault.json["error"] == {"code": 404, "message": "Destination Group Not Found"}
    bad = sipfleet.post(b"{nope")
    assert (bad.status, bad.reason) == (400, "Parse Error")
    other = ref.http_post("127.0.0.1", sipfleet.http_port, "/other", b"{}")
    assert other.status == 404
    big = ref.http_post("127.0.0.1", sipfleet.http_port, "/RPC", b" " * (1 << 20 | 1))
    assert big.status == 413
    conn = ref.http.client.HTTPConnection("127.0.0.1", sipfleet.http_port, timeout=5)
    conn.request("GET", "/RPC")
    resp = conn.getresponse()
    assert (resp.status, resp.getheader("Allow")) == (405, "POST")
    conn.close()


TOKEN = "s3cret-s3cret-s3cret"


def test_http_bearer_token(tmp_path):
    with ref.sipfleet_running(tmp_path, build, config={"http": {"token": TOKEN}}) as control:
        body = {"jsonrpc": "2.0", "method": "core.version", "id": 1}
        assert control.post(body).status == 401
        assert control.post(body, headers={"Authorization": "Bearer wrong"}).status == 401
        assert control.post(body, headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
        url = f"http://127.0.0.1:{control.http_port}/RPC"
        doc = control.call_soon(call_http(url, "core.version", token=TOKEN))
        assert doc["result"].startswith("sipfleet")
        with pytest.raises(RpcUnreachable, match="401"):
            control.call_soon(call_http(url, "core.version"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_http_over_tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    config = {"http": {"tls_cert": str(cert), "tls_key": str(key)}}
    with ref.sipfleet_running(tmp_path / "run", build, config=config) as control:
        url = control.servers.endpoints["http"]
        assert url.startswith("https://")
        doc = control.call_soon(call_http(url, "core.version", verify_tls=False))
        assert doc["result"].startswith("sipfleet")


# -- files, lifecycle, bounds -------------------------------------------------------


def test_socket_files_modes_stale_files_and_cleanup(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(run_dir / "sipfleet_ctl"))
    stale.close()  # a socket file nobody listens on: a crashed server's
    os.mkfifo(run_dir / "sipfleet_rpc.fifo")
    with ref.sipfleet_running(run_dir, build) as control:
        names = ["sipfleet_ctl", "sipfleet_rpc.fifo", "sipfleet_rpc.sock"]
        for name in names:
            assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name
        assert control.call_soon(
            call_binrpc(f"unix:{run_dir / 'sipfleet_ctl'}", "core.version")
        ).values
        # A second server on the same run dir must not steal a live socket.
        with pytest.raises(FileExistsError, match="in use by a running server"):
            ref.SipfleetControl(run_dir, build).start()
    assert sorted(p.name for p in run_dir.iterdir()) == []


def test_configured_mode_and_something_else_in_the_way(tmp_path):
    with ref.sipfleet_running(tmp_path / "a", build, config={"socket": {"mode": "0660"}}):
        assert stat.S_IMODE((tmp_path / "a" / "sipfleet_ctl").stat().st_mode) == 0o660
    blocked = tmp_path / "b"
    blocked.mkdir()
    (blocked / "sipfleet_ctl").write_text("not a socket")
    control = ref.SipfleetControl(blocked, build)
    with pytest.raises(FileExistsError, match="not a socket"):
        control.start()
    control.stop()
    assert (blocked / "sipfleet_ctl").read_text() == "not a socket"


def test_connections_past_the_bound_are_closed(tmp_path):
    with ref.sipfleet_running(tmp_path, build, config={"max_connections": 2}) as control:

        async def crowd() -> bytes:
            held = [await asyncio.open_unix_connection(str(control.ctl_path)) for _ in range(2)]
            # Both taken by the server (each answers a request) before the third comes.
            for cookie, (r, w) in enumerate(held):
                w.write(encode_request("core.version", [], cookie))
                framer = PacketReader()
                while not framer.feed(await asyncio.wait_for(r.read(65536), 15)):
                    pass
            reader, writer = await asyncio.open_unix_connection(str(control.ctl_path))
            got = await asyncio.wait_for(reader.read(10), 15)
            for _, w in [*held, (reader, writer)]:
                w.close()
            return got

        assert control.call_soon(crowd()) == b""
        assert control.call_soon(call_binrpc(f"unix:{control.ctl_path}", "core.version")).values
