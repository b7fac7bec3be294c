"""``sipfleet health``: is the running sipfleet up, and does it take calls?

For container health checks and Kubernetes probes. It calls
``sipfleet.status`` (over HTTP with ``--url``, else over the ctl socket, as
``sipfleet rpc`` finds it) and exits:

- 0: it answered and accepts calls (with ``--live``: it answered at all);
- 1: anything else: unreachable, refused, or stopping (a graceful stop
  answers but takes no new calls, so a readiness probe takes the node out
  of the Service while its calls finish, and ``--live`` keeps it alive).

Docker reserves exit code 2 in HEALTHCHECK, hence 1 for every failure. One
line on stdout (ok) or stderr (why not).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, NoReturn

import click

from sipfleet.aio.rpc_client import RpcUnreachable, call_ctl_json, call_http
from sipfleet.control.paths import BINRPC_SOCKET, find_run_dir

__all__ = ["health_cmd"]


def _fail(text: str) -> NoReturn:
    click.echo(f"sipfleet health: {text}", err=True)
    sys.exit(1)


@click.command("health")
@click.option("--url", help="Control HTTP endpoint, e.g. http://127.0.0.1:9060/RPC.")
@click.option(
    "--token",
    envvar=["SIPFLEET_RPC_TOKEN", "SIPFLEET_HTTP_TOKEN"],
    help="Bearer token for --url ($SIPFLEET_RPC_TOKEN, else the server's $SIPFLEET_HTTP_TOKEN).",
)
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run directory (no --url).")
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False), help="Its ctl socket.")
@click.option("--live", is_flag=True, help="Only check that it answers (liveness).")
@click.option("--timeout", default=3.0, show_default=True, help="Seconds to wait for the reply.")
def health_cmd(
    url: str | None,
    token: str | None,
    run_dir: str | None,
    socket_path: str | None,
    live: bool,
    timeout: float,
) -> None:
    """Exit 0 if sipfleet answers and accepts calls (--live: answers), else 1."""
    if url:
        call = call_http(url, "sipfleet.status", (), token=token, timeout=timeout)
    else:
        if socket_path is None:
            rd, _ = find_run_dir(BINRPC_SOCKET, run_dir)
            socket_path = str(rd.path / BINRPC_SOCKET)
        call = call_ctl_json(socket_path, "sipfleet.status", (), timeout=timeout)
    try:
        doc = asyncio.run(call)
    except RpcUnreachable as e:
        _fail(f"unreachable at {e.address}: {e.reason}")
    error = doc.get("error")
    if isinstance(error, dict):
        _fail(f"refused: {error.get('code')} - {error.get('message')}")
    status: Any = doc.get("result")
    if not isinstance(status, dict):
        _fail(f"unexpected reply: {str(doc)[:200]}")
    summary = (
        f"{status.get('dialogs')} dialogs, {status.get('usable')}/"
        f"{status.get('destinations')} destinations usable, up {status.get('uptime')} s"
    )
    if not status.get("accepting") and not live:
        _fail(f"stopping: takes no new calls ({summary})")
    state = "accepting calls" if status.get("accepting") else "stopping"
    click.echo(f"ok: {state}, {summary}")
