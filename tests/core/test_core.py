"""The node's core as ``build_core`` makes it for the server: the admin service
(set_state and drain through one path), dialog persistence as a bounded write
buffer, OPTIONS probing, and core.* / drain RPCs, on a fake clock with no sockets
(a real SQLite store in tmp_path)."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sipfleet.aio.events import EventBus
from sipfleet.config import Config, DispatcherConfig, StoreConfig
from sipfleet.control.core_methods import ServerInfo, register_core_methods
from sipfleet.control.jsonrpc import JsonRpcHandler
from sipfleet.control.registry import RpcFault
from sipfleet.core.factory import build_core
from sipfleet.core.node import Core
from sipfleet.core.persist import DialogWrites
from sipfleet.core.rpc import register_rpc
from sipfleet.dispatch import AdminState, parse_list
from sipfleet.proxy.dialogs import CONFIRMED, Dialog
from sipfleet.proxy.net import Peer
from sipfleet.security.gate import BACKEND
from sipfleet.store.dialogs import DialogStore
from sipfleet.store.local import LocalStore
from sipfleet.store.sqlite import SqliteStore
from sipfleet.testing import UA, RecordingSink

LIST = "1 sip:127.0.0.1:5070 0 0 duid=media-1\n1 sip:127.0.0.1:5071 0 0\n"
STATE_KEYS = {"event", "time", "set", "uri", "duid", "state", "admin_changed", "stored", "by"}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_780_000_000.0 + self.t


class Node:
    """One core over a SQLite file, its RPCs through the JSON-RPC handler."""

    def __init__(self, tmp_path: Path, *, persist: bool = False, **disp: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.db = SqliteStore(tmp_path / "sipfleet.db")
        self.db.init()
        if not self.db.load():
            self.db.replace(parse_list(LIST, "t"))
        self.dialog_db = DialogStore(str(tmp_path / "sipfleet.db")) if persist else None
        self.sink = RecordingSink()
        self.events = EventBus()
        self.woken: list[float] = []
        cfg = Config(
            dispatcher=DispatcherConfig(**{"ping_interval": 0, **disp}),
            store=StoreConfig(persist_dialogs=persist),
        )
        self.core: Core = build_core(
            cfg,
            self.db.load(),
            self.db.load_admin_details(),
            now=self.clock.now,
            wall=self.clock.wall,
            sink=self.sink,
            events=self.events,
            lock=asyncio.Lock,
            store=LocalStore(self.db, self.dialog_db),
            wake=self.woken.append,
        )
        self.registry = self.core.registry
        register_rpc(self.registry, self.core)
        info = ServerInfo(started_at=self.clock.wall() - 42, now=self.clock.wall)
        register_core_methods(self.registry, info)
        self.json = JsonRpcHandler(self.registry)

    def call(self, method: str, *params: Any) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
        reply = self.json.handle(body.encode())
        if inspect.isawaitable(reply):
            reply = self.loop.run_until_complete(reply)
        doc: dict[str, Any] = json.loads(reply.body)
        return doc["result"] if "result" in doc else (doc["error"]["code"], doc["error"]["message"])

    def dialog(self, n: int = 1) -> Dialog:
        """An answered call on sip:127.0.0.1:5070 (duid media-1)."""
        dest = self.core.dispatcher.find(1, "sip:127.0.0.1:5070")
        assert dest is not None
        dlg = Dialog(b"call-%d" % n, b"tag-%d" % n, n, self.clock.now())
        dlg.state, dlg.to_tag = CONFIRMED, b"callee-%d" % n
        dlg.from_line, dlg.to_line = b"From: <sip:a@x>;tag=t", b"To: <sip:b@y>;tag=c"
        dlg.dest, dlg.load_key = dest, dest.load_key
        dlg.lifetime = 3600
        self.core.proxy.dialogs.restore(dlg, self.clock.now(), 3600)
        return dlg

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events.recent]

    def close(self) -> None:
        self.loop.close()
        self.db.close()
        if self.dialog_db is not None:
            self.dialog_db.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.close()


def test_drain_waits_for_the_calls_then_says_drained_once(node: Node) -> None:
    dlg = node.dialog()
    (entry,) = node.call("dispatcher.drain", 1, "sip:127.0.0.1:5070")
    assert entry["STATE"] == "draining" and entry["ACTIVE_CALLS"] == 1
    assert entry["DRAINED"] is False and entry["BY"] == "rpc"
    assert entry["SINCE"] == "2026-05-28T20:43:20Z" and entry["FOR"] == 0
    assert node.db.load_admin_states() == {(1, "sip:127.0.0.1:5070"): AdminState.DRAINING}
    event = node.events.recent[-1]
    assert set(event) == STATE_KEYS
    assert (event["state"], event["admin_changed"], event["stored"]) == ("draining", 1, True)
    node.clock.t += 30
    (status,) = node.call("dispatcher.drain_status")
    assert status["FOR"] == 30 and status["DRAINED"] is False
    node.core.proxy.dialogs.end(dlg, "bye", node.clock.now())
    assert node.kinds()[-1] == "drained"
    assert node.events.recent[-1]["waited"] == 30
    assert node.call("dispatcher.drain_status", "media-1")[0]["DRAINED"] is True
    node.core.admin.check_drained(dlg.dest)  # type: ignore[arg-type]
    assert node.kinds().count("drained") == 1  # once per drain
    # Draining again changes nothing: no event, no write.
    node.call("dispatcher.drain", 1, "sip:127.0.0.1:5070")
    assert node.kinds().count("state-changed") == 1
    (back,) = node.call("dispatcher.undrain", "media-1")
    assert back["STATE"] == "enabled" and node.db.load_admin_states() == {}
    assert node.call("dispatcher.drain", 9, "sip:nowhere") == (404, "Destination Not Found")


def test_set_state_and_drain_share_one_event_shape_and_one_store_path(node: Node) -> None:
    assert node.call("dispatcher.set_duid_state", "d", 1, "media-1") == (
        "Ok. Dispatcher state updated."
    )
    by_duid = node.events.recent[-1]
    assert set(by_duid) == STATE_KEYS and by_duid["duid"] == "media-1" and by_duid["uri"] is None
    node.call("dispatcher.set_state", "a", 1, "sip:127.0.0.1:5070")
    node.call("dispatcher.drain", 1, "sip:127.0.0.1:5071")
    changes = [e for e in node.events.recent if e["event"] == "state-changed"]
    assert [set(e) for e in changes] == [STATE_KEYS] * 3
    assert node.db.load_admin_states() == {(1, "sip:127.0.0.1:5071"): AdminState.DRAINING}


def test_a_drain_survives_a_restart(tmp_path: Path) -> None:
    first = Node(tmp_path)
    first.call("dispatcher.drain", "media-1")
    first.close()
    again = Node(tmp_path)
    try:
        (entry,) = again.call("dispatcher.drain_status")
        assert (entry["URI"], entry["STATE"], entry["BY"]) == (
            "sip:127.0.0.1:5070",
            "draining",
            "rpc",
        )
    finally:
        again.close()


def test_core_methods_run_on_the_injected_clock(node: Node) -> None:
    assert node.call("core.uptime")["uptime"] == 42
    node.clock.t += 8
    assert node.call("core.uptime")["uptime"] == 50
    assert node.call("sipfleet.status")["destinations"] == 2


def test_probes_go_out_through_the_proxy_and_answer_the_dispatcher(tmp_path: Path) -> None:
    n = Node(tmp_path, ping_interval=10, probing_mode=1)  # 1: every destination
    try:
        first = n.core.dispatcher.next_probe_at()
        assert first is not None
        n.clock.t = first
        nxt = n.core.probe(n.clock.now())
        sent = n.sink.take()
        assert sorted(p.port for p, _ in sent) == [5070, 5071]
        assert all(m.method == "OPTIONS" for _, m in sent)
        assert nxt is not None and nxt > n.clock.now()
        # No answer: the probes time out, the dispatcher takes both down.
        n.clock.t += 40
        n.core.proxy.handle_timer(n.clock.now())
        downs = [e for e in n.events.recent if e["event"] == "dst-down"]
        assert sorted(e["uri"] for e in downs) == ["sip:127.0.0.1:5070", "sip:127.0.0.1:5071"]
        assert {e["reason"] for e in downs} == {"probe timeout"}
    finally:
        n.close()


# -- dialog persistence ------------------------------------------------------------


def _dlg(n: int) -> Dialog:
    return Dialog(b"c%d" % n, b"t%d" % n, n, 0.0)


def test_the_write_buffer_is_bounded_and_counts_what_it_drops() -> None:
    w = DialogWrites(enabled=True, max_pending=2)
    for n in range(4):
        w.confirmed(_dlg(n))
    assert len(w) == 2 and w.dropped == 2


def test_a_short_call_never_reaches_the_disk_an_ended_stored_one_soon() -> None:
    woken: list[float] = []
    w = DialogWrites(enabled=True)
    w.wake = woken.append
    short, long = _dlg(1), _dlg(2)
    w.confirmed(short)
    w.ended(short, 5.0)
    assert w.take() is None and woken == []
    w.confirmed(long)
    batch = w.take()
    assert batch is not None and batch.puts == [long] and batch.deletes == []
    assert w.take() is None  # one batch in flight at a time
    w.ended(long, 6.0)
    assert woken == [6.0 + w.delete_delay]
    assert w.take() is None
    w.done(6.001)
    assert woken == [6.0 + w.delete_delay]  # its deadline stands
    assert not w.due(6.009) and w.due(6.01)
    batch = w.take()
    assert batch is not None and batch.deletes == [(b"c2", b"t2")]
    w.done(6.02)
    w.ended(_dlg(3), 6.03)  # never stored: nothing to delete, no timer
    assert woken == [6.0 + w.delete_delay]


def test_dialogs_written_by_one_core_come_back_in_the_next(tmp_path: Path) -> None:
    first = Node(tmp_path, persist=True)
    dlg = first.dialog(7)
    first.core.writes.confirmed(dlg)
    batch = first.core.take_writes()
    assert batch is not None
    puts, deletes = batch
    first.loop.run_until_complete(first.core.store.apply_dialogs(puts, deletes))  # type: ignore[union-attr]
    first.core.writes.done(first.clock.now())
    first.close()
    again = Node(tmp_path, persist=True)
    try:
        store = again.core.store
        assert store is not None
        records = again.loop.run_until_complete(store.load_dialogs(again.clock.wall()))
        again.core.restore_dialogs(records)
        (back,) = list(again.core.proxy.dialogs)
        assert (back.call_id, back.h_id, back.state) == (b"call-7", 7, CONFIRMED)
        assert again.core.load("media-1") == 1
        assert (b"call-7", b"tag-7") in again.core.writes.stored
        # Its end is a deletion (it is on the disk), not a forgotten write.
        again.core.proxy.dialogs.end(back, "bye", again.clock.now())
        batch = again.core.take_writes()
        assert batch == ([], [(b"call-7", b"tag-7")])
    finally:
        again.close()


def test_end_dlg_ends_the_dialog_in_the_core(node: Node) -> None:
    node.dialog()
    (listed,) = node.call("dlg.list")
    node.call("dlg.end_dlg", listed["h_entry"], listed["h_id"])
    assert len(node.core.proxy.dialogs) == 0
    assert node.kinds() == ["dlg-ended"]


def test_one_deadline_drives_probes_and_dialog_writes(tmp_path: Path) -> None:
    n = Node(tmp_path, persist=True, ping_interval=10, probing_mode=1)
    try:
        core = n.core
        # The gate's first upkeep and the first probe round are due at once.
        assert core.gate.next_sweep() <= n.clock.now()
        assert core.next_deadline() <= core.dispatcher.next_probe_at() == n.clock.now()
        assert core.handle_timer(n.clock.now()) is None
        assert core.gate.next_sweep() == n.clock.now() + 1.0  # then once a second
        sent = n.sink.take()
        assert sorted(p.port for p, m in sent if m.method == "OPTIONS") == [5070, 5071]
        # The probes' retransmission timer (T1) is the next deadline ...
        assert core.next_deadline() == n.clock.now() + 0.5
        # ... until dialog writes start: every 200 ms.
        core.writes.start(n.clock.now())
        assert core.next_deadline() == n.clock.now() + core.writes.period
        n.clock.t += core.writes.period
        assert core.handle_timer(n.clock.now()) is None  # due, but nothing to write
        dlg = n.dialog(3)
        core.writes.confirmed(dlg)
        n.clock.t += core.writes.period
        puts, deletes = core.handle_timer(n.clock.now()) or ([], [])
        assert [r.call_id for r in puts] == [b"call-3"] and deletes == []
        core.writes.done(n.clock.now())
        # A stored dialog's end asks for an earlier wake-up than the period.
        core.proxy.dialogs.end(dlg, "bye", n.clock.now())
        assert n.woken == [n.clock.now() + core.writes.delete_delay]
        assert core.next_deadline() == n.woken[0]
        n.clock.t = n.woken[0]
        assert core.handle_timer(n.clock.now()) == ([], [(b"call-3", b"tag-3")])
    finally:
        n.close()


def test_call_runs_the_registered_methods(node: Node) -> None:
    assert node.core.call("dispatcher.hash", [4, "a"]) == node.call("dispatcher.hash", 4, "a")
    listing = node.core.call("dispatcher.list")
    assert isinstance(listing, dict) and len(listing["RECORDS"]) == 1
    with pytest.raises(RpcFault, match="Method Not Found"):
        node.core.call("no.such")
    drained = node.core.call("dispatcher.drain", ["media-1"])
    assert inspect.isawaitable(drained)
    (entry,) = node.loop.run_until_complete(drained)
    assert entry["STATE"] == "draining"


def test_an_earlier_sip_timer_wakes_the_adapter(node: Node) -> None:
    """The adapter arms one wake-up for next_deadline(); a new SIP timer due before
    it (an INVITE's retransmission and timeout timers) asks for an earlier one,
    a later one does not, and timers added while handle_timer runs never do."""
    core = node.core
    now = node.clock.now()
    core.handle_timer(now)
    core.armed(now + 10.0)
    node.woken.clear()
    ua = UA("127.0.0.1", 5080)
    caller = Peer(0, "127.0.0.1", 5080)
    # An INVITE through the proxy: its transactions' timers (T1 = 0.5 s ...)
    core.receive(ua.invite("sip:svc@127.0.0.1:5060"), caller, now)
    assert node.sink.take(), "the INVITE was not forwarded"
    assert node.woken, "no wake-up asked for the new transactions' timers"
    assert node.woken[0] < now + 10.0
    assert node.woken == sorted(node.woken, reverse=True)  # each one earlier still
    assert core.next_deadline() == min(node.woken)
    first = list(node.woken)
    core.armed(min(first))
    # Same durations on the same clock: none earlier than what is armed.
    core.receive(ua.invite("sip:svc@127.0.0.1:5060"), caller, now)
    assert node.woken == first
    # While the timers run, the adapter re-arms afterwards anyway: no wake-ups.
    core.handle_timer(now + 0.5)
    core.receive(ua.invite("sip:svc@127.0.0.1:5060"), caller, now + 0.5)
    assert node.woken == first


def test_the_gate_trusts_destinations_added_and_forgets_removed_ones(tmp_path: Path) -> None:
    """dispatcher.add/remove change the back ends the security gate trusts, as a
    reload does: the relay rules and the gate keep one set of hosts."""
    n = Node(tmp_path, reload_delta=0)
    try:
        gate = n.core.gate
        assert gate.trust("127.0.0.9", 5060, "udp") != BACKEND
        assert n.call("dispatcher.add", 1, "sip:127.0.0.9:5060") == (
            "Ok. Dispatcher destination added."
        )
        assert gate.trust("127.0.0.9", 5060, "udp") == BACKEND
        assert n.core.router.is_backend("127.0.0.9")
        assert n.call("dispatcher.remove", 1, "sip:127.0.0.9:5060") == (
            "Ok. Dispatcher destination removed."
        )
        assert gate.trust("127.0.0.9", 5060, "udp") != BACKEND
        assert gate.trust("127.0.0.1", 5070, "udp") == BACKEND  # the others stay
    finally:
        n.close()
