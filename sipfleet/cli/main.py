"""The ``sipfleet`` command: one click group, each verb a thin caller."""

from __future__ import annotations

import click

from sipfleet import __version__
from sipfleet.cli.db import db_group
from sipfleet.cli.demo import demo_cmd
from sipfleet.cli.dispatcher import dispatcher_group
from sipfleet.cli.mcp import mcp_cmd
from sipfleet.cli.rpc import rpc_cmd
from sipfleet.cli.run import run_cmd
from sipfleet.cli.top import top_cmd

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sipfleet")
def cli() -> None:
    """sipfleet: SIP edge load balancer and control plane for media-server fleets."""


cli.add_command(run_cmd)
cli.add_command(rpc_cmd)
cli.add_command(dispatcher_group)
cli.add_command(db_group)
cli.add_command(mcp_cmd)
cli.add_command(top_cmd)
cli.add_command(demo_cmd)


def main() -> None:
    cli()
