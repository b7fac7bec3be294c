"""``sipfleet mcp``: the MCP server on stdio, for Claude Desktop and any MCP client.

It finds the running sipfleet as every CLI verb does (the ctl socket in the
run directory; ``--run-dir``, ``--socket``, or ``--url``/``--token`` for
HTTP) and calls it over RPC for every tool. stdout carries MCP and nothing
else; logs (and the audit lines) go to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from sipfleet.config import ConfigError, load_config

__all__ = ["mcp_cmd"]


@click.command("mcp")
@click.option(
    "--run-dir", type=click.Path(file_okay=False), help="Run directory of the sipfleet to drive."
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False),
    help="Its ctl socket (sipfleet_ctl).",
)
@click.option("--url", help="Call over HTTP instead, e.g. http://127.0.0.1:9060/RPC.")
@click.option("--token", envvar="SIPFLEET_RPC_TOKEN", help="Bearer token for --url.")
@click.option(
    "--timeout", default=10.0, show_default=True, help="Seconds to wait for each RPC reply."
)
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="TOML config: its [control.mcp] guard rails apply (the server's own, if you share it).",
)
@click.option(
    "--max-out-share",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="Override [control.mcp] max_out_share.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def mcp_cmd(
    run_dir: str | None,
    socket_path: str | None,
    url: str | None,
    token: str | None,
    timeout: float,
    config_path: str | None,
    max_out_share: float | None,
    log_level: str,
) -> None:
    """Serve sipfleet's tools to an MCP client over stdio (JSON-RPC on stdin/stdout).

    Tools: list_destinations, get_destination, drain, undrain, set_state,
    add_destination, remove_destination, reload, statistics, explain_route.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    overrides: dict[str, object] = {}
    if max_out_share is not None:
        overrides["control.mcp.max_out_share"] = max_out_share
    try:
        cfg = load_config(config_path, overrides)
    except ConfigError as e:
        click.echo(f"sipfleet mcp: {e}", err=True)
        sys.exit(2)
    from sipfleet.control.paths import BINRPC_SOCKET, find_run_dir
    from sipfleet.mcp.backend import ClientBackend
    from sipfleet.mcp.server import build_server

    if url:
        backend = ClientBackend(url=url, token=token, timeout=timeout)
    else:
        if not socket_path:
            rd, _ = find_run_dir(BINRPC_SOCKET, run_dir or cfg.control.run_dir)
            socket_path = str(rd.path / BINRPC_SOCKET)
        backend = ClientBackend(socket_path=socket_path, timeout=timeout)
    log = logging.getLogger("sipfleet.mcp")
    log.info("sipfleet mcp: serving on stdio, driving sipfleet at %s", backend.address)
    server = build_server(backend, cfg.control.mcp)
    try:
        asyncio.run(server.run_stdio_async())
    except KeyboardInterrupt:
        pass
