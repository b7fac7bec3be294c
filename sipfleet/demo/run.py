"""The demo: sipfleet (the same ``App`` as ``sipfleet run``) in front of three
built-in back ends, with a built-in caller, in one process.

    sipfleet (App)  <- MiniUac: calls at --rate, at most --max-calls up, held --hold s
         |  round-robin (or --algorithm) over set 1
    demo-1, demo-2, demo-3 (MiniUas: answer OPTIONS, INVITE, BYE)

The store is a list file in a temporary directory (nothing of ./sipfleet.db
is touched); the control plane is the normal one (ctl socket in the run
directory, HTTP with /RPC, /mcp and the dashboard), so ``sipfleet
dispatcher drain demo-2``, ``sipfleet top``, the dashboard and MCP clients
drive it from elsewhere. It shows where calls go: a live table on a
terminal, a line a second otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sipfleet.demo.sipua import MiniUac, MiniUas

__all__ = ["DemoOptions", "run_demo"]

log = logging.getLogger("sipfleet.demo")

BACKENDS = ("demo-1", "demo-2", "demo-3")


@dataclass
class DemoOptions:
    port: int = 0  # SIP (UDP); 0: a free one
    http_port: int | None = None  # None: 9060 when free, else any
    run_dir: str | None = None
    rate: float = 5.0
    max_calls: int = 30
    hold: tuple[float, float] = (2.0, 8.0)
    duration: float | None = None  # None: until Ctrl-C
    algorithm: int = 4
    interval: float = 1.0
    live: bool = True  # a live table (a terminal); else a line per interval


def _free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _live_server_at(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _command() -> str:
    """How the user calls sipfleet from another terminal."""
    if shutil.which("sipfleet"):
        return "sipfleet"
    exe = Path(sys.argv[0])
    return str(exe) if exe.name == "sipfleet" else "sipfleet"


async def run_demo(opts: DemoOptions, out: TextIO, console: Any = None) -> int:
    """Run until ``opts.duration`` (or SIGINT/SIGTERM); 0 when calls went through."""
    from sipfleet.aio.app import App
    from sipfleet.config import ConfigError, load_config
    from sipfleet.control.paths import BINRPC_SOCKET, run_dir_candidates

    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    work = Path(tempfile.mkdtemp(prefix="sipfleet-demo-"))
    uas: list[MiniUas] = []
    uac: MiniUac | None = None
    try:
        for name in BACKENDS:
            uas.append(await MiniUas.start(name))
        list_path = work / "demo.list"
        list_path.write_text("".join(f"1 {u.uri} 0 0 duid={u.name};weight=1\n" for u in uas))
        run_dir = opts.run_dir
        if run_dir is None:
            default = run_dir_candidates(None)[0].path
            if _live_server_at(default / BINRPC_SOCKET):
                run_dir = str(work / "run")  # a real sipfleet lives there: stay out of its way
        http_port = opts.http_port
        if http_port is None:
            http_port = 9060 if _port_free(9060) else 0
        sip_port = opts.port or _free_port()
        overrides: dict[str, object] = {
            "proxy.listen": [f"udp:127.0.0.1:{sip_port}"],
            "proxy.shutdown_timeout": opts.hold[1] + 10.0,
            "store.type": "list",
            "store.path": str(list_path),
            "store.persist_dialogs": False,
            "dispatcher.algorithm": opts.algorithm,
            "dispatcher.ping_interval": 2.0,
            "dispatcher.probing_mode": 1,
            "control.http.port": http_port,
        }
        if run_dir is not None:
            overrides["control.run_dir"] = run_dir
        try:
            cfg = load_config(None, overrides, env={})
        except ConfigError as e:
            say(f"sipfleet demo: {e}")
            return 2
        app = App(cfg)
        serve = asyncio.get_running_loop().create_task(app.serve(), name="sipfleet")
        deadline = time.monotonic() + 30.0
        while app.control is None or "http" not in app.control.endpoints:
            if serve.done() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        if serve.done() or app.control is None:
            exc = serve.exception() if serve.done() else None
            say(f"sipfleet demo: sipfleet did not start: {exc or 'no control plane'}")
            return 2
        control = app.control
        http = control.endpoints.get("http", "")
        base = http[: -len(cfg.control.http.path)] if http else ""
        cmd = _command()
        where = "" if run_dir is None else f" --run-dir {control.run_dir}"
        say(
            f"sipfleet demo: SIP on udp:127.0.0.1:{sip_port}, algorithm {opts.algorithm}, "
            f"back ends {', '.join(f'{u.name} {u.uri}' for u in uas)}"
        )
        say(
            f"  caller: {opts.rate:g} calls/s, at most {opts.max_calls} up, held "
            f"{opts.hold[0]:g}-{opts.hold[1]:g} s"
            + (f", for {opts.duration:g} s" if opts.duration else ", until Ctrl-C")
        )
        say(f"  dashboard  {base}/")
        say(f"  JSON-RPC   {http}")
        if "mcp" in control.endpoints:
            say(f"  MCP        {control.endpoints['mcp']}   (stdio: {cmd} mcp{where})")
        say("  from another terminal:")
        say(
            f"    {cmd} dispatcher drain demo-2{where}      # its calls finish, new ones go elsewhere"
        )
        say(f"    {cmd} dispatcher undrain demo-2{where}")
        say(f"    {cmd} top{where}")
        say()
        uac = await MiniUac.start(("127.0.0.1", sip_port))
        caller = asyncio.get_running_loop().create_task(
            uac.run(
                rate=opts.rate, max_calls=opts.max_calls, hold=opts.hold, duration=opts.duration
            )
        )
        await _show(
            app, uas, uac, caller, serve, opts, say, console, control.endpoints.get("binrpc", "")
        )
        if app.proxy.accepting:
            app.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serve, cfg.proxy.shutdown_timeout + 5.0)
        _summary(uas, uac, say)
        return 0 if uac.stats.answered > 0 else 1
    finally:
        if uac is not None:
            uac.close()
        for u in uas:
            u.close()
        shutil.rmtree(work, ignore_errors=True)


async def _show(
    app: Any,
    uas: list[MiniUas],
    uac: MiniUac,
    caller: asyncio.Task[None],
    serve: asyncio.Task[None],
    opts: DemoOptions,
    say: Callable[[str], None],
    console: Any,
    source: str,
) -> None:
    """Draw until the caller is done (or sipfleet stops); stop the caller on a stop."""
    from sipfleet.cli.top import Sample, render, take_sample
    from sipfleet.control.jsonrpc import JsonRpcHandler
    from sipfleet.mcp.backend import RegistryBackend

    backend = RegistryBackend(JsonRpcHandler(app.registry))
    start = time.monotonic()
    prev: Sample | None = None
    live = None
    if opts.live and console is not None:
        from rich.live import Live

        live = Live(console=console, auto_refresh=False)
        live.start()
    try:
        while not caller.done() and not serve.done():
            if not app.proxy.accepting:
                uac.stop()  # Ctrl-C: sipfleet stops taking calls; hang up as calls end
            now = await take_sample(backend, 6)
            extra = {u.name: (str(u.stats.calls), f"{u.calls_per_second():.1f}") for u in uas}
            if live is not None:
                from rich.console import Group
                from rich.text import Text

                s = uac.stats
                line = Text(
                    f"caller: {s.placed} placed, {s.answered} answered, {s.failed} failed, "
                    f"{s.active} up   (Ctrl-C stops)",
                    style="bold",
                )
                live.update(
                    Group(
                        render(
                            now, prev, source=source, extra=extra, extra_title=("TAKEN", "TAKEN/s")
                        ),
                        Text(""),
                        line,
                    ),
                    refresh=True,
                )
            else:
                say(_line(time.monotonic() - start, uas, uac))
            prev = now
            next_frame = time.monotonic() + opts.interval
            # Look at sipfleet often between frames: on a stop the caller must stop at once.
            while time.monotonic() < next_frame and not caller.done():
                if not app.proxy.accepting:
                    uac.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(caller), 0.05)
    finally:
        if live is not None:
            live.stop()
    uac.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(caller, opts.hold[1] + 15.0)


def _line(elapsed: float, uas: list[MiniUas], uac: MiniUac) -> str:
    s = uac.stats
    backends = " | ".join(f"{u.name} {u.stats.calls} ({u.stats.active} up)" for u in uas)
    return (
        f"t={elapsed:.1f}s placed={s.placed} answered={s.answered} failed={s.failed} "
        f"up={s.active} | {backends}"
    )


def _summary(uas: list[MiniUas], uac: MiniUac, say: Callable[[str], None]) -> None:
    s = uac.stats
    codes = ", ".join(f"{c}: {n}" for c, n in sorted(s.codes.items()))
    say(
        f"sipfleet demo: {s.placed} calls placed, {s.answered} answered, {s.failed} failed, "
        f"{s.completed} hung up ({codes})"
    )
    for u in uas:
        say(f"  {u.name}: {u.stats.calls} calls")
