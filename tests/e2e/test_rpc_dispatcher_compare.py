"""dispatcher.*, dlg.* and stats.* of a real ``sipfleet run`` and of Debian's Kamailio 5.6.3,
serving the same list file, asked the same questions over JSON-RPC (HTTP) and kamcmd.

Kamailio runs with latency statistics and call-load tracking on
(``ds_ping_latency_stats``, ``ds_hash_size``) so that its listing carries the
LATENCY and RUNTIME blocks sipfleet always has, and with the dialog and tmx
modules for dlg.* and the transaction statistics. Probing is off on both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import kamailio_ref as ref
import pytest
import test_rpc_dispatcher_kamtools as tools

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

MODPARAMS = [
    'loadmodule "rr.so"',
    'loadmodule "dialog.so"',
    'loadmodule "tmx.so"',
    'modparam("dispatcher", "ds_ping_latency_stats", 1)',
    'modparam("dispatcher", "ds_hash_size", 9)',
    'modparam("dialog", "enable_stats", 1)',
]
kamailio = ref.kamailio_fixture(modparams=MODPARAMS)


@pytest.fixture(scope="module")
def sipfleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with tools.sipfleet_running(tmp_path_factory.mktemp("sipfleet"), ref.DEFAULT_LIST) as proc:
        yield proc


def ask(server: Any, method: str, *params: Any) -> Any:
    return server.post({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})


def same_bytes(kamailio: Any, sipfleet: Any, method: str, *params: Any) -> bytes:
    k, s = ask(kamailio, method, *params), ask(sipfleet, method, *params)
    assert (s.status, s.reason) == (k.status, k.reason), (method, params)
    assert s.body == k.body, (method, params)
    return bytes(s.body)


def test_list_is_byte_identical_after_the_same_state_changes(kamailio: Any, sipfleet: Any) -> None:
    for mode in ((), ("short",), ("full",), ("bogus",)):
        same_bytes(kamailio, sipfleet, "dispatcher.list", *mode)
    for params in (
        ["ip", 1, "sip:127.0.0.1:5070"],
        ["d", 2, "sip:127.0.0.1:5072"],
        ["tp", 1, "SIP:127.0.0.1:5071"],
        ["ap", 9, "all"],
    ):
        same_bytes(kamailio, sipfleet, "dispatcher.set_state", *params)
        same_bytes(kamailio, sipfleet, "dispatcher.list")
    same_bytes(kamailio, sipfleet, "dispatcher.set_duid_state", "dp", 1, "media-1")
    body = same_bytes(kamailio, sipfleet, "dispatcher.list", "full")
    assert b'"FLAGS":\t"DX"' in body and b'"DLGLOAD":\t0' in body and b'"EST":\t0' in body
    k, s = kamailio.kamcmd("dispatcher.list"), sipfleet.kamcmd("dispatcher.list")
    assert (s.returncode, s.stdout) == (k.returncode, k.stdout)
    for args in (["a", 1, "all"], ["a", 2, "all"]):
        same_bytes(kamailio, sipfleet, "dispatcher.set_state", *args)


@pytest.mark.parametrize(
    "params",
    [
        [],
        ["ip", 1],
        ["", 1, "sip:127.0.0.1:5070"],
        ["x", 1, "sip:127.0.0.1:5070"],
        [5, 1, "sip:127.0.0.1:5070"],
        ["ip", 1, "sip:127.0.0.1:9999"],
        ["ip", 9, "sip:127.0.0.1:5070"],
        ["ip", "1", "sip:127.0.0.1:5070"],
        ["ip", 1, 5070],
    ],
)
def test_set_state_faults_are_byte_identical(
    kamailio: Any, sipfleet: Any, params: list[Any]
) -> None:
    same_bytes(kamailio, sipfleet, "dispatcher.set_state", *params)
    same_bytes(kamailio, sipfleet, "dispatcher.set_duid_state", *params[:2], "nosuch")


def test_reload_twice_within_five_seconds(kamailio: Any, sipfleet: Any) -> None:
    # Reload, add and remove share one 5 s window: no other test of this module reloads.
    first = same_bytes(kamailio, sipfleet, "dispatcher.reload")
    assert b"Ok. Dispatcher successfully reloaded." in first
    second = same_bytes(kamailio, sipfleet, "dispatcher.reload")
    assert b'"message":\t"Ongoing reload"' in second
    for method, params in (
        ("dispatcher.add", [1, "sip:127.0.0.1:5090"]),
        ("dispatcher.add", [1]),  # Kamailio checks the window before the params
        ("dispatcher.remove", [1, "sip:127.0.0.1:5070"]),
        ("dispatcher.remove", []),
    ):
        body = same_bytes(kamailio, sipfleet, method, *params)
        assert b"Ongoing reload" in body
    k, s = kamailio.kamcmd("dispatcher.reload"), sipfleet.kamcmd("dispatcher.reload")
    assert (s.returncode, s.stdout) == (k.returncode, k.stdout)
    assert s.stdout == "error: 500 - Ongoing reload\n"


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("no.such", []),
        ("dispatcher.hash", [7, "alice", "server.com"]),
        ("dispatcher.hash", [0, "abc"]),
        ("dispatcher.hash", [7]),
        ("dispatcher.hash", [7, 5]),
        ("dispatcher.ping_active", []),
        ("dlg.list", []),
        ("dlg.stats_active", []),
        ("dlg.end_dlg", [1, 2]),
        ("dlg.end_dlg", [1]),
        ("stats.get_statistics", []),
        ("stats.get_statistics", [5]),
        ("stats.get_statistics", ["dialog:"]),
        ("stats.get_statistics", ["nosuch:", "core:rcv_requests", "tm:"]),  # dispatcher: is ours
        ("stats.reset_statistics", []),
        ("stats.reset_statistics", ["dialog:"]),
    ],
)
def test_other_answers_are_byte_identical(
    kamailio: Any, sipfleet: Any, method: str, params: list[Any]
) -> None:
    same_bytes(kamailio, sipfleet, method, *params)


def test_every_kamailio_help_text_is_kamailios(kamailio: Any, sipfleet: Any) -> None:
    k_names = set(ask(kamailio, "system.listMethods").json["result"])
    s_names = ask(sipfleet, "system.listMethods").json["result"]
    shared = [n for n in s_names if n in k_names]
    assert {"dispatcher.list", "dlg.end_dlg", "stats.get_statistics"} <= set(shared)
    for name in shared:
        same_bytes(kamailio, sipfleet, "system.methodHelp", name)
    # Beyond Kamailio 5.6: 6.0's oclist, and sipfleet's own under their own names.
    assert set(s_names) - k_names >= {"dispatcher.oclist", "sipfleet.events", "sipfleet.status"}


def test_statistics_use_kamailios_names(kamailio: Any, sipfleet: Any) -> None:
    k_all = ask(kamailio, "stats.get_statistics", "all").json["result"]
    s_all = ask(sipfleet, "stats.get_statistics", "all").json["result"]
    line = re.compile(r"^[a-z]+:[A-Za-z0-9_]+ = \d+$")
    assert all(line.match(x) for x in s_all) and s_all == sorted(s_all)

    def names(lines: list[str]) -> set[str]:
        return {x.split(" = ")[0] for x in lines}

    # sipfleet:, dispatcher: (Kamailio 5.6's dispatcher has no statistics) and pike:
    # (sipfleet's flood and scanner bans; the reference Kamailio loads no pike) are ours.
    ours = {n for n in names(s_all) if not n.startswith(("sipfleet:", "dispatcher:", "pike:"))}
    assert ours <= names(k_all), ours - names(k_all)
    assert {n.split(":")[0] for n in ours} == {"core", "dialog", "shmem", "sl", "tcp", "tmx"}
    # kamcmd prints one line per value, as for Kamailio.
    k, s = (
        kamailio.kamcmd("stats.get_statistics", "dialog:"),
        sipfleet.kamcmd("stats.get_statistics", "dialog:"),
    )
    assert (s.returncode, s.stdout) == (k.returncode, k.stdout)


def test_unknown_method_is_byte_identical_on_every_client(kamailio: Any, sipfleet: Any) -> None:
    same_bytes(kamailio, sipfleet, "no.such.method", 1, "x")
    k, s = kamailio.kamcmd("no.such.method"), sipfleet.kamcmd("no.such.method")
    assert (s.returncode, s.stdout) == (k.returncode, k.stdout)
    k_doc = json.loads(kamailio.kamctl_rpc("no.such.method").stdout)
    s_doc = json.loads(sipfleet.kamctl_rpc("no.such.method").stdout)
    assert s_doc["error"] == k_doc["error"] == {"code": 500, "message": "Method Not Found"}
