"""Pure parts of the MCP server: the guard rails, and the token rule on routes
added to the control HTTP server (/mcp)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any

import pytest
from aiohttp import web

from sipfleet.aio.rpc_http import GUARD, HttpRoute, make_http_app
from sipfleet.control.jsonrpc import JsonRpcHandler
from sipfleet.control.registry import Registry
from sipfleet.mcp.guard import check_take_out, find_targets, set_summary


def _row(set_id: int, port: int, flags: str = "AX", duid: str | None = None) -> dict[str, Any]:
    return {"set": set_id, "uri": f"sip:10.0.0.1:{port}", "duid": duid, "flags": flags}


FLEET = [
    _row(1, 1, duid="a"),
    _row(1, 2, duid="b"),
    _row(1, 3, duid="c"),
    _row(1, 4, "IP", duid="d"),
    _row(2, 5, duid="solo"),
    _row(3, 6, duid="x"),
    _row(3, 7, "DX", duid="y"),
]


def test_find_targets_by_duid_or_uri() -> None:
    assert [r["duid"] for r in find_targets(FLEET, "b")] == ["b"]
    assert [r["duid"] for r in find_targets(FLEET, "SIP:10.0.0.1:3")] == ["c"]
    assert find_targets(FLEET, "sip:10.0.0.1:3", 2) == []
    assert set_summary(FLEET) == [
        {"set": 1, "destinations": 4, "usable": 3},
        {"set": 2, "destinations": 1, "usable": 1},
        {"set": 3, "destinations": 2, "usable": 1},
    ]


@pytest.mark.parametrize(
    ("taking", "share", "refused"),
    [
        (["a"], 0.5, None),  # 2 of 4 out (d is inactive already): 50% is allowed
        (["a", "b"], 0.5, "3 of 4"),  # 75%
        (["a", "b"], 0.75, None),
        (["a", "b", "c"], 1.0, "last usable"),  # nothing left, whatever the share
        (["solo"], 1.0, "last usable"),
        (["x"], 1.0, "last usable"),  # y is disabled: x is the last one
        (["d"], 0.1, None),  # already out: taking it out again changes nothing
        (["y"], 0.1, None),
    ],
)
def test_check_take_out(taking: list[str], share: float, refused: str | None) -> None:
    rows = [r for duid in taking for r in find_targets(FLEET, duid)]
    reasons = [r.reason for r in check_take_out(FLEET, rows, share)]
    if refused is None:
        assert reasons == []
    else:
        assert len(reasons) == 1 and refused in reasons[0], reasons


def test_extra_routes_follow_the_token_rule() -> None:
    async def hello(request: web.Request) -> web.StreamResponse:
        return web.Response(text="mcp here")

    async def go() -> list[tuple[int, str]]:
        app = make_http_app(
            JsonRpcHandler(Registry()), token="s3cret", extra=[HttpRoute("*", "/mcp", hello)]
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        app[GUARD].bound.append(("127.0.0.1", port))  # as start_http does
        out = []

        def get(auth: str | None) -> tuple[int, str]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/mcp")
            if auth:
                req.add_header("Authorization", auth)
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as e:
                with e:
                    return e.code, e.read().decode()

        try:
            for auth in (None, "Bearer wrong", "Bearer s3cret"):
                out.append(await asyncio.to_thread(get, auth))
        finally:
            await runner.cleanup()
        return out

    assert asyncio.run(go()) == [
        (401, "Unauthorized\n"),
        (401, "Unauthorized\n"),
        (200, "mcp here"),
    ]
