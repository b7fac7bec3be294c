"""sipfleet's MCP tools and resources, on the official SDK's ``MCPServer``.

Tools (names fixed: agents and their prompts depend on them):

    list_destinations  get_destination  statistics  explain_route      read-only
    drain  undrain  set_state  add_destination  remove_destination  reload

Every mutating tool takes ``dry_run`` (returns what would change, changes
nothing) and carries ``readOnlyHint: false`` with a ``destructiveHint``; the
ones that take capacity away also take ``force`` and are checked by the
guard rails (``sipfleet.mcp.guard``). Every mutating call, dry runs and
refusals included, is audited: logged here and recorded by the server as an
``audit`` event (``sipfleet.audit``), with who (the MCP client's name and
transport), what and the result.

Resources: ``sipfleet://destinations``, ``sipfleet://status``,
``sipfleet://events``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from sipfleet import __version__
from sipfleet.cli.dispatcher import flatten_list
from sipfleet.config.control import McpConfig
from sipfleet.mcp.backend import Backend, BackendError
from sipfleet.mcp.guard import check_take_out, find_targets, set_summary

__all__ = ["STATE_WORDS", "build_server", "fleet_rows"]

log = logging.getLogger("sipfleet.mcp")

#: set_state's words and the letters Kamailio reads.
STATE_WORDS = {
    "active": "a",
    "inactive": "i",
    "disabled": "d",
    "trying": "t",
    "a": "a",
    "i": "i",
    "d": "d",
    "t": "t",
    "ap": "ap",
    "ip": "ip",
    "dp": "dp",
    "tp": "tp",
}
_STATE_NAMES = {"A": "active", "I": "inactive", "D": "disabled", "T": "trying"}
_POLL = 0.5  # drain wait: seconds between two drain_status reads

_READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def _write(destructive: bool, idempotent: bool) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=False,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )


def fleet_rows(
    listing: object, draining: set[tuple[int, str]] | None = None
) -> list[dict[str, Any]]:
    """``dispatcher.list`` as one row per destination, with a state word."""
    rows = []
    for r in flatten_list(listing):
        flags = str(r.get("flags") or "")
        state = _STATE_NAMES.get(flags[:1], flags[:1] or "?")
        if flags[:1] == "D" and draining is not None and (r["set"], str(r["uri"])) in draining:
            state = "draining"
        rows.append(
            {
                "set": r["set"],
                "uri": r["uri"],
                "duid": r["duid"],
                "state": state,
                "flags": flags,
                "usable": flags[:1] in ("A", "T"),
                "load": r["load"],
                "maxload": r["maxload"],
                "weight": r["weight"],
                "priority": r["priority"],
                "latency_ms": r["latency_avg"],
                "attrs": r["attrs"],
            }
        )
    return rows


def _client_name(ctx: Context | None) -> str:
    if ctx is None:
        return "unknown client"
    try:
        params = ctx.request_context.session.client_params
    except Exception:  # no session (e.g. in-process tests): not worth failing a call
        return "unknown client"
    info = getattr(params, "client_info", None) if params is not None else None
    name = getattr(info, "name", None)
    version = getattr(info, "version", None)
    if not name:
        return "unknown client"
    return f"{name} {version}" if version else str(name)


class _Fleet:
    """The tools' logic over one backend; the MCP wrappers below add who is calling."""

    def __init__(self, backend: Backend, cfg: McpConfig) -> None:
        self.backend = backend
        self.cfg = cfg

    def who(self, ctx: Context | None) -> str:
        return f"mcp {_client_name(ctx)} ({self.backend.transport})"

    async def call(self, method: str, params: list[object], who: str) -> Any:
        try:
            return await self.backend.call(method, params, who=who)
        except BackendError as e:
            raise ToolError(f"{method}: {e}") from None

    async def rows(self, who: str) -> list[dict[str, Any]]:
        try:
            listing = await self.backend.call("dispatcher.list", [], who=who)
        except BackendError as e:
            if e.code == 500 and "No Destination Sets" in str(e):
                return []
            raise ToolError(f"dispatcher.list: {e}") from None
        draining = await self.call("dispatcher.drain_status", [], who)
        keys = {(d["SET"], str(d["URI"])) for d in draining or ()}
        return fleet_rows(listing, keys)

    async def audit(self, who: str, action: str, result: str, details: dict[str, Any]) -> None:
        details = {k: v for k, v in details.items() if v is not None}
        log.info("audit: %s: %s: %s %s", who, action, result, details)
        try:
            await self.backend.call("sipfleet.audit", [who, action, result, details], who=who)
        except BackendError as e:
            log.warning("audit: the server did not record %r: %s", action, e)

    async def refuse_or_go(
        self,
        who: str,
        action: str,
        rows: list[dict[str, Any]],
        taking: list[dict[str, Any]],
        force: bool,
        details: dict[str, Any],
        dry_run: bool,
    ) -> list[str]:
        """The guard rails: raise a refusal (audited), or return the overridden ones.

        A dry run is refused the same way (``would be refused``): it answers
        what the real call would do.
        """
        refusals = [r.reason for r in check_take_out(rows, taking, self.cfg.max_out_share)]
        if refusals and not force:
            text = "; ".join(refusals) + " (pass force=true to do it anyway)"
            text = ("dry run: would be refused: " if dry_run else "refused: ") + text
            await self.audit(who, action, text, details)
            raise ToolError(text)
        return refusals

    def targets(
        self, rows: list[dict[str, Any]], target: str, set_id: int | None
    ) -> list[dict[str, Any]]:
        found = find_targets(rows, target, set_id)
        if not found:
            where = f" in set {set_id}" if set_id is not None else ""
            raise ToolError(
                f"no destination {target!r}{where} (a duid, or a URI such as sip:10.0.0.5:5060)"
            )
        return found


def _change(row: dict[str, Any], to: str) -> dict[str, Any]:
    return {
        "set": row["set"],
        "uri": row["uri"],
        "duid": row["duid"],
        "from": row["state"],
        "to": to,
        "active_calls": row["load"],
    }


def build_server(backend: Backend, cfg: McpConfig | None = None) -> MCPServer:
    """The MCP server: tools and resources over ``backend``."""
    cfg = cfg or McpConfig()
    fleet = _Fleet(backend, cfg)
    server: MCPServer = MCPServer(
        "sipfleet",
        version=__version__,
        instructions=(
            "sipfleet balances SIP calls over destination sets of media servers. "
            "Read the fleet with list_destinations; ask explain_route where a call would go; "
            "take a destination out gracefully with drain (wait=true waits until its calls "
            "have ended) and put it back with undrain. Mutating tools take dry_run=true to "
            "preview. Guard rails refuse to take the last usable destination of a set, or "
            f"more than {cfg.max_out_share:.0%} of a set, out of service unless force=true."
        ),
    )

    @server.tool(
        title="List destinations",
        description="Every destination (or those of one set) with state, active calls, "
        "weight and probe latency, and per set how many are usable.",
        annotations=_READ,
    )
    async def list_destinations(
        set: int | None = None, ctx: Context | None = None
    ) -> dict[str, Any]:
        rows = await fleet.rows(fleet.who(ctx))
        if set is not None:
            rows = [r for r in rows if r["set"] == set]
        return {"destinations": rows, "sets": set_summary(rows)}

    @server.tool(
        title="Get a destination",
        description="One destination by duid or URI (all sets, or one): state, calls, "
        "drain status (since when, by whom, drained or not).",
        annotations=_READ,
    )
    async def get_destination(
        target: str, set: int | None = None, ctx: Context | None = None
    ) -> dict[str, Any]:
        who = fleet.who(ctx)
        rows = fleet.targets(await fleet.rows(who), target, set)
        params: list[object] = [set, target] if set is not None else [target]
        status = await fleet.call("dispatcher.drain_status", params, who)
        by_key = {(s["SET"], str(s["URI"]).lower()): s for s in status or ()}
        for r in rows:
            s = by_key.get((r["set"], str(r["uri"]).lower()))
            if s is not None:
                r["admin"] = s["STATE"]
                r["health"] = s["HEALTH"]
                r["since"] = s["SINCE"]
                r["by"] = s["BY"]
                r["drained"] = s["DRAINED"]
        return {"destinations": rows}

    @server.tool(
        title="Drain a destination",
        description="Stop new calls to a destination (duid, or URI with set) while its calls "
        "finish; probing goes on. wait=true returns when no call is left (or after timeout "
        "seconds) with drained true/false. dry_run=true only says what would change. "
        "Refused for the last usable destination of a set, or past max_out_share, unless "
        "force=true.",
        annotations=_write(destructive=True, idempotent=True),
    )
    async def drain(
        target: str,
        set: int | None = None,
        wait: bool = False,
        timeout: float = 60.0,
        dry_run: bool = False,
        force: bool = False,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        who = fleet.who(ctx)
        details = {"target": target, "set": set, "wait": wait, "dry_run": dry_run, "force": force}
        rows = await fleet.rows(who)
        found = fleet.targets(rows, target, set)
        action = f"drain {target}"
        overridden = await fleet.refuse_or_go(who, action, rows, found, force, details, dry_run)
        changes = [_change(r, "draining") for r in found if r["state"] != "draining"]
        if dry_run:
            await fleet.audit(who, action, f"dry run: {len(changes)} would change", details)
            return {"dry_run": True, "would_change": changes, "overridden": overridden}
        params: list[object] = [set, target] if set is not None else [target]
        status = await fleet.call("dispatcher.drain", params, who)
        out: dict[str, Any] = {"changed": changes, "overridden": overridden}
        if wait:
            limit = min(max(timeout, 0.0), cfg.max_wait)
            start = time.monotonic()
            while True:
                status = await fleet.call("dispatcher.drain_status", params, who)
                if all(s["DRAINED"] for s in status) or time.monotonic() - start >= limit:
                    break
                if not all(s["STATE"] == "draining" for s in status):
                    break  # someone ended the drain meanwhile
                await asyncio.sleep(_POLL)
            out["waited_s"] = round(time.monotonic() - start, 3)
        out["drained"] = all(s["DRAINED"] for s in status)
        out["active_calls"] = sum(int(s["ACTIVE_CALLS"]) for s in status)
        out["destinations"] = status
        result = "drained" if out["drained"] else f"draining, {out['active_calls']} calls left"
        await fleet.audit(who, action, result, details)
        return out

    @server.tool(
        title="Undrain a destination",
        description="End a drain: the destination takes new calls again. dry_run=true only "
        "says what would change.",
        annotations=_write(destructive=False, idempotent=True),
    )
    async def undrain(
        target: str, set: int | None = None, dry_run: bool = False, ctx: Context | None = None
    ) -> dict[str, Any]:
        who = fleet.who(ctx)
        details = {"target": target, "set": set, "dry_run": dry_run}
        rows = await fleet.rows(who)
        found = fleet.targets(rows, target, set)
        changes = [_change(r, "active") for r in found if r["state"] == "draining"]
        action = f"undrain {target}"
        if dry_run:
            await fleet.audit(who, action, f"dry run: {len(changes)} would change", details)
            return {"dry_run": True, "would_change": changes}
        params: list[object] = [set, target] if set is not None else [target]
        status = await fleet.call("dispatcher.undrain", params, who)
        await fleet.audit(who, action, f"ok: {len(changes)} changed", details)
        return {"changed": changes, "destinations": status}

    @server.tool(
        title="Set a destination's state",
        description="Set state (active, inactive, disabled, trying; or Kamailio's a/i/d/t, "
        "ap/ip with probing) of a destination (duid, or URI with set). disabled survives "
        "reloads and restarts; active also ends a drain. dry_run=true only says what would "
        "change. Taking the last usable destination of a set (or past max_out_share) out is "
        "refused unless force=true.",
        annotations=_write(destructive=True, idempotent=True),
    )
    async def set_state(
        state: str,
        target: str,
        set: int | None = None,
        dry_run: bool = False,
        force: bool = False,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        who = fleet.who(ctx)
        letters = STATE_WORDS.get(state.strip().lower())
        if letters is None:
            raise ToolError(f"unknown state {state!r}: give active, inactive, disabled or trying")
        details = {"state": state, "target": target, "set": set, "dry_run": dry_run, "force": force}
        rows = await fleet.rows(who)
        found = fleet.targets(rows, target, set)
        action = f"set_state {letters} {target}"
        word = {"a": "active", "i": "inactive", "d": "disabled", "t": "trying"}[letters[0]]
        overridden: list[str] = []
        if letters[0] in ("i", "d"):
            overridden = await fleet.refuse_or_go(who, action, rows, found, force, details, dry_run)
        changes = [_change(r, word) for r in found if r["state"] != word]
        if dry_run:
            await fleet.audit(who, action, f"dry run: {len(changes)} would change", details)
            return {"dry_run": True, "would_change": changes, "overridden": overridden}
        by_uri = ":" in target
        for r in found:
            if by_uri:
                await fleet.call("dispatcher.set_state", [letters, r["set"], r["uri"]], who)
            else:
                await fleet.call("dispatcher.set_duid_state", [letters, r["set"], target], who)
        await fleet.audit(who, action, f"ok: {len(changes)} changed", details)
        return {"changed": changes, "overridden": overridden}

    @server.tool(
        title="Add a destination",
        description="Add a destination URI to a set (kept in the store, so reloads keep it); "
        "attrs as Kamailio's, e.g. 'duid=media-4;weight=50'. dry_run=true only says what "
        "would change.",
        annotations=_write(destructive=False, idempotent=False),
    )
    async def add_destination(
        set: int,
        uri: str,
        flags: int = 0,
        priority: int = 0,
        attrs: str = "",
        dry_run: bool = False,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        who = fleet.who(ctx)
        details = {"set": set, "uri": uri, "flags": flags, "priority": priority, "attrs": attrs}
        action = f"add_destination {set} {uri}"
        rows = await fleet.rows(who)
        exists = find_targets(rows, uri, set)
        if dry_run:
            note = "already in the set" if exists else "would be added"
            await fleet.audit(who, action, f"dry run: {note}", details)
            return {
                "dry_run": True,
                "would_add": [] if exists else [details],
                "exists": bool(exists),
            }
        result = await fleet.call("dispatcher.add", [set, uri, flags, priority, attrs], who)
        await fleet.audit(who, action, str(result), details)
        return {"result": result, "added": details}

    @server.tool(
        title="Remove a destination",
        description="Remove a destination URI from a set (and from the store); its calls go on. "
        "dry_run=true only says what would change. Removing the last usable destination of a "
        "set (or past max_out_share) is refused unless force=true.",
        annotations=_write(destructive=True, idempotent=True),
    )
    async def remove_destination(
        set: int,
        uri: str,
        dry_run: bool = False,
        force: bool = False,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        who = fleet.who(ctx)
        details = {"set": set, "uri": uri, "dry_run": dry_run, "force": force}
        action = f"remove_destination {set} {uri}"
        rows = await fleet.rows(who)
        found = fleet.targets(rows, uri, set)
        overridden = await fleet.refuse_or_go(who, action, rows, found, force, details, dry_run)
        changes = [_change(r, "removed") for r in found]
        if dry_run:
            await fleet.audit(who, action, "dry run: would remove", details)
            return {"dry_run": True, "would_change": changes, "overridden": overridden}
        result = await fleet.call("dispatcher.remove", [set, uri], who)
        await fleet.audit(who, action, str(result), details)
        return {"result": result, "changed": changes, "overridden": overridden}

    @server.tool(
        title="Reload destinations",
        description="Reread the destination store and swap the sets in; state, load and "
        "latency of destinations that remain are kept. dry_run=true shows what is loaded now "
        "and changes nothing (the store's new contents are only read by the reload).",
        annotations=_write(destructive=True, idempotent=True),
    )
    async def reload(dry_run: bool = False, ctx: Context | None = None) -> dict[str, Any]:
        who = fleet.who(ctx)
        rows = await fleet.rows(who)
        if dry_run:
            await fleet.audit(who, "reload", "dry run", {"dry_run": True})
            return {
                "dry_run": True,
                "would": "reread the store and swap the sets in; kept destinations keep "
                "their state",
                "now": set_summary(rows),
            }
        result = await fleet.call("dispatcher.reload", [], who)
        after = await fleet.rows(who)
        await fleet.audit(who, "reload", str(result), {})
        return {"result": result, "before": set_summary(rows), "after": set_summary(after)}

    @server.tool(
        title="Statistics",
        description="Counters (Kamailio names: core:, tmx:, dialog:, sipfleet:) and a status "
        "summary; group e.g. 'all', 'dialog:', 'sipfleet:'.",
        annotations=_READ,
    )
    async def statistics(group: str = "all", ctx: Context | None = None) -> dict[str, Any]:
        who = fleet.who(ctx)
        lines = await fleet.call("stats.get_statistics", [group], who)
        counters: dict[str, int | str] = {}
        for line in lines or ():
            key, _, value = str(line).partition(" = ")
            counters[key] = int(value) if value.lstrip("-").isdigit() else value
        status = await fleet.call("sipfleet.status", [], who)
        return {"status": status, "counters": counters}

    @server.tool(
        title="Explain a route",
        description="Which destination a request would go to, and why: the [[route]] that "
        "matches, its sets and algorithm, the candidates in failover order and each "
        "destination left out with the reason. Changes nothing (not even round-robin).",
        annotations=_READ,
    )
    async def explain_route(
        ruri: str,
        method: str = "INVITE",
        headers: dict[str, str] | None = None,
        source: str = "127.0.0.1",
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await fleet.call(
            "sipfleet.explain_route", [ruri, method, headers or {}, source], fleet.who(ctx)
        )
        return result

    @server.resource(
        "sipfleet://destinations",
        name="destinations",
        description="Every destination with state, active calls, weight and latency (JSON).",
        mime_type="application/json",
    )
    async def destinations_resource() -> dict[str, Any]:
        rows = await fleet.rows("mcp resource")
        return {"destinations": rows, "sets": set_summary(rows)}

    @server.resource(
        "sipfleet://status",
        name="status",
        description="Summary: version, uptime, sets, destinations, usable, dialogs, events.",
        mime_type="application/json",
    )
    async def status_resource() -> dict[str, Any]:
        status: dict[str, Any] = await fleet.call("sipfleet.status", [], "mcp resource")
        return status

    @server.resource(
        "sipfleet://events",
        name="events",
        description="The 100 most recent events (dst-up, dst-down, state-changed, drained, "
        "audit ...), oldest first.",
        mime_type="application/json",
    )
    async def events_resource() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = await fleet.call("sipfleet.events", [100], "mcp resource")
        return events

    return server
