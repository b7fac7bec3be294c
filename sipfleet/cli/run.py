"""``sipfleet run``: start the proxy. Every flag maps onto one config key."""

from __future__ import annotations

import logging
import sys

import click

from sipfleet.config import ConfigError, load_config

__all__ = ["run_cmd"]


@click.command("run")
@click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file."
)
@click.option(
    "--listen",
    multiple=True,
    help="Listener, e.g. udp:127.0.0.1:5060, tls:0.0.0.0:5061 (repeatable). [proxy] listen",
)
@click.option(
    "--list",
    "list_file",
    type=click.Path(dir_okay=False),
    help="Serve a Kamailio dispatcher list file. [store] type=list, path",
)
@click.option(
    "--db",
    "db_file",
    help="SQLite file, sqlite:///PATH, postgresql://USER:PASS@HOST:PORT/DB or mysql://... [store] url",
)
@click.option(
    "--algorithm", type=int, help="Default algorithm (Kamailio ids). [dispatcher] algorithm"
)
@click.option(
    "--ping-interval",
    type=float,
    help="Seconds between OPTIONS probes, 0 = off. [dispatcher] ping_interval",
)
@click.option(
    "--probing-mode",
    type=click.IntRange(0, 3),
    help="Who is probed (1 = all). [dispatcher] probing_mode",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    help="Where the control sockets go. [control] run_dir",
)
@click.option(
    "--http", "http_addr", help="JSON-RPC HTTP address HOST:PORT, or 'off'. [control.http]"
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def run_cmd(
    config_path: str | None,
    listen: tuple[str, ...],
    list_file: str | None,
    db_file: str | None,
    algorithm: int | None,
    ping_interval: float | None,
    probing_mode: int | None,
    run_dir: str | None,
    http_addr: str | None,
    log_level: str | None,
) -> None:
    """Run the proxy (defaults: 127.0.0.1:5060 UDP+TCP, SQLite store ./sipfleet.db)."""
    overrides: dict[str, object] = {}
    if listen:
        overrides["proxy.listen"] = list(listen)
    if list_file and db_file:
        raise click.UsageError("--list and --db name two different stores: give one")
    if list_file:
        overrides["store.type"] = "list"
        overrides["store.path"] = list_file
    if db_file:
        overrides["store.url"] = db_file
    if algorithm is not None:
        overrides["dispatcher.algorithm"] = algorithm
    if ping_interval is not None:
        overrides["dispatcher.ping_interval"] = ping_interval
    if probing_mode is not None:
        overrides["dispatcher.probing_mode"] = probing_mode
    if run_dir:
        overrides["control.run_dir"] = run_dir
    if http_addr:
        if http_addr == "off":
            overrides["control.http.enabled"] = False
        else:
            host, _, port = http_addr.rpartition(":")
            if not host or not port.isdigit():
                raise click.UsageError(f"--http {http_addr!r}: expected HOST:PORT or off")
            overrides["control.http.host"] = host.strip("[]")
            overrides["control.http.port"] = int(port)
    if log_level:
        overrides["log.level"] = log_level
    try:
        cfg = load_config(config_path, overrides)
    except ConfigError as e:
        click.echo(f"sipfleet: {e}", err=True)
        sys.exit(2)
    logging.basicConfig(
        level=cfg.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from sipfleet.aio.app import run
    from sipfleet.aio.tls import TlsError
    from sipfleet.dispatch.errors import DispatcherError, ListFileError
    from sipfleet.store.base import StoreError

    try:
        run(cfg, lambda: load_config(config_path, overrides))
    except (StoreError, ListFileError, DispatcherError, TlsError) as e:
        click.echo(f"sipfleet: cannot start: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        click.echo(f"sipfleet: cannot start: {e}", err=True)
        sys.exit(1)
