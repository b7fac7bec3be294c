"""``sipfleet dispatcher ...``: friendly verbs over the dispatcher.* RPC methods.

Each verb is one call through the same client and the same addressing as
``sipfleet rpc`` (the ctl socket in the run directory by default;
``--run-dir``, ``--socket`` or ``--url``), with the same exit codes: 0
done, 1 the server refused (``error: CODE - MESSAGE``), 2 unreachable or
bad usage.

``list`` prints a table on a terminal and JSON (Kamailio's own shape) when
piped; ``-o`` chooses: table, json, or yaml (needs PyYAML).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import orjson

from sipfleet.cli.client import call_or_exit

__all__ = ["dispatcher_group", "flatten_list"]

_F = TypeVar("_F", bound=Callable[..., Any])
_FORMATS = click.Choice(["table", "json", "yaml"])


def _client_options(fn: _F) -> _F:
    """The addressing options of ``sipfleet rpc``, on every verb."""
    return _client_options_named("--timeout")(fn)


def _client_options_named(timeout_flag: str) -> Callable[[_F], _F]:
    def deco(fn: _F) -> _F:
        return _add_client_options(fn, timeout_flag)

    return deco


def _add_client_options(fn: _F, timeout_flag: str) -> _F:
    options = [
        click.option(
            "--run-dir",
            type=click.Path(file_okay=False),
            help="Run directory of the sipfleet to call.",
        ),
        click.option(
            "--socket",
            "socket_path",
            type=click.Path(dir_okay=False),
            help="Its ctl socket (sipfleet_ctl).",
        ),
        click.option("--url", help="Call over HTTP instead, e.g. http://127.0.0.1:9060/RPC."),
        click.option("--token", envvar="SIPFLEET_RPC_TOKEN", help="Bearer token for --url."),
        click.option(
            timeout_flag,
            "timeout",
            default=10.0,
            show_default=True,
            help="Seconds to wait for the reply.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _call(method: str, params: Sequence[object], opts: dict[str, Any]) -> Any:
    """Call ``method``; return its result, or exit 1 (fault) / 2 (unreachable)."""
    return call_or_exit(
        "sipfleet dispatcher",
        method,
        params,
        url=opts.get("url"),
        token=opts.get("token"),
        timeout=float(opts.get("timeout") or 10.0),
        socket_path=opts.get("socket_path"),
        run_dir=opts.get("run_dir"),
    )


def _output_format(fmt: str | None) -> str:
    return fmt or ("table" if sys.stdout.isatty() else "json")


def _print_data(data: object, fmt: str) -> None:
    if fmt == "yaml":
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            click.echo(
                "sipfleet dispatcher: -o yaml needs PyYAML (pip install pyyaml); "
                "-o json gives the same data",
                err=True,
            )
            sys.exit(2)
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
        return
    option = orjson.OPT_INDENT_2 if sys.stdout.isatty() else 0
    sys.stdout.write(orjson.dumps(data, option=option).decode() + "\n")


def flatten_list(result: object) -> list[dict[str, Any]]:
    """``dispatcher.list``'s nested records as one row per destination."""
    rows: list[dict[str, Any]] = []
    if not isinstance(result, dict):
        return rows
    for record in result.get("RECORDS") or ():
        s = record.get("SET", {}) if isinstance(record, dict) else {}
        for item in s.get("TARGETS") or ():
            dest = item.get("DEST", {}) if isinstance(item, dict) else {}
            attrs = dest.get("ATTRS") or {}
            latency = dest.get("LATENCY") or {}
            runtime = dest.get("RUNTIME") or {}
            rows.append(
                {
                    "set": s.get("ID"),
                    "uri": dest.get("URI"),
                    "flags": dest.get("FLAGS", ""),
                    "priority": dest.get("PRIORITY"),
                    "duid": attrs.get("DUID"),
                    "weight": attrs.get("WEIGHT"),
                    "maxload": attrs.get("MAXLOAD"),
                    "load": runtime.get("DLGLOAD"),
                    "latency_avg": latency.get("AVG"),
                    "latency_est": latency.get("EST"),
                    "timeouts": latency.get("TIMEOUT"),
                    "attrs": attrs.get("BODY"),
                }
            )
    return rows


_STATE_WORDS = {"A": "active", "I": "inactive", "D": "disabled", "T": "trying"}
_STATE_STYLE = {"A": "green", "I": "red", "D": "dim", "T": "yellow"}


def _state_text(flags: str) -> str:
    word = _STATE_WORDS.get(flags[:1], flags[:1] or "?")
    extra = {"P": ", probing", "N": ", no ping"}.get(flags[1:2], "")
    return f"{flags} {word}{extra}"


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    def cell(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.1f}"
        return str(value)

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("SET", "URI", "STATE", "PRIO", "DUID", "WEIGHT", "LOAD", "MAXLOAD", "LAT ms"):
        justify = "left" if name in ("URI", "STATE", "DUID") else "right"
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.add_column("ATTRS", no_wrap=True)
    for r in rows:
        flags = str(r["flags"])
        style = _STATE_STYLE.get(flags[:1], "")
        latency = r["latency_avg"]
        table.add_row(
            cell(r["set"]),
            cell(r["uri"]),
            f"[{style}]{_state_text(flags)}[/]" if style else _state_text(flags),
            cell(r["priority"]),
            cell(r["duid"]),
            cell(r["weight"]),
            cell(r["load"]),
            cell(r["maxload"]),
            cell(latency),
            cell(r["attrs"]),
        )
    # Never cut a URI or an attribute to fit: a row wider than the terminal wraps there,
    # and piped output (-o table > file) keeps one line per destination.
    Console(width=10_000).print(table)


@click.group("dispatcher", context_settings={"help_option_names": ["-h", "--help"]})
def dispatcher_group() -> None:
    """Destination sets of a running sipfleet (Kamailio's dispatcher.* RPC)."""


@dispatcher_group.command("list")
@click.option("--set", "set_id", type=int, help="Only this destination set.")
@click.option(
    "-o", "--output", "fmt", type=_FORMATS, help="Default: table on a terminal, else json."
)
@click.option("--full", is_flag=True, help="Kamailio's 'full' listing (host, IP, port...).")
@_client_options
def list_cmd(set_id: int | None, fmt: str | None, full: bool, **opts: Any) -> None:
    """List the destination sets with state, priority, load and latency."""
    result = _call("dispatcher.list", ["full"] if full else [], opts)
    if set_id is not None and isinstance(result, dict):
        records = [r for r in result.get("RECORDS") or () if r.get("SET", {}).get("ID") == set_id]
        if not records:
            click.echo(f"error: destination set {set_id} not found", err=True)
            sys.exit(1)
        result = {"NRSETS": len(records), "RECORDS": records}
    fmt = _output_format(fmt)
    if fmt == "table":
        _print_table(flatten_list(result))
    else:
        _print_data(result, fmt)


@dispatcher_group.command("set-state")
@click.argument("state")
@click.argument("set_id", metavar="SET", type=int)
@click.argument("uri", required=False)
@click.option("--duid", help="Match the destination by its duid attribute instead of URI.")
@_client_options
def set_state_cmd(state: str, set_id: int, uri: str | None, duid: str | None, **opts: Any) -> None:
    """Set STATE of URI (or --duid DUID, or 'all') in SET.

    STATE as Kamailio reads it: a[ctive], i[nactive], d[isabled], t[rying],
    or 1/0/2/3; a second letter p adds probing (e.g. ap, ip). A disabled
    state survives reloads and restarts.
    """
    if (uri is None) == (duid is None):
        raise click.UsageError("give either URI (or 'all') or --duid DUID")
    if duid is not None:
        result = _call("dispatcher.set_duid_state", [state, set_id, duid], opts)
    else:
        result = _call("dispatcher.set_state", [state, set_id, uri], opts)
    click.echo(result)


@dispatcher_group.command("reload")
@_client_options
def reload_cmd(**opts: Any) -> None:
    """Reread the destination store and swap the sets in (state of kept entries stays)."""
    click.echo(_call("dispatcher.reload", [], opts))


@dispatcher_group.command("add")
@click.argument("set_id", metavar="SET", type=int)
@click.argument("uri")
@click.option("--flags", type=int, default=0, show_default=True, help="Kamailio flag bits.")
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--attrs", help="Attributes, e.g. 'duid=media-3;weight=50'.")
@_client_options
def add_cmd(
    set_id: int, uri: str, flags: int, priority: int, attrs: str | None, **opts: Any
) -> None:
    """Add URI to SET (kept in the store: a later reload keeps it)."""
    params: list[object] = [set_id, uri, flags, priority]
    if attrs is not None:
        params.append(attrs)
    click.echo(_call("dispatcher.add", params, opts))


@dispatcher_group.command("rm")
@click.argument("set_id", metavar="SET", type=int)
@click.argument("uri")
@_client_options
def rm_cmd(set_id: int, uri: str, **opts: Any) -> None:
    """Remove URI from SET (and from the store)."""
    click.echo(_call("dispatcher.remove", [set_id, uri], opts))


@dispatcher_group.command("hash")
@click.argument("nslots", type=int)
@click.argument("v1")
@click.argument("v2", required=False)
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "yaml"]))
@_client_options
def hash_cmd(nslots: int, v1: str, v2: str | None, fmt: str | None, **opts: Any) -> None:
    """Kamailio's dispatcher hash of V1 [V2] and its slot among NSLOTS."""
    result = _call("dispatcher.hash", [nslots, v1] if v2 is None else [nslots, v1, v2], opts)
    fmt = _output_format(fmt)
    if fmt == "table" and isinstance(result, dict):
        click.echo(f"hashid {result.get('hashid')}  slot {result.get('slot')}")
    else:
        _print_data(result, fmt)


if __name__ == "__main__":
    dispatcher_group()


def _drain_target(target: str, set_id: int | None) -> list[object]:
    return [set_id, target] if set_id is not None else [target]


def _print_drain(rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt != "table":
        _print_data(rows, fmt)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("SET", "URI", "DUID", "STATE", "HEALTH", "ACTIVE CALLS", "SINCE", "DRAINED"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["SET"]),
            r["URI"],
            r.get("DUID") or "",
            r["STATE"],
            r["HEALTH"],
            str(r["ACTIVE_CALLS"]),
            r.get("SINCE") or "",
            "yes" if r["DRAINED"] else "no",
        )
    Console().print(table)


@dispatcher_group.command("drain")
@click.argument("target")
@click.option("--set", "set_id", type=int, help="Only in this set (TARGET a URI or duid).")
@click.option("--wait", is_flag=True, help="Wait, showing the calls left, until drained.")
@click.option(
    "--timeout",
    "wait_timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="With --wait: give up after this many seconds (exit 3).",
)
@click.option("-o", "--output", "fmt", type=_FORMATS)
@_client_options_named("--rpc-timeout")
def drain_cmd(
    target: str,
    set_id: int | None,
    wait: bool,
    wait_timeout: float,
    fmt: str | None,
    **opts: Any,
) -> None:
    """Stop new calls to TARGET (a duid, or a URI with --set); calls on it finish.

    With --wait, exits 0 once no call is left, or 3 with the count still
    open when --timeout runs out.
    """
    rows = _call("dispatcher.drain", _drain_target(target, set_id), opts)
    if not wait:
        _print_drain(rows, _output_format(fmt))
        return
    sys.exit(_wait_drained(target, set_id, rows, wait_timeout, opts))


def _wait_drained(
    target: str,
    set_id: int | None,
    rows: list[dict[str, Any]],
    timeout: float,
    opts: dict[str, Any],
) -> int:
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    start = time.monotonic()
    first = max(sum(r["ACTIVE_CALLS"] for r in rows), 1)
    left = sum(r["ACTIVE_CALLS"] for r in rows)
    tty = sys.stderr.isatty()
    progress = Progress(
        TextColumn("draining {task.fields[target]}"),
        BarColumn(),
        TextColumn("{task.fields[left]} calls left"),
        TimeElapsedColumn(),
        disable=not tty,
        transient=False,
    )
    with progress:
        task = progress.add_task("drain", total=first, target=target, left=left)
        while True:
            rows = _call("dispatcher.drain_status", _drain_target(target, set_id), opts)
            left = sum(r["ACTIVE_CALLS"] for r in rows)
            progress.update(task, completed=max(first - left, 0), left=left)
            if all(r["DRAINED"] for r in rows):
                progress.update(task, completed=first)
                break
            if not all(r["STATE"] == "draining" for r in rows):
                click.echo(f"{target}: the drain was ended by someone else", err=True)
                return 4
            if time.monotonic() - start >= timeout:
                click.echo(f"{target}: {left} calls still open after {timeout:.0f} s", err=True)
                return 3
            if not tty:
                click.echo(f"{target}: {left} calls left", err=True)
            time.sleep(0.5)
    click.echo(f"{target}: drained after {time.monotonic() - start:.1f} s")
    return 0


@dispatcher_group.command("undrain")
@click.argument("target")
@click.option("--set", "set_id", type=int, help="Only in this set (TARGET a URI or duid).")
@click.option("-o", "--output", "fmt", type=_FORMATS)
@_client_options
def undrain_cmd(target: str, set_id: int | None, fmt: str | None, **opts: Any) -> None:
    """End the drain of TARGET: it takes new calls again."""
    rows = _call("dispatcher.undrain", _drain_target(target, set_id), opts)
    _print_drain(rows, _output_format(fmt))


@dispatcher_group.command("drain-status")
@click.argument("target", required=False)
@click.option("--set", "set_id", type=int, help="Only in this set (TARGET a URI or duid).")
@click.option("-o", "--output", "fmt", type=_FORMATS)
@_client_options
def drain_status_cmd(target: str | None, set_id: int | None, fmt: str | None, **opts: Any) -> None:
    """Draining destinations (or TARGET): calls left, since when, drained or not."""
    params = _drain_target(target, set_id) if target else []
    rows = _call("dispatcher.drain_status", params, opts)
    _print_drain(rows, _output_format(fmt))
