"""``sipfleet security ...``: the bans, over the security.* RPC methods.

    sipfleet security bans                         who is banned, why, for how long
    sipfleet security ban ADDRESS [-t SECONDS] [-r REASON]
    sipfleet security unban ADDRESS

Same addressing and exit codes as ``sipfleet dispatcher`` (0 done, 1 the
server refused, 2 unreachable or bad usage).
"""

from __future__ import annotations

from typing import Any

import click

from sipfleet.cli.client import call_or_exit
from sipfleet.cli.dispatcher import _FORMATS, _client_options, _output_format, _print_data

__all__ = ["security_group"]


def _call(method: str, params: list[object], opts: dict[str, Any]) -> Any:
    return call_or_exit(
        "sipfleet security",
        method,
        params,
        url=opts.get("url"),
        token=opts.get("token"),
        timeout=float(opts.get("timeout") or 10.0),
        socket_path=opts.get("socket_path"),
        run_dir=opts.get("run_dir"),
    )


@click.group("security")
def security_group() -> None:
    """Bans of flooders and scanners (the security.* RPC methods)."""


@security_group.command("bans")
@click.option("-o", "--output", "fmt", type=_FORMATS, help="table (on a terminal) or json.")
@_client_options
def bans_cmd(fmt: str | None, **opts: Any) -> None:
    """List banned addresses: reason, since, seconds left, offence."""
    rows = _call("security.bans", [], opts) or []
    fmt = _output_format(fmt)
    if fmt != "table":
        _print_data(rows, fmt)
        return
    if not rows:
        click.echo("no bans")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("ADDRESS", "REASON", "SINCE", "EXPIRES IN", "OFFENCE", "DROPPED")
    for r in rows:
        table.add_row(
            str(r.get("address")),
            str(r.get("reason")),
            str(r.get("since")),
            f"{r.get('expires_in')} s",
            str(r.get("offence")),
            str(r.get("dropped")),
        )
    Console().print(table)


@security_group.command("ban")
@click.argument("address")
@click.option(
    "-t", "--time", "seconds", type=float, help="Seconds (default: [security] ban_time, doubling)."
)
@click.option("-r", "--reason", help="Why (shown by `bans`).")
@_client_options
def ban_cmd(address: str, seconds: float | None, reason: str | None, **opts: Any) -> None:
    """Ban ADDRESS: its packets are dropped silently (never a trunk or a back end)."""
    params: list[object] = [address]
    if seconds is not None or reason:
        params.append(seconds or 0)  # 0: the default time
    if reason:
        params.append(reason)
    out = _call("security.ban", params, opts)
    click.echo(f"banned {out['address']} for {out['expires_in']} s: {out['reason']}")


@security_group.command("unban")
@click.argument("address")
@_client_options
def unban_cmd(address: str, **opts: Any) -> None:
    """Lift the ban of ADDRESS."""
    _call("security.unban", [address], opts)
    click.echo(f"unbanned {address}")
