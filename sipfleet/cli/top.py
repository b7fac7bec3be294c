"""``sipfleet top``: a live terminal view of a running sipfleet.

Every ``--interval`` seconds it reads ``dispatcher.list``,
``dispatcher.drain_status``, ``sipfleet.status``, ``stats.get_statistics``
and ``sipfleet.events`` (over the ctl socket, or ``--url``) and draws the
destinations (state, active calls and their share, weight, probe latency,
drains), the totals (dialogs, calls/s and requests/s from the deltas of
the counters) and the recent events. ``--once`` prints one frame (two
samples ``--interval`` apart, so the rates are real) and exits.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from sipfleet.cli.dispatcher import flatten_list

__all__ = ["Sample", "render", "take_sample", "top_cmd"]

_STATE = {
    "A": ("active", "green"),
    "I": ("inactive", "red"),
    "D": ("disabled", "dim"),
    "T": ("trying", "yellow"),
}
_BAR = 10  # characters of the share-of-calls bar


@dataclass
class Sample:
    """One reading of the fleet."""

    at: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    draining: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


async def take_sample(backend: Any, events: int = 8) -> Sample:
    """Read the fleet through ``backend`` (``sipfleet.mcp.backend``'s interface)."""
    from sipfleet.mcp.backend import BackendError

    s = Sample(at=time.monotonic())
    try:
        try:
            s.rows = flatten_list(await backend.call("dispatcher.list", []))
        except BackendError as e:
            if e.code != 500:
                raise
            s.rows = []  # "No Destination Sets"
        for d in await backend.call("dispatcher.drain_status", []) or ():
            s.draining[(d["SET"], str(d["URI"]))] = d
        s.status = await backend.call("sipfleet.status", []) or {}
        for line in await backend.call("stats.get_statistics", ["all"]) or ():
            key, _, value = str(line).partition(" = ")
            if value.lstrip("-").isdigit():
                s.counters[key] = int(value)
        if events > 0:
            s.events = list(await backend.call("sipfleet.events", [events]) or ())
    except BackendError as e:
        s.error = str(e)
    return s


def _rate(now: Sample, prev: Sample | None, key: str) -> float | None:
    if prev is None or prev.error or now.error or key not in now.counters:
        return None
    dt = now.at - prev.at
    if dt <= 0 or key not in prev.counters:
        return None
    return max(now.counters[key] - prev.counters[key], 0) / dt


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _uptime(seconds: object) -> str:
    if not isinstance(seconds, int):
        return "?"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _event_text(e: Mapping[str, Any]) -> str:
    skip = {"event", "time"}
    parts = [f"{k}={v}" for k, v in e.items() if k not in skip and v is not None]
    return " ".join(parts)


def render(
    now: Sample,
    prev: Sample | None,
    *,
    source: str,
    extra: Mapping[str, tuple[str, str]] | None = None,
    extra_title: tuple[str, str] = ("", ""),
) -> RenderableType:
    """One frame. ``extra`` adds two columns per duid (the demo's back-end counts)."""
    if now.error:
        return Text(f"sipfleet top: {now.error}", style="bold red")
    st = now.status
    calls = _rate(now, prev, "dialog:processed_dialogs")
    requests = _rate(now, prev, "core:rcv_requests")
    header = Text()
    header.append("sipfleet ", style="bold")
    header.append(f"{st.get('version', '?')}  up {_uptime(st.get('uptime'))}  ")
    accepting = bool(st.get("accepting"))
    header.append(
        "accepting" if accepting else "STOPPING", style="green" if accepting else "bold red"
    )
    header.append(f"  usable {st.get('usable', 0)}/{st.get('destinations', 0)}\n")
    header.append(
        f"dialogs {st.get('dialogs', 0)} ({st.get('early_dialogs', 0)} early)"
        f"  calls/s {_fmt_rate(calls)}  requests/s {_fmt_rate(requests)}"
    )
    header.append(f"\n{source}", style="dim")
    total_load = sum(int(r["load"] or 0) for r in now.rows) or 1
    columns = [
        ("SET", "right"),
        ("DUID", "left"),
        ("URI", "left"),
        ("STATE", "left"),
        ("CALLS", "right"),
        ("SHARE", "left"),
        ("WEIGHT", "right"),
        ("LAT ms", "right"),
        ("DRAIN", "left"),
    ]
    if extra is not None:
        columns[5:5] = [(extra_title[0], "right"), (extra_title[1], "right")]
    rows: list[list[str]] = []
    for r in sorted(now.rows, key=lambda x: (x["set"], str(x["uri"]))):
        flags = str(r["flags"] or "")
        drain = now.draining.get((r["set"], str(r["uri"])))
        word, style = _STATE.get(flags[:1], (flags[:1] or "?", ""))
        if drain is not None:
            word, style = "draining", "yellow"
        load = int(r["load"] or 0)
        filled = round(_BAR * load / total_load)
        lat = r["latency_avg"]
        drain_text = ""
        if drain is not None:
            drain_text = (
                "drained"
                if drain["DRAINED"]
                else f"{drain['ACTIVE_CALLS']} left, {drain.get('FOR') or 0}s"
            )
        cells = [
            str(r["set"]),
            str(r["duid"] or ""),
            str(r["uri"]),
            f"[{style}]{word}[/]" if style else word,
            str(load),
            *(extra.get(str(r["duid"] or r["uri"]), ("", "")) if extra is not None else ()),
            "█" * filled + "·" * (_BAR - filled),
            "" if r["weight"] is None else str(r["weight"]),
            "" if not lat else f"{float(lat):.1f}",
            drain_text,
        ]
        rows.append(cells)
    if not now.draining:  # no drain going on: no DRAIN column
        drop = [c[0] for c in columns].index("DRAIN")
        columns.pop(drop)
        rows = [row[:drop] + row[drop + 1 :] for row in rows]
    table = Table(box=None, header_style="bold", pad_edge=False, expand=False, padding=(0, 1, 0, 0))
    for i, (name, justify) in enumerate(columns):
        # Everything but the URI keeps its width on a narrow terminal; the URI is cut.
        widest = max([len(Text.from_markup(row[i]).plain) for row in rows] + [len(name)])
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=True,
            min_width=None if name == "URI" else widest,
            overflow="ellipsis",
        )
    for cells in rows:
        table.add_row(*cells)
    events = Table(box=None, show_header=False, pad_edge=False)
    # The time and the kind keep their width; a long event's text is what gets cut.
    kinds = [str(e.get("event", "")) for e in now.events]
    events.add_column(style="dim", no_wrap=True, min_width=8)
    events.add_column(style="bold", no_wrap=True, min_width=max(map(len, kinds), default=0))
    events.add_column(overflow="ellipsis", no_wrap=True)
    for e in now.events:
        stamp = str(e.get("time", ""))
        try:
            stamp = datetime.fromisoformat(stamp).astimezone().strftime("%H:%M:%S")
        except ValueError:
            pass
        events.add_row(stamp, str(e.get("event", "")), _event_text(e))
    parts: list[RenderableType] = [header, Text(""), table]
    if now.events:
        parts += [Text(""), Text("recent events", style="bold"), events]
    return Group(*parts)


def _backend(
    url: str | None, token: str | None, socket_path: str | None, run_dir: str | None, timeout: float
) -> Any:
    from sipfleet.control.paths import BINRPC_SOCKET, find_run_dir
    from sipfleet.mcp.backend import ClientBackend

    if url:
        return ClientBackend(url=url, token=token, timeout=timeout)
    if not socket_path:
        rd, _ = find_run_dir(BINRPC_SOCKET, run_dir)
        socket_path = str(rd.path / BINRPC_SOCKET)
    return ClientBackend(socket_path=socket_path, timeout=timeout)


@click.command("top")
@click.option(
    "--interval",
    "-n",
    type=click.FloatRange(0.1, 3600),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--once", is_flag=True, help="Print one frame (two samples --interval apart) and exit."
)
@click.option(
    "--events",
    "n_events",
    type=click.IntRange(0, 100),
    default=8,
    show_default=True,
    help="Recent events shown.",
)
@click.option(
    "--width",
    type=click.IntRange(60, 400),
    help="Frame width (default: the terminal's, 120 when piped).",
)
@click.option(
    "--run-dir", type=click.Path(file_okay=False), help="Run directory of the sipfleet to watch."
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False),
    help="Its ctl socket (sipfleet_ctl).",
)
@click.option("--url", help="Watch over HTTP instead, e.g. http://127.0.0.1:9060/RPC.")
@click.option("--token", envvar="SIPFLEET_RPC_TOKEN", help="Bearer token for --url.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for each reply.")
def top_cmd(
    interval: float,
    once: bool,
    n_events: int,
    width: int | None,
    run_dir: str | None,
    socket_path: str | None,
    url: str | None,
    token: str | None,
    timeout: float,
) -> None:
    """Live view of the fleet: destinations, state, calls, latency, calls/s, events."""
    backend = _backend(url, token, socket_path, run_dir, timeout)
    source = backend.address
    tty = sys.stdout.isatty()
    console = Console(width=width or (None if tty else 120), highlight=False)
    if once:

        async def two() -> tuple[Sample, Sample]:
            first = await take_sample(backend, 0)
            if first.error is None:
                await asyncio.sleep(interval)
            return first, await take_sample(backend, n_events)

        prev, now = asyncio.run(two())
        console.print(render(now, prev, source=source))
        if now.error:
            sys.exit(2)
        return
    from rich.live import Live

    async def loop(live: Live) -> None:
        prev: Sample | None = None
        while True:
            now = await take_sample(backend, n_events)
            live.update(render(now, prev, source=source), refresh=True)
            prev = now
            await asyncio.sleep(interval)

    try:
        with Live(console=console, auto_refresh=False, screen=tty) as live:
            asyncio.run(loop(live))
    except KeyboardInterrupt:
        pass
