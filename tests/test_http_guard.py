"""The HTTP control plane's guard (sipfleet.aio.rpc_http.HttpGuard) as a table:
which Host and Origin headers are this server, on each kind of bind address."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from sipfleet.aio.rpc_http import HttpGuard


def guard(bound: list[tuple[str, int]], names: tuple[str, ...] = (), **kw: object) -> HttpGuard:
    g = HttpGuard(names, **kw)  # type: ignore[arg-type]
    g.bound.extend(bound)
    return g


LOOPBACK = [("127.0.0.1", 9060)]


@pytest.mark.parametrize(
    ("bound", "names", "host", "ok"),
    [
        (LOOPBACK, (), "127.0.0.1:9060", True),
        (LOOPBACK, (), "127.0.0.1", True),
        (LOOPBACK, (), "LOCALHOST:9060", True),
        (LOOPBACK, (), "localhost.:9060", True),
        (LOOPBACK, (), "127.0.0.1:9061", False),
        (LOOPBACK, (), "127.0.0.2:9060", False),
        (LOOPBACK, (), "attacker.example:9060", False),
        (LOOPBACK, (), "127.0.0.1.attacker.example", False),
        (LOOPBACK, (), "", False),
        (LOOPBACK, (), "127.0.0.1:x", False),
        (LOOPBACK, (), "::1", False),
        (LOOPBACK, ("lb.example.net",), "lb.example.net:443", True),
        (LOOPBACK, ("lb.example.net:8443",), "lb.example.net:8443", True),
        (LOOPBACK, ("lb.example.net:8443",), "lb.example.net", False),
        ([("::1", 9060)], (), "[::1]:9060", True),
        ([("::1", 9060)], (), "[::1", False),
        ([("::1", 9060)], (), "127.0.0.1:9060", False),
        ([("0.0.0.0", 9060)], (), "192.0.2.7:9060", True),  # an IP literal cannot be rebound
        ([("0.0.0.0", 9060)], (), "[2001:db8::1]:9060", False),
        ([("0.0.0.0", 9060)], (), "host.example:9060", False),
        ([("::", 9060)], (), "192.0.2.7:9060", True),
        ([("::", 9060)], (), "[2001:db8::1]:9060", True),
        ([("fe80::1%eth0", 9060)], (), "[fe80::1]:9060", True),
    ],
)
def test_host_allowed(bound, names, host, ok):
    assert guard(bound, names).host_allowed(host) is ok


def _refusal(g: HttpGuard, headers: dict[str, str]) -> int | None:
    answer = g.refusal(make_mocked_request("POST", "/RPC", headers=headers))
    return None if answer is None else answer.status


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, None),  # HTTP/1.0 without Host: not a browser
        ({"Host": "127.0.0.1:9060"}, None),
        ({"Host": "127.0.0.1:9060", "Origin": "http://127.0.0.1:9060"}, None),
        ({"Host": "localhost", "Origin": "http://localhost:80"}, None),
        ({"Host": "127.0.0.1:9060", "Origin": "http://localhost:9060"}, 403),
        ({"Host": "127.0.0.1:9060", "Origin": "http://127.0.0.1:9060/x"}, 403),
        ({"Host": "127.0.0.1:9060", "Origin": "https://127.0.0.1:9060"}, 403),
        ({"Host": "127.0.0.1:9060", "Origin": "null"}, 403),
        ({"Origin": "http://127.0.0.1:9060"}, 403),
        ({"Host": "evil.example", "Origin": "http://evil.example"}, 421),
    ],
)
def test_refusal_order_and_origins(headers, status):
    g = guard(LOOPBACK)
    assert _refusal(g, headers) == status
    assert g.refused == (status is not None)


def test_token_is_checked_after_host_and_origin():
    g = guard(LOOPBACK, token="t" * 16)
    assert _refusal(g, {"Host": "evil.example"}) == 421
    assert _refusal(g, {"Host": "127.0.0.1:9060"}) == 401
    assert _refusal(g, {"Host": "127.0.0.1:9060", "Authorization": "Bearer " + "t" * 16}) is None
    assert _refusal(g, {"Authorization": "Bearer " + "t" * 15}) == 401


def test_https_origins():
    g = guard(LOOPBACK, ("lb.example.net",), scheme="https")
    assert _refusal(g, {"Host": "lb.example.net", "Origin": "https://lb.example.net:443"}) is None
    assert _refusal(g, {"Host": "lb.example.net", "Origin": "http://lb.example.net"}) == 403


def test_bad_allowed_names():
    with pytest.raises(ValueError, match="not HOST"):
        HttpGuard(["a:b:c"])
