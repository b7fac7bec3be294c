"""``sipfleet run``: start the proxy with its config."""

from __future__ import annotations

import logging
import sys

import click

from sipfleet.config import ConfigError, load_config

__all__ = ["run_cmd"]


@click.command("run")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--listen", multiple=True, help="Listener, e.g. udp:127.0.0.1:5060 (repeatable).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def run_cmd(config_path: str | None, listen: tuple[str, ...], log_level: str | None) -> None:
    """Run the proxy (defaults: 127.0.0.1:5060 UDP+TCP)."""
    overrides: dict[str, object] = {}
    if listen:
        overrides["proxy.listen"] = list(listen)
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

    try:
        run(cfg)
    except OSError as e:
        click.echo(f"sipfleet: cannot start: {e}", err=True)
        sys.exit(1)
