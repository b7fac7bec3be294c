"""How every CLI verb reaches the running sipfleet: one JSON-RPC call, over
its ctl socket (found like the server placed it) or HTTP; the result, or
an exit with a clear message (1: the server refused, 2: unreachable)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import click

from sipfleet.aio.rpc_client import RpcUnreachable, call_ctl_json, call_http
from sipfleet.control.paths import BINRPC_SOCKET, find_run_dir

__all__ = ["call_or_exit"]


def call_or_exit(
    prog: str,
    method: str,
    params: Sequence[object],
    *,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 10.0,
    socket_path: str | None = None,
    run_dir: str | None = None,
) -> Any:
    tried: list[str] = []
    if url:
        call = call_http(url, method, params, token=token, timeout=timeout)
    else:
        if socket_path:
            path = str(socket_path)
            tried = [path]
        else:
            rd, paths = find_run_dir(BINRPC_SOCKET, run_dir)
            path = str(rd.path / BINRPC_SOCKET)
            tried = [str(p) for p in paths]
        call = call_ctl_json(path, method, params, timeout=timeout)
    try:
        doc = asyncio.run(call)
    except RpcUnreachable as e:
        click.echo(f"{prog}: cannot reach sipfleet at {e.address}: {e.reason}", err=True)
        if len(tried) > 1:
            click.echo(f"  looked for its socket at: {', '.join(tried)}", err=True)
        click.echo(
            "  is sipfleet running? start it with `sipfleet run`, or point at it with "
            "--run-dir DIR, --socket PATH or --url http://HOST:PORT/RPC",
            err=True,
        )
        sys.exit(2)
    error = doc.get("error")
    if isinstance(error, dict):
        click.echo(f"error: {error.get('code')} - {error.get('message')}", err=True)
        sys.exit(1)
    return doc.get("result")
