"""The dispatcher.*, dlg.*, stats.* and sipfleet.* RPC methods on a fake app.

The app is built from the real pure core (Dispatcher, DispatchRouter, the
proxy with its DialogTable, EventBus) and a real SQLite store; only the
sockets are missing: what the proxy sends lands in a list. Calls go through
the JSON-RPC and BINRPC handlers, so parameters are scanned as Kamailio
scans them. The Kamailio answers quoted here were measured on Debian's
5.6.3 (tests/e2e compare them live).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sipfleet.aio.events import EventBus
from sipfleet.config import Config, DispatcherConfig
from sipfleet.control.binrpc import (
    BinRpcHandler,
    PacketReader,
    PacketType,
    decode_fault,
    decode_records,
    encode_request,
)
from sipfleet.control.jsonrpc import JsonRpcHandler
from sipfleet.control.methods import RPC_CALLER, StatsBook
from sipfleet.control.registry import RpcFault
from sipfleet.core.factory import build_core
from sipfleet.core.node import Core
from sipfleet.core.rpc import register_rpc
from sipfleet.dispatch import AdminState, Dispatcher, parse_list
from sipfleet.proxy.dialogs import CONFIRMED, EARLY, Dialog
from sipfleet.proxy.net import Peer
from sipfleet.sip.message import parse
from sipfleet.store.base import StoreError
from sipfleet.store.local import LocalStore
from sipfleet.store.sqlite import SqliteStore

VECTORS = Path(__file__).parent / "vectors"
LIST = """\
1 sip:127.0.0.1:5070 0 10 duid=media-1;weight=50
1 sip:127.0.0.1:5071 8 5
2 sip:127.0.0.1:5072
"""
KAMAILIO_DOCS = {  # system.methodHelp of Kamailio 5.6.3 (measured)
    "dispatcher.reload": "Reload dispatcher destination sets",
    "dispatcher.list": "Return the content of dispatcher sets",
    "dispatcher.set_state": "Set the state of a destination by address",
    "dispatcher.set_duid_state": "Set the state of a destination by duid",
    "dispatcher.ping_active": "Manage setting on/off the pinging (keepalive) of destinations",
    "dispatcher.add": "Add a destination address in memory",
    "dispatcher.remove": "Remove a destination address from memory",
    "dispatcher.hash": "Compute the hash if the values",
    "dlg.list": "Print all dialogs",
    "dlg.stats_active": "Get stats about active dialogs",
    "dlg.end_dlg": "End a given dialog based on [h_entry] [h_id]",
    "stats.get_statistics": "get core and modules stats",
    "stats.reset_statistics": "reset core and modules stats (silent operation)",
}
UDP, TCP = 0, 1
CALLER = Peer(UDP, "127.0.0.1", 5080)


class Sink:
    """What the proxy sends, as (peer, parsed message)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Peer, bytes]] = []

    def send(self, peer: Peer, data: bytes) -> None:
        self.sent.append((peer, data))


class FakeStore(SqliteStore):
    """A real SQLite store that can be told to fail."""

    fail = False

    def _maybe_fail(self) -> None:
        if self.fail:
            raise StoreError("disk full (test)")

    def add(self, spec: Any) -> None:
        self._maybe_fail()
        super().add(spec)

    def remove(self, set_id: int, uri: str) -> int:
        self._maybe_fail()
        return super().remove(set_id, uri)

    def save_admin_state(self, key: Any, state: Any, since: Any = None, by: str = "") -> None:
        self._maybe_fail()
        super().save_admin_state(key, state, since, by)


class Clock:
    """A fake clock: the core's monotonic time and the wall clock, moved by hand."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.epoch = 1_780_000_000.0  # wall clock at t = 0

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.epoch + self.t


def build_test_core(store: FakeStore, clock: Clock, sink: Sink, **cfg: Any) -> Core:
    """The server's own wiring (sipfleet.core.factory) over ``store``, no sockets."""
    config = Config(dispatcher=DispatcherConfig(**{"ping_interval": 0, **cfg}))
    return build_core(
        config,
        store.load(),
        store.load_admin_details(),
        now=clock.now,
        wall=clock.wall,
        sink=sink,
        events=EventBus(),
        lock=asyncio.Lock,
        store=LocalStore(store),  # as App holds it
        started_wall=clock.wall() - 42,
    )


class Env:
    def __init__(self, tmp_path: Path, **cfg: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.store = FakeStore(tmp_path / "sipfleet.db")
        self.store.init()
        self.store.replace(parse_list(LIST, "test.list"))
        self.sink = Sink()
        self.core = build_test_core(self.store, self.clock, self.sink, **cfg)
        self.registry = self.core.registry  # the one Core.call runs
        register_rpc(self.registry, self.core)
        self.json = JsonRpcHandler(self.registry)
        self.binrpc = BinRpcHandler(self.registry)

    def settle(self, value: Any) -> Any:
        return self.loop.run_until_complete(value) if inspect.isawaitable(value) else value

    def call(self, method: str, *params: Any) -> dict[str, Any]:
        """The JSON-RPC reply document."""
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
        reply = self.settle(self.json.handle(body.encode()))
        doc: dict[str, Any] = json.loads(reply.body)
        return doc

    def result(self, method: str, *params: Any) -> Any:
        doc = self.call(method, *params)
        assert "error" not in doc, doc
        return doc["result"]

    def error(self, method: str, *params: Any) -> tuple[int, str]:
        doc = self.call(method, *params)
        assert "error" in doc, doc
        return doc["error"]["code"], doc["error"]["message"]

    def kamcmd(self, method: str, *params: Any) -> list[object] | RpcFault:
        """The BINRPC reply records (or fault), as kamcmd reads them."""
        packet = PacketReader().feed(encode_request(method, list(params), 7))[0]
        reply = self.settle(self.binrpc.handle(packet))
        got = PacketReader().feed(reply.data)[0]
        if got.type == PacketType.FAULT:
            return decode_fault(got.body)
        return decode_records(got.body)

    def flags(self) -> dict[str, str]:
        listing = self.result("dispatcher.list")
        return {
            t["DEST"]["URI"]: t["DEST"]["FLAGS"]
            for r in listing["RECORDS"]
            for t in r["SET"]["TARGETS"]
        }

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
        self.store.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.close()


def _dialog(env: Env, *, state: int = CONFIRMED, rr: list[bytes] | None = None) -> Dialog:
    """A dialog on sip:127.0.0.1:5070 (duid media-1), as the proxy leaves it after a 2xx."""
    app = env.core
    dest = app.dispatcher.find(1, "sip:127.0.0.1:5070")
    assert dest is not None
    now = env.clock.now()
    dlg = Dialog(b"call-1@test", b"caller-tag", 77, now - 5)
    dlg.from_line = b"From: Alice <sip:alice@example.com>;tag=caller-tag"
    dlg.to_line = b"To: <sip:svc@example.com>" + (b";tag=callee-tag" if state == CONFIRMED else b"")
    dlg.caller_contact = b"<sip:alice@127.0.0.1:5080>"
    dlg.caller_cseq = 1
    dlg.caller_peer = CALLER
    dlg.dest = dest
    dlg.load_key = dest.load_key
    dlg.state = state
    if state == CONFIRMED:
        dlg.to_tag = b"callee-tag"
        dlg.callee_contact = b"<sip:media@127.0.0.1:5070;transport=udp>"
        dlg.route_set = rr if rr is not None else [b"<sip:127.0.0.1:5060;lr>"]
    app.proxy.dialogs.restore(dlg, now, 3600)
    return dlg


# -- registry and help ---------------------------------------------------------


def test_every_method_is_registered_with_kamailios_help(env: Env) -> None:
    names = env.result("system.listMethods")
    for name, doc in KAMAILIO_DOCS.items():
        assert name in names
        assert env.result("system.methodHelp", name) == doc
    for name in names:  # every method documents itself in one line
        doc = env.result("system.methodHelp", name)
        assert doc.strip() and "\n" not in doc, name
    assert {"dispatcher.oclist", "sipfleet.status", "sipfleet.events"} <= set(names)


# -- dispatcher.list -------------------------------------------------------------


def test_list_matches_kamailios_vector_apart_from_runtime(tmp_path: Path) -> None:
    e = Env(tmp_path, ping_latency_stats=False)
    try:
        result = e.result("dispatcher.list")
        for rec in result["RECORDS"]:
            for t in rec["SET"]["TARGETS"]:
                # Kamailio prints RUNTIME only with ds_hash_size set.
                assert t["DEST"].pop("RUNTIME") == {"DLGLOAD": 0}
        kamailio = json.loads((VECTORS / "jsonrpc-dispatcher-list.json").read_bytes())["result"]
        assert result == kamailio
    finally:
        e.close()


def test_list_runtime_counts_the_dialog_table(env: Env) -> None:
    _dialog(env)
    result = env.result("dispatcher.list")
    dest = result["RECORDS"][1]["SET"]["TARGETS"][0]["DEST"]
    assert dest["URI"] == "sip:127.0.0.1:5070"
    assert dest["RUNTIME"] == {"DLGLOAD": 1}
    assert list(dest) == ["URI", "FLAGS", "PRIORITY", "ATTRS", "LATENCY", "RUNTIME"]


FULL_KEYS = ["URI", "FLAGS", "PRIORITY", "HOST", "IPADDR", "PORT", "PROTOID"]
FULL_KEYS += ["DNSTIME_SEC", "DNSTIME_USEC"]


@pytest.mark.parametrize(
    ("params", "keys"),
    [
        ([], ["URI", "FLAGS", "PRIORITY", "ATTRS", "LATENCY", "RUNTIME"]),
        (["bogus"], ["URI", "FLAGS", "PRIORITY", "ATTRS", "LATENCY", "RUNTIME"]),
        ([5], ["URI", "FLAGS", "PRIORITY", "ATTRS", "LATENCY", "RUNTIME"]),
        (["SHORT"], ["URI", "FLAGS", "PRIORITY", "LATENCY", "RUNTIME"]),
        # 5.6.3's full listing, measured: DNSTIME after PROTOID, ATTRS only when set.
        (["full"], [*FULL_KEYS, "ATTRS", "LATENCY", "RUNTIME"]),
    ],
)
def test_list_modes(env: Env, params: list[Any], keys: list[str]) -> None:
    result = env.result("dispatcher.list", *params)
    by_uri = {t["DEST"]["URI"]: t["DEST"] for r in result["RECORDS"] for t in r["SET"]["TARGETS"]}
    assert list(by_uri["sip:127.0.0.1:5070"]) == keys
    assert "ATTRS" not in by_uri["sip:127.0.0.1:5071"]  # no attrs: no ATTRS, even in full


def test_list_without_sets_faults(tmp_path: Path) -> None:
    e = Env(tmp_path)
    try:
        e.store.replace([])
        assert e.result("dispatcher.reload") == "Ok. Dispatcher successfully reloaded."
        assert e.error("dispatcher.list") == (500, "No Destination Sets")
    finally:
        e.close()


# -- set_state ----------------------------------------------------------------------


def test_set_state_changes_flags_and_answers_kamailios_string(env: Env) -> None:
    assert env.result("dispatcher.set_state", "ip", 1, "sip:127.0.0.1:5070") == (
        "Ok. Dispatcher state updated."
    )
    assert env.flags()["sip:127.0.0.1:5070"] == "IP"
    assert env.result("dispatcher.set_state", "a", 1, "SIP:127.0.0.1:5070")  # any case
    assert env.flags()["sip:127.0.0.1:5070"] == "AX"
    assert env.result("dispatcher.set_state", "d", 9, "all")  # unknown set + all: fine
    assert env.result("dispatcher.set_state", "tp", 1, "all")
    assert set(env.flags().values()) == {"TP", "AX"}


@pytest.mark.parametrize(
    ("params", "fault"),
    [
        (["ip", 1], (500, "Invalid Parameters")),
        ([], (500, "Invalid Parameters")),
        (["", 1, "sip:127.0.0.1:5070"], (500, "Invalid State Parameter")),
        (["x", 1, "sip:127.0.0.1:5070"], (500, "Unknown State Value")),
        ([5, 1, "sip:127.0.0.1:5070"], (500, "Unknown State Value")),  # state autoconverts
        (["ip", 1, "sip:127.0.0.1:9999"], (500, "State Update Failed")),
        (["ip", 9, "sip:127.0.0.1:5070"], (500, "State Update Failed")),
        (["ip", "1", "sip:127.0.0.1:5070"], (500, "State Update Failed")),  # "1" reads as 0
        (["ip", 1, 5070], (500, "Invalid Parameters")),
    ],
)
def test_set_state_faults_as_kamailio(env: Env, params: list[Any], fault: tuple[int, str]) -> None:
    assert env.error("dispatcher.set_state", *params) == fault


def test_set_state_persists_the_admin_state_and_emits_an_event(env: Env) -> None:
    store = env.store
    env.result("dispatcher.set_state", "d", 1, "sip:127.0.0.1:5071")
    assert store.load_admin_states() == {(1, "sip:127.0.0.1:5071"): AdminState.DISABLED}
    event = env.core.events.recent[-1]
    assert event["event"] == "state-changed"
    assert {k: event[k] for k in ("set", "uri", "state", "admin_changed", "stored", "by")} == {
        "set": 1,
        "uri": "sip:127.0.0.1:5071",
        "state": "d",
        "admin_changed": 1,
        "stored": True,
        "by": "rpc",
    }
    # A health state is not persisted; the event says nothing was stored.
    env.result("dispatcher.set_state", "ip", 1, "sip:127.0.0.1:5070")
    assert env.core.events.recent[-1]["stored"] is None
    assert store.load_admin_states() == {(1, "sip:127.0.0.1:5071"): AdminState.DISABLED}
    # A restart reads it back (probing again from the file's flags 8), a reload keeps it.
    again = Dispatcher.from_store(store, DispatcherConfig(ping_interval=0).to_settings())
    listing = again.list_records()
    assert listing["RECORDS"][1]["SET"]["TARGETS"][1]["DEST"]["FLAGS"] == "DP"
    env.result("dispatcher.reload")
    assert env.flags()["sip:127.0.0.1:5071"] == "DX"
    # Enabling it forgets it.
    env.result("dispatcher.set_state", "ap", 1, "sip:127.0.0.1:5071")
    assert store.load_admin_states() == {}


def test_set_duid_state_persists_too(env: Env) -> None:
    assert env.result("dispatcher.set_duid_state", "dp", 1, "media-1") == (
        "Ok. Dispatcher state updated."
    )
    assert env.store.load_admin_states() == {(1, "sip:127.0.0.1:5070"): AdminState.DISABLED}
    assert env.core.events.recent[-1]["duid"] == "media-1"
    assert env.error("dispatcher.set_duid_state", "dp", 1, "nosuch") == (
        500,
        "State Update Failed",
    )
    assert env.result("dispatcher.set_duid_state", "ap", 1, "all")
    assert env.store.load_admin_states() == {}


def test_the_caller_is_named_when_the_transport_knows_it(env: Env) -> None:
    token = RPC_CALLER.set("kamcmd unix:/run/sipfleet/sipfleet_ctl")
    try:
        env.result("dispatcher.set_state", "d", 2, "all")
    finally:
        RPC_CALLER.reset(token)
    assert env.core.events.recent[-1]["by"] == "kamcmd unix:/run/sipfleet/sipfleet_ctl"


def test_a_failing_store_keeps_the_state_in_memory_and_says_so(env: Env) -> None:
    env.store.fail = True
    assert env.result("dispatcher.set_state", "d", 1, "sip:127.0.0.1:5071")
    assert env.flags()["sip:127.0.0.1:5071"] == "DX"
    kinds = [e["event"] for e in env.core.events.recent]
    assert kinds[-2:] == ["store-error", "state-changed"]
    assert env.core.events.recent[-1]["stored"] is False


# -- ping_active, hash, oclist ---------------------------------------------------------


def test_ping_active(env: Env) -> None:
    assert env.result("dispatcher.ping_active") == {"OldPingState": 1}
    assert env.result("dispatcher.ping_active", 0) == {"NewPingState": 0, "OldPingState": 1}
    assert env.core.dispatcher.probing_active is False
    assert env.result("dispatcher.ping_active", 1) == {"NewPingState": 1, "OldPingState": 0}
    # jsonrpcs reads a non-number as 0 (measured): it pauses probing.
    assert env.result("dispatcher.ping_active", "x") == {"NewPingState": 0, "OldPingState": 1}
    # kamcmd sends "x" as a string record: ctl fails the scan, the handler reads the state.
    assert env.kamcmd("dispatcher.ping_active", "x") == [{"OldPingState": 0}]
    assert env.core.dispatcher.probing_active is False
    assert env.kamcmd("dispatcher.ping_active", 1) == [{"NewPingState": 1, "OldPingState": 0}]


@pytest.mark.parametrize(
    ("params", "answer"),
    [
        ([7, "alice", "server.com"], {"hashid": 1412806172, "slot": 1}),
        ([7, "abc"], {"hashid": 7167810, "slot": 6}),
        ([0, "abc"], {"hashid": 7167810, "slot": 0}),
        (["7", "abc"], {"hashid": 7167810, "slot": 0}),  # "7" reads as 0 over JSON
        ([7], (500, "Invalid Parameters")),
        ([7, 5], (500, "Invalid Parameters")),
    ],
)
def test_hash(env: Env, params: list[Any], answer: Any) -> None:
    if isinstance(answer, tuple):
        assert env.error("dispatcher.hash", *params) == answer
    else:
        assert env.result("dispatcher.hash", *params) == answer


def test_oclist(env: Env) -> None:
    rows = env.result("dispatcher.oclist", 1)
    assert [r["uri"] for r in rows] == ["sip:127.0.0.1:5070", "sip:127.0.0.1:5071"]
    assert env.error("dispatcher.oclist", 9) == (404, "Destination Group Not Found")


# -- reload, add, remove -------------------------------------------------------------


def test_reload_twice_within_reload_delta(env: Env) -> None:
    assert env.result("dispatcher.reload") == "Ok. Dispatcher successfully reloaded."
    assert env.error("dispatcher.reload") == (500, "Ongoing reload")
    # add and remove share the window, as in Kamailio.
    assert env.error("dispatcher.add", 1, "sip:127.0.0.1:5090") == (500, "Ongoing reload")
    assert env.error("dispatcher.remove", 1, "sip:127.0.0.1:5070") == (500, "Ongoing reload")


def test_reload_of_a_broken_store_faults(tmp_path: Path) -> None:
    e = Env(tmp_path, reload_delta=0)
    try:
        e.store._db.execute("UPDATE version SET table_version = 3")
        assert e.error("dispatcher.reload") == (500, "Reload Failed")
        assert len(e.flags()) == 3  # the old sets stay
    finally:
        e.close()


def test_add_and_remove_write_through_to_the_store(tmp_path: Path) -> None:
    e = Env(tmp_path, reload_delta=0)
    try:
        assert e.result("dispatcher.add", 1, "127.0.0.1:5090", 0, 3, "duid=x") == (
            "Ok. Dispatcher destination added."
        )
        assert e.flags()["sip:127.0.0.1:5090"] == "AX"
        assert ("sip:127.0.0.1:5090", 3, "duid=x") in {
            (s.uri, s.priority, s.attrs) for s in e.store.load()
        }
        e.result("dispatcher.reload")  # Kamailio would lose it here; sipfleet keeps it
        assert "sip:127.0.0.1:5090" in e.flags()
        kinds = [ev["event"] for ev in e.core.events.recent]
        assert "dst-up" in kinds and "dst-added" in kinds
        assert e.result("dispatcher.remove", 1, "sip:127.0.0.1:5090") == (
            "Ok. Dispatcher destination removed."
        )
        assert "sip:127.0.0.1:5090" not in e.flags()
        e.result("dispatcher.reload")
        assert "sip:127.0.0.1:5090" not in e.flags()
        # Removing what is not there is no error (Kamailio: the same).
        assert e.result("dispatcher.remove", 1, "sip:127.0.0.1:5999")
        assert e.error("dispatcher.add", 1) == (500, "Invalid Parameters")
        assert e.error("dispatcher.remove", 1) == (500, "Invalid Parameters")
        assert e.error("dispatcher.add", 1, "sip:") == (500, "Adding dispatcher dst failed")
    finally:
        e.close()


def test_a_store_that_refuses_add_or_remove_undoes_the_change(tmp_path: Path) -> None:
    e = Env(tmp_path, reload_delta=0)
    try:
        e.result("dispatcher.set_state", "ip", 1, "sip:127.0.0.1:5070")
        e.store.fail = True
        assert e.error("dispatcher.add", 1, "sip:127.0.0.1:5090") == (
            500,
            "Adding dispatcher dst failed",
        )
        assert "sip:127.0.0.1:5090" not in e.flags()
        assert e.error("dispatcher.remove", 1, "sip:127.0.0.1:5071") == (
            500,
            "Removing dispatcher dst failed",
        )
        assert e.flags() == {
            "sip:127.0.0.1:5072": "AX",
            "sip:127.0.0.1:5070": "IP",  # runtime state survives the undo
            "sip:127.0.0.1:5071": "AP",
        }
        assert e.core.events.recent[-1]["event"] == "store-error"
    finally:
        e.close()


# -- dialogs -----------------------------------------------------------------------


KAMAILIO_DLG_KEYS = [  # dlg.list of 5.6.3, measured
    "h_entry", "h_id", "ref", "call-id", "from_uri", "to_uri", "state", "start_ts", "init_ts",
    "end_ts", "duration", "timeout", "lifetime", "dflags", "sflags", "iflags", "caller",
    "callee", "profiles", "variables",
]  # fmt: skip


def test_dlg_list_and_stats_active(env: Env) -> None:
    assert env.result("dlg.list") == []
    assert env.kamcmd("dlg.list") == []
    dlg = _dialog(env)
    (rec,) = env.result("dlg.list")
    assert list(rec) == KAMAILIO_DLG_KEYS
    assert (rec["h_entry"], rec["h_id"], rec["call-id"]) == (dlg.h_entry, 77, "call-1@test")
    assert (rec["from_uri"], rec["to_uri"], rec["state"]) == (
        "sip:alice@example.com",
        "sip:svc@example.com",
        4,
    )
    assert 4 <= rec["duration"] <= 6
    assert rec["caller"] == {
        "tag": "caller-tag",
        "contact": "sip:alice@127.0.0.1:5080",
        "cseq": "1",
        "route_set": "",  # our own Record-Route is not in it, as in Kamailio
        "socket": "udp:127.0.0.1:5060",
    }
    assert rec["callee"]["contact"] == "sip:media@127.0.0.1:5070;transport=udp"
    assert rec["callee"]["socket"] == "udp:127.0.0.1:5060"
    assert env.result("dlg.stats_active") == {
        "starting": 0,
        "connecting": 0,
        "answering": 0,
        "ongoing": 1,
        "all": 1,
    }
    assert env.result("dlg.stats_active", 1) == env.result("dlg.stats_active")


def _sent(env: Env) -> list[tuple[Peer, Any]]:
    return [(peer, parse(data)) for peer, data in env.sink.sent]


def test_end_dlg_sends_bye_both_ways_and_ends_the_dialog(env: Env) -> None:
    _dialog(env)
    dlg = next(iter(env.core.proxy.dialogs))
    assert env.core.proxy.dialogs.load("media-1") == 1
    assert env.result("dlg.end_dlg", dlg.h_entry, dlg.h_id) == {}  # Kamailio adds nothing
    (to_callee, bye1), (to_caller, bye2) = _sent(env)
    assert bye1.start == b"BYE sip:media@127.0.0.1:5070;transport=udp SIP/2.0"
    assert to_callee == Peer(UDP, "127.0.0.1", 5070)
    assert bye1.get(b"from") == b"Alice <sip:alice@example.com>;tag=caller-tag"
    assert bye1.get(b"to") == b"<sip:svc@example.com>;tag=callee-tag"
    assert bye1.get(b"cseq") == b"2 BYE"
    assert bye1.get(b"call-id") == b"call-1@test"
    assert not bye1.has(b"route")  # only our own entry was in the route set
    assert bye1.via.host == "127.0.0.1" and bye1.via.port == 5060
    assert bye2.start == b"BYE sip:alice@127.0.0.1:5080 SIP/2.0"
    assert to_caller == CALLER
    assert bye2.get(b"from") == b"<sip:svc@example.com>;tag=callee-tag"
    assert bye2.get(b"to") == b"Alice <sip:alice@example.com>;tag=caller-tag"
    assert bye2.get(b"cseq") == b"1 BYE"  # the callee's CSeq was 0
    dialogs = env.core.proxy.dialogs
    assert len(dialogs) == 0 and dialogs.load("media-1") == 0 and dialogs.processed == 1
    assert env.core.events.recent[-1]["event"] == "dlg-ended"
    assert env.error("dlg.end_dlg", dlg.h_entry, dlg.h_id) == (404, "Dialog not found")


def test_end_dlg_follows_the_route_set_beyond_us(env: Env) -> None:
    # Record-Route of the 2xx, top first: P3 (next to the callee), us, P1 (next to the caller).
    rr = [b"<sip:p3.example.com;lr>", b"<sip:127.0.0.1:5060;lr>", b"<sip:10.9.9.1:5062;lr>"]
    _dialog(env, rr=rr)
    dlg = next(iter(env.core.proxy.dialogs))
    rec = env.result("dlg.list")[0]
    assert rec["callee"]["route_set"] == "sip:p3.example.com;lr"
    assert rec["caller"]["route_set"] == "sip:10.9.9.1:5062;lr"
    env.result("dlg.end_dlg", dlg.h_entry, dlg.h_id, "Reason: Q.850;cause=16\r\nX-By: ops\r\n")
    (to_callee, bye1), (to_caller, bye2) = _sent(env)
    assert bye1.get(b"route") == b"<sip:p3.example.com;lr>"
    assert to_callee.host == "p3.example.com" and to_callee.port == 5060
    assert bye2.get(b"route") == b"<sip:10.9.9.1:5062;lr>"
    assert to_caller == CALLER  # where the INVITE came from: P1 itself
    assert bye1.get(b"reason") == bye2.get(b"reason") == b"Q.850;cause=16"
    assert bye1.get(b"x-by") == b"ops"


def test_end_dlg_leaves_an_unanswered_dialog_to_its_invite(env: Env) -> None:
    _dialog(env, state=EARLY)
    dlg = next(iter(env.core.proxy.dialogs))
    assert env.result("dlg.list")[0]["state"] == 2  # Kamailio's DLG_STATE_EARLY
    assert env.result("dlg.end_dlg", dlg.h_entry, dlg.h_id) == {}
    assert env.sink.sent == [] and len(env.core.proxy.dialogs) == 1


@pytest.mark.parametrize("params", [[], [1], ["a", "b"]])
def test_end_dlg_bad_params(env: Env, params: list[Any]) -> None:
    # ["a", "b"] read as 0 0 over JSON: a dialog that does not exist (measured).
    fault = (404, "Dialog not found") if len(params) == 2 else (500, "Invalid parameters")
    assert env.error("dlg.end_dlg", *params) == fault


# -- stats --------------------------------------------------------------------------


def test_get_statistics_shapes(env: Env) -> None:
    env.core.proxy.stats.rcv_requests = 4
    everything = env.result("stats.get_statistics", "all")
    assert everything == sorted(everything)
    assert all(isinstance(x, str) and " = " in x for x in everything)
    groups = {x.split(":")[0] for x in everything}
    # The server's core has its edge security gate: Kamailio's pike: group too.
    assert groups == {"core", "dialog", "dispatcher", "pike", "sipfleet", "sl", "tmx"}
    assert env.result("stats.get_statistics", "dialog:") == [
        "dialog:active_dialogs = 0",
        "dialog:early_dialogs = 0",
        "dialog:expired_dialogs = 0",
        "dialog:failed_dialogs = 0",
        "dialog:processed_dialogs = 0",
    ]
    assert env.result("stats.get_statistics", "rcv_requests") == ["core:rcv_requests = 4"]
    assert (
        env.result("stats.get_statistics", "rcv_requests", "rcv_requests")
        == ["core:rcv_requests = 4"] * 2
    )
    # Measured on Kamailio 5.6.3: a group:name, an unknown group, a wrong case: nothing.
    for what in ("core:rcv_requests", "nosuch:", "nosuch", "ALL", "tm:", ":"):
        assert env.result("stats.get_statistics", what) == [], what
    # The scan stops at the first non-string.
    assert env.result("stats.get_statistics", "dialog:", 5, "rcv_requests") == env.result(
        "stats.get_statistics", "dialog:"
    )
    assert env.error("stats.get_statistics") == (400, "Please provide which stats to retrieve")
    assert env.error("stats.get_statistics", 5) == (400, "Please provide which stats to retrieve")
    assert "dispatcher:destinations = 3" in everything
    assert "sipfleet:events_state_changed = 0" not in everything
    env.result("dispatcher.set_state", "ip", 1, "all")
    assert env.result("stats.get_statistics", "events_state_changed") == [
        "sipfleet:events_state_changed = 1"
    ]


def test_get_statistics_over_binrpc_is_one_line_per_record(env: Env) -> None:
    assert env.kamcmd("stats.get_statistics", "tmx:", "early_dialogs") == [
        "tmx:UAC_transactions = 0",
        "tmx:UAS_transactions = 0",
        "tmx:inuse_transactions = 0",
        "tmx:rpl_generated = 0",
        "tmx:rpl_received = 0",
        "tmx:rpl_relayed = 0",
        "tmx:rpl_sent = 0",
        "dialog:early_dialogs = 0",
    ]
    assert env.kamcmd("stats.get_statistics", 5, "x") == RpcFault(
        400, "Please provide which stats to retrieve"
    )


def test_reset_statistics_keeps_gauges(env: Env) -> None:
    stats = env.core.proxy.stats
    stats.rcv_requests = 9
    dialogs = env.core.proxy.dialogs
    _dialog(env)
    dialogs.expired = 3
    assert env.result("stats.reset_statistics", "all") == {}
    assert env.result("stats.get_statistics", "rcv_requests", "dialog:") == [
        "core:rcv_requests = 0",
        "dialog:active_dialogs = 1",  # a gauge: never reset
        "dialog:early_dialogs = 0",
        "dialog:expired_dialogs = 0",
        "dialog:failed_dialogs = 0",
        "dialog:processed_dialogs = 0",
    ]
    stats.rcv_requests += 2
    assert env.result("stats.get_statistics", "rcv_requests") == ["core:rcv_requests = 2"]
    assert stats.rcv_requests == 11  # the core's counter itself is untouched
    assert env.error("stats.reset_statistics") == (400, "Please provide stats name")
    assert env.error("stats.reset_statistics", 5) == (400, "Please provide stats name")
    assert env.kamcmd("stats.reset_statistics", "all") == []


def test_stats_book_select() -> None:
    from sipfleet.control.methods import _Stat

    book = StatsBook(lambda: [_Stat("b", "x", lambda: 1), _Stat("a", "x", lambda: 2)])
    assert book.lines(["x"]) == ["a:x = 2"]  # first in group order
    assert book.lines(["all"]) == ["a:x = 2", "b:x = 1"]


# -- sipfleet's own ----------------------------------------------------------------


def test_sipfleet_status_and_events(env: Env) -> None:
    env.result("dispatcher.set_state", "d", 1, "sip:127.0.0.1:5071")
    status = env.result("sipfleet.status")
    assert status["sets"] == 2 and status["destinations"] == 3 and status["usable"] == 2
    assert status["uptime"] >= 42 and status["accepting"] is True
    assert status["events"] == {"state-changed": 1}
    (event,) = env.result("sipfleet.events", 1)
    assert event["event"] == "state-changed" and event["time"].endswith("+00:00")
    assert len(env.result("sipfleet.events")) == 1
    assert env.result("sipfleet.events", 0) == []
    assert isinstance(env.kamcmd("sipfleet.status")[0], dict)
