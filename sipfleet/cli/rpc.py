"""``sipfleet rpc METHOD [PARAMS...]``: call any RPC method of a running sipfleet.

Params as kamctl/kamcli take them: ``i:5`` an int, ``s:5`` a string, a
numeric-looking word a number, anything else a string.

Where it calls (first that applies):

- ``--url http://HOST:PORT/RPC``: JSON-RPC over HTTP (``--token`` or
  ``$SIPFLEET_RPC_TOKEN`` for a protected endpoint);
- ``--socket PATH``: the ctl socket at PATH;
- the ctl socket ``sipfleet_ctl`` in the run directory, found as the server
  finds it (``--run-dir``, ``$SIPFLEET_RUN_DIR``, /run/sipfleet,
  ``$XDG_RUNTIME_DIR/sipfleet``, /tmp/sipfleet-<uid>).

The default is the unix socket, not HTTP: it needs no port or token (the
file's permissions say who may call), the CLI finds it the way the server
made it, and it carries any reply size. The CLI speaks JSON-RPC on it, so
results are the exact JSON an HTTP caller gets (BINRPC, kamcmd's protocol
on the same socket, has no null and no arrays inside structs).

Exit codes: 0 result, 1 fault (``error: CODE - MESSAGE`` on stderr),
2 unreachable or bad usage.
"""

from __future__ import annotations

import re
import sys

import click
import orjson

from sipfleet.cli.client import call_or_exit

__all__ = ["parse_param", "rpc_cmd"]

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def parse_param(text: str) -> object:
    """kamcli/kamctl conventions: ``i:`` int, ``s:`` string, numbers as numbers."""
    if text.startswith("s:"):
        return text[2:]
    if text.startswith("i:"):
        if not _INT.fullmatch(text[2:]):
            raise click.BadParameter(f"{text!r}: 'i:' must prefix an integer")
        return int(text[2:])
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _print_result(result: object, pretty: bool) -> None:
    option = orjson.OPT_INDENT_2 if pretty else 0
    sys.stdout.write(orjson.dumps(result, option=option).decode() + "\n")


@click.command(
    "rpc", context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}
)
@click.argument("method")
@click.argument("params", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--run-dir", type=click.Path(file_okay=False), help="Run directory of the sipfleet to call."
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False),
    help="Its ctl socket (sipfleet_ctl).",
)
@click.option("--url", help="Call over HTTP instead, e.g. http://127.0.0.1:9060/RPC.")
@click.option("--token", envvar="SIPFLEET_RPC_TOKEN", help="Bearer token for --url.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the reply.")
@click.option(
    "--pretty/--compact", default=None, help="JSON layout (default: pretty on a terminal)."
)
def rpc_cmd(
    method: str,
    params: tuple[str, ...],
    run_dir: str | None,
    socket_path: str | None,
    url: str | None,
    token: str | None,
    timeout: float,
    pretty: bool | None,
) -> None:
    """Call METHOD with PARAMS on the running sipfleet and print the JSON result."""
    values = [parse_param(p) for p in params]
    result = call_or_exit(
        "sipfleet rpc",
        method,
        values,
        url=url,
        token=token,
        timeout=timeout,
        socket_path=socket_path,
        run_dir=run_dir,
    )
    _print_result(result, sys.stdout.isatty() if pretty is None else pretty)


if __name__ == "__main__":
    rpc_cmd()
