"""The MCP server with the official SDK's client, over stdio (``sipfleet mcp --url``)
and over streamable HTTP (``/mcp`` on the control HTTP server) against a running
sipfleet: list the fleet, dry-run a drain (nothing changes), drain and wait, be
refused taking the last usable destination of a set out, and see every action
in the audit events."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fleet
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from sipp import SippEnv, sipfleet_command

pytestmark = pytest.mark.e2e

DESTS = [
    fleet.Dest("sip:127.0.0.1:7", 1, attrs="duid=media-1"),
    fleet.Dest("sip:127.0.0.1:9", 1, attrs="duid=media-2"),
    fleet.Dest("sip:127.0.0.1:13", 1, attrs="duid=media-3"),
    fleet.Dest("sip:127.0.0.1:19", 2, attrs="duid=solo"),
]
TOOLS = {
    "list_destinations",
    "get_destination",
    "drain",
    "undrain",
    "set_state",
    "add_destination",
    "remove_destination",
    "reload",
    "statistics",
    "explain_route",
}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[SippEnv]:
    """sipfleet processes of one test (no SIPp needed here)."""
    e = SippEnv(tmp_path)
    try:
        yield e
    finally:
        e.close()
        print(e.report())


@asynccontextmanager
async def _client(transport: str, proxy: fleet.Fleet) -> AsyncIterator[Client]:
    if transport == "http":
        target: Any = proxy.url.removesuffix("/RPC") + "/mcp"
    else:
        cmd = sipfleet_command()
        target = StdioServerParameters(
            command=cmd[0], args=[*cmd[1:], "mcp", "--url", proxy.url], env=dict(os.environ)
        )
    async with Client(target, read_timeout_seconds=30) as client:
        yield client


def _run(
    transport: str, proxy: fleet.Fleet, body: Callable[[Client], Coroutine[Any, Any, None]]
) -> None:
    async def go() -> None:
        async with _client(transport, proxy) as client:
            await asyncio.wait_for(body(client), 60)

    asyncio.run(go())


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_mcp_session(env: SippEnv, transport: str) -> None:
    proxy = fleet.proxy(env, DESTS)
    before = proxy.flags()
    assert set(before.values()) == {"AX"}

    async def session(c: Client) -> None:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert set(tools) == TOOLS
        for name in ("list_destinations", "get_destination", "statistics", "explain_route"):
            a = tools[name].annotations
            assert a is not None and a.read_only_hint is True and a.idempotent_hint is True
        for name in TOOLS - {"list_destinations", "get_destination", "statistics", "explain_route"}:
            a = tools[name].annotations
            assert a is not None and a.read_only_hint is False and a.destructive_hint is not None
            assert "dry_run" in tools[name].input_schema["properties"], name
        assert tools["drain"].annotations.destructive_hint is True  # type: ignore[union-attr]
        assert {"target", "wait", "timeout"} <= set(tools["drain"].input_schema["properties"])

        listed = await c.call_tool("list_destinations", {})
        assert not listed.is_error
        rows = listed.structured_content["destinations"]
        assert {r["duid"]: r["state"] for r in rows} == {
            "media-1": "active",
            "media-2": "active",
            "media-3": "active",
            "solo": "active",
        }
        assert {s["set"]: s["usable"] for s in listed.structured_content["sets"]} == {1: 3, 2: 1}

        # A dry run says what would change and changes nothing.
        dry = await c.call_tool("drain", {"target": "media-2", "dry_run": True})
        assert not dry.is_error, _text(dry)
        (change,) = dry.structured_content["would_change"]
        assert change["uri"] == "sip:127.0.0.1:9" and change["to"] == "draining"
        assert proxy.flags() == before

        # Drain and wait: no calls on it, so it is drained at once.
        drained = await c.call_tool("drain", {"target": "media-2", "wait": True, "timeout": 10})
        assert not drained.is_error, _text(drained)
        assert drained.structured_content["drained"] is True
        assert drained.structured_content["active_calls"] == 0
        assert proxy.flags()["sip:127.0.0.1:9"].startswith("D")
        status = proxy.rpc("dispatcher.drain_status", "media-2")
        assert status[0]["STATE"] == "draining" and status[0]["DRAINED"] is True

        # The last usable destination of a set: refused, and nothing changes.
        refused = await c.call_tool("set_state", {"state": "disabled", "target": "solo"})
        assert refused.is_error
        assert "last usable" in _text(refused) and "force" in _text(refused)
        assert proxy.flags()["sip:127.0.0.1:19"] == "AX"
        dry_refused = await c.call_tool(
            "set_state", {"state": "disabled", "target": "solo", "dry_run": True}
        )
        assert dry_refused.is_error and "would be refused" in _text(dry_refused)
        # More than max_out_share (0.5) of set 1: refused too.
        share = await c.call_tool("drain", {"target": "media-3"})
        assert share.is_error and "max_out_share" in _text(share)
        assert proxy.flags()["sip:127.0.0.1:13"] == "AX"
        # force overrides, and says what it overrode.
        forced = await c.call_tool(
            "set_state", {"state": "disabled", "target": "solo", "force": True}
        )
        assert not forced.is_error, _text(forced)
        assert forced.structured_content["overridden"]
        assert proxy.flags()["sip:127.0.0.1:19"].startswith("D")

        back = await c.call_tool("undrain", {"target": "media-2"})
        assert not back.is_error
        assert proxy.flags()["sip:127.0.0.1:9"] == "AX"

        why = await c.call_tool("explain_route", {"ruri": "sip:svc@example.com"})
        assert not why.is_error
        assert why.structured_content["route"] == "default"
        assert why.structured_content["destination"] in {
            "sip:127.0.0.1:7",
            "sip:127.0.0.1:9",
            "sip:127.0.0.1:13",
        }

        resources = {str(r.uri) for r in (await c.list_resources()).resources}
        assert {"sipfleet://destinations", "sipfleet://status", "sipfleet://events"} <= resources
        status_doc = await c.read_resource("sipfleet://status")
        assert '"destinations": 4' in status_doc.contents[0].text  # type: ignore[union-attr]

    _run(transport, proxy, session)

    # Every action is audited in the server's events, with who and the result.
    audits = [e for e in proxy.rpc("sipfleet.events", 100) if e["event"] == "audit"]
    assert [(a["action"], a["result"].split(":")[0]) for a in audits] == [
        ("drain media-2", "dry run"),
        ("drain media-2", "drained"),
        ("set_state d solo", "refused"),
        ("set_state d solo", "dry run"),
        ("drain media-3", "refused"),
        ("set_state d solo", "ok"),
        ("undrain media-2", "ok"),
    ]
    assert all(a["who"].endswith(f"({transport})") for a in audits)
    assert proxy.statistic("events_audit") == len(audits)


def test_mcp_http_follows_the_token_and_host_rules(tmp_path: Path) -> None:
    import kamailio_ref as ref

    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "probe", "version": "1"},
        },
    }
    body = json.dumps(init).encode()
    accept = {"Accept": "application/json, text/event-stream"}
    token = {"Authorization": "Bearer s3cret-0123456789abcdef"}
    config = {"http": {"token": "s3cret-0123456789abcdef"}}
    with ref.sipfleet_running(tmp_path, lambda registry: None, config=config) as control:
        port = control.http_port

        def post(headers: dict[str, str]) -> Any:
            return ref.http_post("127.0.0.1", port, "/mcp", body, headers=headers)

        assert post(accept).status == 401
        assert post({**accept, "Authorization": "Bearer wrong"}).status == 401
        ok = post({**accept, **token})
        assert ok.status == 200, ok
        assert ok.json["result"]["serverInfo"]["name"] == "sipfleet"
        # On a loopback bind, a browser tricked by DNS rebinding is turned away.
        evil = post({**accept, **token, "Host": "evil.example:80"})
        assert evil.status in (403, 421), evil
        assert control.servers.endpoints["mcp"] == f"http://127.0.0.1:{port}/mcp"
