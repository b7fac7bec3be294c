"""The method registry: registration rules, Kamailio's scan semantics per dialect,
system.* introspection, and sync/async settling."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sipfleet.control.registry import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    Dialect,
    Param,
    Registry,
    RpcFault,
    settle,
)

J, B = Dialect.JSON, Dialect.BINRPC


def call(registry: Registry, name: str, *params: object, dialect: Dialect = J) -> object:
    method = registry.get(name)
    assert method is not None
    return method.invoke(list(params), dialect)


def test_system_methods_are_built_in_and_listed_sorted():
    r = Registry()
    r.add("b.two", lambda: 2, doc="Two.")
    r.add("a.one", lambda: 1, doc="One.")
    assert call(r, "system.listMethods") == [
        "a.one",
        "b.two",
        "system.listMethods",
        "system.methodHelp",
        "system.methodSignature",
    ]
    assert "a.one" in r and len(r) == 5
    assert Registry(system_methods=False).names() == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (["system.listMethods"], "Lists all RPC methods supported by the server."),
        (["core.nothing"], RpcFault(400, "command not found")),
        ([], RpcFault(400, "Method Name Expected")),
        ([5], RpcFault(400, "Method Name Expected")),  # a number is not a method name
    ],
)
def test_method_help_answers_as_kamailio(params, expected):
    r = Registry()
    if isinstance(expected, RpcFault):
        with pytest.raises(RpcFault) as e:
            call(r, "system.methodHelp", *params)
        assert e.value == expected
    else:
        assert call(r, "system.methodHelp", *params) == expected


@pytest.mark.parametrize("params", [[], ["core.version"], [1, 2]])
def test_method_signature_is_not_implemented(params):
    with pytest.raises(RpcFault) as e:
        call(Registry(), "system.methodSignature", *params)
    assert e.value == RpcFault(500, "Not Implemented Yet")


@pytest.mark.parametrize(
    ("name", "doc", "params"),
    [
        ("", "Doc.", []),
        ("has space", "Doc.", []),
        ("x.y", "", []),
        ("x.y", "two\nlines", []),
        ("x.y", "Doc.", [Param("a", optional=True), Param("b")]),
    ],
)
def test_bad_registrations_are_refused(name, doc, params):
    with pytest.raises(ValueError):
        Registry().add(name, lambda *a: None, doc=doc, params=params)


@pytest.mark.parametrize(
    ("handler", "params"),
    [
        (lambda: 1, [Param("a")]),
        (lambda a, b: 1, [Param("a"), Param("b", optional=True)]),
        (lambda a: 1, [Param("a"), Param("b", optional=True)]),
    ],
)
def test_handlers_must_take_their_params(handler, params):
    with pytest.raises(ValueError, match="cannot take"):
        Registry().add("x.y", handler, doc="Doc.", params=params)


def test_a_name_registers_once_and_can_be_removed():
    r = Registry()
    r.add("x.y", lambda: 1, doc="Doc.")
    with pytest.raises(ValueError, match="already registered"):
        r.add("x.y", lambda: 2, doc="Doc.")
    r.remove("x.y")
    assert r.get("x.y") is None


def test_decorator_registers_and_returns_the_handler():
    r = Registry()

    @r.method("x.add", doc="Adds.", params=[Param("a", "int"), Param("b", "int", optional=True)])
    def add(a: int, b: int = 10) -> int:
        return a + b

    assert add(1, 2) == 3
    assert call(r, "x.add", 1) == 11  # the handler's default applies
    assert call(r, "x.add", 1, 2, "extra ignored") == 3


# Kamailio 5.6.3, measured: jsonrpcs reads any JSON number for an int
# (truncated) and anything else as 0; ctl needs an int record.
SCAN = [
    # kind, autoconvert, dialect, given, expected (RpcFault = scan failure)
    ("int", False, J, 7, 7),
    ("int", False, J, -7, -7),
    ("int", False, J, 7.9, 7),
    ("int", False, J, -7.9, -7),
    ("int", False, J, "7", 0),
    ("int", False, J, None, 0),
    ("int", False, J, True, 1),
    ("int", False, J, [1], 0),
    ("int", False, B, 7, 7),
    ("int", False, B, "7", INVALID_PARAMS),
    ("int", False, B, 7.5, INVALID_PARAMS),
    ("int", True, B, "7", 7),
    ("int", True, B, "x7", INVALID_PARAMS),
    ("int", True, B, 7.5, 7),
    ("str", False, J, "ip", "ip"),
    ("str", False, J, 1, INVALID_PARAMS),
    ("str", False, J, None, INVALID_PARAMS),
    ("str", False, J, ["a"], INVALID_PARAMS),
    ("str", True, J, 1, "1"),
    ("str", True, J, 1.7, "1"),
    ("str", True, J, None, INVALID_PARAMS),
    ("str", False, B, 1, INVALID_PARAMS),
    ("str", True, B, 1, "1"),
    ("float", False, J, 2, 2.0),
    ("float", False, J, "2", 0.0),
    ("float", False, B, 2.5, 2.5),
    ("float", False, B, 2, INVALID_PARAMS),
    ("float", True, B, 2, 2.0),
    ("float", True, B, "2.5", 2.5),
    ("any", False, J, {"a": 1}, {"a": 1}),
    ("any", False, B, None, None),
]


@pytest.mark.parametrize(("kind", "auto", "dialect", "given", "expected"), SCAN)
def test_scan_follows_kamailio(kind, auto, dialect, given, expected):
    r = Registry()
    r.add("x.f", lambda v: v, doc="Doc.", params=[Param("v", kind, autoconvert=auto)])
    if isinstance(expected, RpcFault):
        with pytest.raises(RpcFault) as e:
            call(r, "x.f", given, dialect=dialect)
        assert e.value == expected
    else:
        got = call(r, "x.f", given, dialect=dialect)
        assert got == expected and type(got) is type(expected)


def test_missing_required_param_is_the_methods_own_fault():
    r = Registry()
    own = RpcFault(400, "Group Expected")
    r.add("x.f", lambda a, b: 0, doc="Doc.", params=[Param("a"), Param("b", "int")], bad_params=own)
    with pytest.raises(RpcFault) as e:
        call(r, "x.f", "a")
    assert e.value is own


def test_rpc_fault_compares_by_code_and_message():
    assert RpcFault(500, "x") == RpcFault(500, "x")
    assert RpcFault(500, "x") != RpcFault(400, "x")
    assert len({RpcFault(500, "x"), RpcFault(500, "x")}) == 1
    assert repr(RpcFault(500, "x")) == "RpcFault(500, 'x')"


def _render(call_):
    return settle(call_, lambda v: ("ok", v), lambda f: ("fault", f.code, f.message))


def test_settle_sync_outcomes(caplog):
    assert _render(lambda: 5) == ("ok", 5)

    def refuse():
        raise RpcFault(500, "Ongoing reload")

    assert _render(refuse) == ("fault", 500, "Ongoing reload")

    def bug():
        raise KeyError("oops")

    with caplog.at_level(logging.ERROR):
        assert _render(bug) == ("fault", INTERNAL_ERROR.code, INTERNAL_ERROR.message)
    assert "RPC method failed" in caplog.text


def test_settle_async_outcomes(caplog):
    async def later(value):
        await asyncio.sleep(0)  # sleep-ok: one loop turn (no time passes)
        if isinstance(value, Exception):
            raise value
        return value

    async def run(value):
        pending = _render(lambda: later(value))
        assert asyncio.iscoroutine(pending)
        return await pending

    assert asyncio.run(run(7)) == ("ok", 7)
    assert asyncio.run(run(RpcFault(404, "Destination Group Not Found"))) == (
        "fault",
        404,
        "Destination Group Not Found",
    )
    with caplog.at_level(logging.ERROR):
        assert asyncio.run(run(RuntimeError("bug"))) == ("fault", 500, "Internal Server Error")
