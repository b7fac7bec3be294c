"""Reference harness: Debian's real Kamailio 5.6 and sipfleet's control plane, side by side.

Comparison tests ask both the same question and compare the answers. Load
this file by path (as tests/sip loads its cases), then::

    ref = load_harness()                       # see the test modules
    kamailio = ref.kamailio_fixture()          # module-scoped pytest fixture
    sipfleet = ref.sipfleet_fixture(build)     # build(registry) adds methods

    def test_x(kamailio, sipfleet):
        k = kamailio.post({"jsonrpc": "2.0", "method": "no.such", "id": 1})
        s = sipfleet.post({"jsonrpc": "2.0", "method": "no.such", "id": 1})
        assert (k.status, k.json) == (s.status, s.json)

``KamailioRef`` runs ``kamailio -DD -E -m 64`` in the foreground on free
loopback ports with a generated config: dispatcher over a list file you
give, jsonrpcs over xhttp (POST /RPC), jsonrpcs FIFO and datagram, and ctl
BINRPC on a unix socket, all in a temp dir. ``SipfleetControl`` runs
``start_control`` on a loop in a thread, so tests can run kamcmd/kamctl
(blocking subprocesses) against it. Both answer ``post``, ``rpc``,
``kamcmd`` and ``kamctl_rpc`` the same way. Everything is bounded in time
and stopped at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from waits import wait_for

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
KAMCMD = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
KAMCTL = shutil.which("kamctl") or "/usr/sbin/kamctl"

DEFAULT_LIST = """\
1 sip:127.0.0.1:5070 0 10 duid=media-1;weight=50
1 sip:127.0.0.1:5071 8 5
2 sip:127.0.0.1:5072
"""


def kamailio_available() -> bool:
    return Path(KAMAILIO).exists() and Path(KAMCMD).exists() and _modules_dir() is not None


def _modules_dir() -> str | None:
    found = sorted(Path("/usr/lib").glob("*/kamailio/modules"))
    for candidate in [*found, Path("/usr/lib/kamailio/modules")]:
        if (candidate / "jsonrpcs.so").exists():
            return f"{candidate}/"
    return None


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class HttpAnswer:
    status: int
    reason: str
    body: bytes
    content_type: str = ""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def http_post(
    host: str,
    port: int,
    path: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> HttpAnswer | None:
    """POST and read the answer; None when there is none (the server closed the
    connection, or stayed silent past ``timeout``: Kamailio does either with
    a body it cannot parse)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return HttpAnswer(resp.status, resp.reason, resp.read(), resp.getheader("Content-Type", ""))
    except (http.client.RemoteDisconnected, ConnectionResetError, TimeoutError):
        return None
    finally:
        conn.close()


def _as_body(request: bytes | dict[str, Any] | str) -> bytes:
    if isinstance(request, bytes):
        return request
    if isinstance(request, str):
        return request.encode()
    return json.dumps(request).encode()


class _RpcPeer:
    """What both sides answer: HTTP JSON-RPC, kamcmd, kamctl rpc."""

    http_host = "127.0.0.1"
    http_port = 0
    http_path = "/RPC"
    ctl_path: Path
    fifo_path: Path

    def post(self, request: bytes | dict[str, Any] | str, **kw: Any) -> HttpAnswer:
        answer = http_post(self.http_host, self.http_port, self.http_path, _as_body(request), **kw)
        assert answer is not None, "the server closed the connection without an answer"
        return answer

    def post_raw(self, body: bytes, **kw: Any) -> HttpAnswer | None:
        return http_post(self.http_host, self.http_port, self.http_path, body, **kw)

    def rpc(self, method: str, *params: Any, rid: Any = 1) -> dict[str, Any]:
        """The reply document for a call over HTTP (faults included)."""
        doc = self.post(
            {"jsonrpc": "2.0", "method": method, "params": list(params), "id": rid}
        ).json
        assert isinstance(doc, dict)
        return doc

    def kamcmd(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KAMCMD, "-s", f"unix:{self.ctl_path}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kamctl_rpc(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "RPCFIFOPATH": str(self.fifo_path)}
        return subprocess.run(
            [KAMCTL, "rpc", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
            start_new_session=True,  # kamctl's trap does "kill 0" on ^C
        )


_CONFIG = """\
#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{sip_port}
listen=tcp:127.0.0.1:{http_port}
tcp_accept_no_cl=yes
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "ctl.so"
loadmodule "xhttp.so"
loadmodule "jsonrpcs.so"
loadmodule "dispatcher.so"
modparam("ctl", "binrpc", "unix:{workdir}/kamailio_ctl")
modparam("jsonrpcs", "transport", 0)
modparam("jsonrpcs", "fifo_name", "{workdir}/kamailio_rpc.fifo")
modparam("jsonrpcs", "dgram_socket", "{workdir}/kamailio_rpc.sock")
modparam("dispatcher", "list_file", "{workdir}/dispatcher.list")
modparam("dispatcher", "ds_ping_interval", 0)
{modparams}
request_route {{
    sl_send_reply("404", "Not here");
    exit;
}}
event_route[xhttp:request] {{
    if ($hu =~ "^/RPC") {{
        jsonrpc_dispatch();
        exit;
    }}
    xhttp_reply("404", "Not Found", "text/plain", "not found");
}}
"""


@dataclass
class KamailioRef(_RpcPeer):
    workdir: Path
    sip_port: int
    http_port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.ctl_path = self.workdir / "kamailio_ctl"
        self.fifo_path = self.workdir / "kamailio_rpc.fifo"
        self.dgram_path = self.workdir / "kamailio_rpc.sock"
        self.list_path = self.workdir / "dispatcher.list"
        self.log_path = self.workdir / "kamailio.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/RPC"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


def start_kamailio(
    workdir: Path,
    *,
    dispatcher_list: str = DEFAULT_LIST,
    modparams: Sequence[str] = (),
    startup_timeout: float = 30.0,
) -> KamailioRef:
    """Start the reference Kamailio; returns once it answers over HTTP and ctl.

    ``modparams``: extra config lines, e.g. 'modparam("dispatcher", "flags", 2)'.
    """
    mpath = _modules_dir()
    if mpath is None:
        raise RuntimeError("Kamailio modules (jsonrpcs.so) not found")
    workdir.mkdir(parents=True, exist_ok=True)
    ref = KamailioRef(workdir, free_port(socket.SOCK_DGRAM), free_port())
    ref.list_path.write_text(dispatcher_list)
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(
        _CONFIG.format(
            sip_port=ref.sip_port,
            http_port=ref.http_port,
            mpath=mpath,
            workdir=workdir,
            modparams="\n".join(modparams),
        )
    )
    with ref.log_path.open("wb") as log:
        ref.process = subprocess.Popen(
            [KAMAILIO, "-DD", "-E", "-m", "64", "-M", "8", "-f", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # one process group: stop() ends every child
        )

    def ready() -> bool:
        assert ref.process is not None
        if ref.process.poll() is not None:
            raise RuntimeError(f"kamailio exited with {ref.process.returncode}:\n{ref.log_tail()}")
        if not ref.ctl_path.exists():
            return False
        answer = None
        with contextlib.suppress(OSError):
            answer = http_post(
                "127.0.0.1",
                ref.http_port,
                "/RPC",
                b'{"jsonrpc":"2.0","method":"core.version","id":1}',
                timeout=1.0,
            )
        return answer is not None and answer.status == 200

    try:
        wait_for("kamailio to answer core.version", ready, startup_timeout, 0.1,
                 seen=ref.log_tail)  # fmt: skip
    except AssertionError:
        ref.stop()
        raise
    return ref


@contextlib.contextmanager
def kamailio_running(workdir: Path, **kw: Any) -> Iterator[KamailioRef]:
    ref = start_kamailio(workdir, **kw)
    try:
        yield ref
    finally:
        ref.stop()


def kamailio_fixture(*, scope: str = "module", **kw: Any) -> Any:
    """A pytest fixture giving a running ``KamailioRef`` (skips without Kamailio)."""

    @pytest.fixture(scope=scope)
    def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioRef]:
        if not kamailio_available():
            pytest.skip("Debian's kamailio (with jsonrpcs, ctl, xhttp) is not installed")
        with kamailio_running(tmp_path_factory.mktemp("kamailio"), **kw) as ref:
            yield ref

    return kamailio


# -- sipfleet's side ----------------------------------------------------------


class SipfleetControl(_RpcPeer):
    """``start_control`` on its own loop in a thread (tests stay synchronous)."""

    def __init__(
        self, run_dir: Path, build: Callable[[Any], None], config: dict[str, Any] | None = None
    ) -> None:
        from sipfleet.config.control import ControlConfig
        from sipfleet.control.registry import Registry

        self.run_dir = run_dir
        self.registry = Registry()
        build(self.registry)
        data: dict[str, Any] = {"run_dir": str(run_dir), "http": {"port": 0}}
        for key, value in (config or {}).items():
            if isinstance(value, dict):
                data[key] = {**data.get(key, {}), **value}
            else:
                data[key] = value
        self.config = ControlConfig.model_validate(data)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="sipfleet-control", daemon=True
        )
        self.servers: Any = None

    def start(self, timeout: float = 10.0) -> SipfleetControl:
        from sipfleet.aio.rpc_servers import start_control

        self._thread.start()
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(
            start_control(self.registry, self.config), self.loop
        )
        self.servers = fut.result(timeout)
        endpoints = self.servers.endpoints
        self.ctl_path = Path(endpoints["binrpc"].removeprefix("unix:"))
        self.fifo_path = Path(endpoints["fifo"])
        self.dgram_path = Path(endpoints["dgram"].removeprefix("unixd:"))
        if "http" in endpoints:
            hostport = endpoints["http"].split("//", 1)[1].split("/", 1)[0]
            self.http_host, port = hostport.rsplit(":", 1)
            self.http_port = int(port)
            self.http_path = self.config.http.path
        return self

    def call_soon(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's loop (e.g. an async client) and wait."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.servers is not None:
            asyncio.run_coroutine_threadsafe(self.servers.close(), self.loop).result(timeout)
            self.servers = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        self.loop.close()


@contextlib.contextmanager
def sipfleet_running(
    run_dir: Path, build: Callable[[Any], None], **kw: Any
) -> Iterator[SipfleetControl]:
    control = SipfleetControl(run_dir, build, **kw).start()
    try:
        yield control
    finally:
        control.stop()


def sipfleet_fixture(build: Callable[[Any], None], *, scope: str = "module", **kw: Any) -> Any:
    """A pytest fixture giving a running ``SipfleetControl``; ``build(registry)`` adds methods."""

    @pytest.fixture(scope=scope)
    def sipfleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipfleetControl]:
        with sipfleet_running(tmp_path_factory.mktemp("sipfleet"), build, **kw) as control:
            yield control

    return sipfleet
