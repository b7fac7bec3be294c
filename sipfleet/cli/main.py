"""The ``sipfleet`` command: one click group, each verb a thin caller."""

from __future__ import annotations

import click

from sipfleet import __version__
from sipfleet.cli.db import db_group
from sipfleet.cli.demo import demo_cmd
from sipfleet.cli.dispatcher import dispatcher_group
from sipfleet.cli.health import health_cmd
from sipfleet.cli.mcp import mcp_cmd
from sipfleet.cli.rpc import rpc_cmd
from sipfleet.cli.run import run_cmd
from sipfleet.cli.security import security_group
from sipfleet.cli.top import top_cmd

__all__ = ["cli", "main"]


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import platform

    from sipfleet import _accel  # imports the core: only when asked

    click.echo(
        f"sipfleet {__version__} (core: {_accel.describe()}; "
        f"{platform.python_implementation()} {platform.python_version()})"
    )
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show the version and which core (compiled or pure Python) runs, and exit.",
)
def cli() -> None:
    """sipfleet: SIP edge load balancer and control plane for media-server fleets."""


cli.add_command(run_cmd)
cli.add_command(rpc_cmd)
cli.add_command(dispatcher_group)
cli.add_command(db_group)
cli.add_command(mcp_cmd)
cli.add_command(top_cmd)
cli.add_command(demo_cmd)
cli.add_command(health_cmd)
cli.add_command(security_group)


def main() -> None:
    cli()
