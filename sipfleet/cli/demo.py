"""``sipfleet demo``: sipfleet with three built-in back ends and a caller, no SIPp.

See ``sipfleet.demo.run``. Exit 0 when calls went through, 1 when none was
answered, 2 when sipfleet could not start.
"""

from __future__ import annotations

import logging
import sys

import click

__all__ = ["demo_cmd"]


def _hold(value: str) -> tuple[float, float]:
    lo, sep, hi = value.partition("-")
    try:
        a = float(lo)
        b = float(hi) if sep else a
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected S or MIN-MAX seconds, e.g. 2-8") from None
    if not 0 < a <= b <= 3600:
        raise click.BadParameter(f"{value!r}: expected 0 < MIN <= MAX <= 3600")
    return a, b


@click.command("demo")
@click.option(
    "--duration",
    type=click.FloatRange(1, 86400),
    help="Stop placing calls after this many seconds (default: Ctrl-C).",
)
@click.option(
    "--rate",
    type=click.FloatRange(0.1, 200),
    default=5.0,
    show_default=True,
    help="New calls a second.",
)
@click.option(
    "--max-calls",
    type=click.IntRange(1, 1000),
    default=30,
    show_default=True,
    help="Calls up at once, at most.",
)
@click.option(
    "--hold", default="2-8", show_default=True, help="Call hold time in seconds, MIN-MAX (random)."
)
@click.option(
    "--algorithm",
    type=int,
    default=4,
    show_default=True,
    help="Dispatcher algorithm (4 round-robin, 10 call-load, 9 weight...).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    help="SIP port of sipfleet (default: a free one).",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    help="Control HTTP port (default 9060 when free, else any).",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    help="Where the control sockets go (default: the usual run directory).",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    help="Seconds between two updates.",
)
@click.option(
    "--plain",
    is_flag=True,
    help="A line per update instead of the live table (the default when not on a terminal).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
)
def demo_cmd(
    duration: float | None,
    rate: float,
    max_calls: int,
    hold: str,
    algorithm: int,
    port: int,
    http_port: int | None,
    run_dir: str | None,
    interval: float,
    plain: bool,
    log_level: str,
) -> None:
    """Run sipfleet with three answering back ends and a caller, and show where calls go.

    Drain and undrain a back end from another terminal (sipfleet dispatcher
    drain demo-2), the dashboard or an MCP client, and watch the calls move.
    """
    from sipfleet.demo.run import DemoOptions, run_demo

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    opts = DemoOptions(
        port=port,
        http_port=http_port,
        run_dir=run_dir,
        rate=rate,
        max_calls=max_calls,
        hold=_hold(hold),
        duration=duration,
        algorithm=algorithm,
        interval=interval,
        live=sys.stdout.isatty() and not plain,
    )
    console = None
    if opts.live:
        from rich.console import Console

        console = Console()

    async def main() -> int:
        return await run_demo(opts, sys.stdout, console)

    try:
        import uvloop
    except ImportError:
        import asyncio

        code = asyncio.run(main())
    else:
        code = uvloop.run(main())
    sys.exit(code)
