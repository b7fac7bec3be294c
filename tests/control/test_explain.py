"""sipfleet.explain_route: the route and candidates a request would get, with
nothing moved (the next real pick is unchanged), and sipfleet.audit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_methods import Env

from sipfleet.config import RouteConfig
from sipfleet.dispatch.select import Keys, Selection
from sipfleet.dispatch.state import AdminState
from sipfleet.dispatch.target import DestTarget


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.close()


def _pick(env: Env, set_id: int = 1) -> str:
    sel = env.core.dispatcher.select(set_id, Keys(call_id="x"), now=env.clock.now(), algorithm=4)
    assert isinstance(sel, Selection)
    return sel.destination.uri


def test_explain_default_route_round_robin_changes_nothing(env: Env) -> None:
    first = env.result("sipfleet.explain_route", "sip:svc@example.com")
    again = env.result("sipfleet.explain_route", "sip:svc@example.com", "INVITE")
    assert first["route"] == "default" and first["sets"] == [1]
    assert first["algorithm"] == 4 and first["algorithm_name"] == "round-robin"
    assert first["result"] == "forward"
    # Asking twice gives the same answer: the round-robin cursor did not move ...
    assert again["destination"] == first["destination"]
    assert [c["uri"] for c in first["candidates"]] == [
        "sip:127.0.0.1:5070",
        "sip:127.0.0.1:5071",
    ]
    assert first["candidates"][0]["duid"] == "media-1"
    # ... and the next real pick is the one explain named.
    assert _pick(env) == first["destination"]
    assert env.result("sipfleet.explain_route", "sip:svc@example.com")["destination"] == (
        "sip:127.0.0.1:5071"
    )


def test_explain_names_the_route_and_skipped_destinations(env: Env) -> None:
    env.core.router.set_routes(
        [
            RouteConfig.model_validate(
                {
                    "name": "acme",
                    "match": {"header": {"name": "X-Tenant", "value": "^acme$"}},
                    "sets": [2],
                }
            ).to_settings(),
            RouteConfig(name="rest", sets=[1], algorithm=8).to_settings(),
        ]
    )
    env.core.dispatcher.set_state(DestTarget.duid(None, "media-1"), AdminState.DRAINING, by="test")
    out = env.result(
        "sipfleet.explain_route", "sip:bob@example.com", "INVITE", {"X-Tenant": "acme"}
    )
    assert out["route"] == "acme" and out["destination"] == "sip:127.0.0.1:5072"
    assert out["conditions"] == {"header": {"name": "X-Tenant", "value": "^acme$"}}
    other = env.result(
        "sipfleet.explain_route", "sip:bob@example.com", "INVITE", ["X-Tenant: beta"]
    )
    assert other["route"] == "rest"
    assert [r["route"] for r in other["routes_passed"]] == ["acme"]
    assert other["algorithm"] == 8 and other["destination"] == "sip:127.0.0.1:5071"
    (skipped,) = other["skipped"]
    assert skipped["uri"] == "sip:127.0.0.1:5070"
    assert skipped["reason"].startswith("draining")
    assert skipped["flags"].startswith("D")
    # Nothing usable: the 503 the proxy would answer, and why.
    env.result("dispatcher.set_state", "d", 1, "sip:127.0.0.1:5071")
    none = env.result("sipfleet.explain_route", "sip:bob@example.com")
    assert none["destination"] is None
    assert none["result"].startswith("503 Service Unavailable")
    assert "no active destination" in none["why"]
    reasons = {s["uri"]: s["reason"] for s in none["skipped"]}
    assert reasons["sip:127.0.0.1:5071"].startswith("disabled")


def test_explain_no_route_and_bad_input(env: Env) -> None:
    env.core.router.set_routes(
        [
            RouteConfig.model_validate(
                {"name": "trunk", "match": {"source": ["10.0.0.0/8"]}, "sets": [1]}
            ).to_settings()
        ]
    )
    out = env.result("sipfleet.explain_route", "sip:a@b", "INVITE", None, "192.0.2.1:5060")
    assert out["route"] is None and out["result"] == "404 No Route"
    assert (
        env.result("sipfleet.explain_route", "sip:a@b", "INVITE", None, "10.1.2.3")["route"]
        == "trunk"
    )
    bad: list[tuple[Any, ...]] = [
        ("bad uri with spaces",),
        ("sip:a@b", "INV ITE"),
        ("sip:a@b", "INVITE", ["no colon here"]),
        ("sip:a@b", "INVITE", None, "not-an-ip"),
        ("sip:a@b", "INVITE", {"X-Bad": "a\r\nInjected: 1"}),
    ]
    for params in bad:
        code, message = env.error("sipfleet.explain_route", *params)
        assert code == 400, (params, message)


def test_audit_event(env: Env) -> None:
    assert (
        env.result("sipfleet.audit", "mcp claude (stdio)", "drain media-1", "ok", {"wait": True})
        == "Ok."
    )
    (event,) = env.result("sipfleet.events", 1)
    assert event["event"] == "audit"
    assert event["who"] == "mcp claude (stdio)" and event["action"] == "drain media-1"
    assert event["details"] == {"wait": "True"}
