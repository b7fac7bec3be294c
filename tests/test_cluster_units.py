"""sipfleet.aio.cluster without Redis: what it does with the messages of other
nodes (loads summed, admin states applied, BYEs ending our dialogs, its own
and malformed messages skipped) and the load view the router reads.
The Redis side is tested against a real redis-server in tests/e2e."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from sipfleet.aio.cluster import Cluster, ClusterLoad, _safe
from sipfleet.aio.events import EventBus
from sipfleet.config import DispatcherConfig
from sipfleet.config.cluster import ClusterConfig
from sipfleet.dispatch import Dispatcher, parse_list
from sipfleet.dispatch.state import AdminState
from sipfleet.proxy.dialogs import CONFIRMED, Dialog, DialogTable
from sipfleet.transaction.timers import Timers

LIST = "1 sip:10.0.0.1:5060 0 0 duid=a\n1 sip:10.0.0.2:5060 0 0 duid=b\n"


class Loop:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now


def make(node: str = "A") -> tuple[Cluster, Any]:
    table = DialogTable(Timers())
    app: Any = SimpleNamespace(
        proxy=SimpleNamespace(dialogs=table),
        dispatcher=Dispatcher(DispatcherConfig(ping_interval=0).to_settings(), parse_list(LIST)),
        events=EventBus(),
        loop=Loop(),
        store=None,
    )
    cfg = ClusterConfig(redis="redis://127.0.0.1:1/0", heartbeat=0.1, load_ttl=2.0)
    return Cluster(app, cfg, node), app


def msg(node: str, **body: Any) -> bytes:
    return orjson.dumps({"n": node, "i": "other", **body})


def test_remote_loads_are_summed_and_added_to_local_counts() -> None:
    c, app = make()
    app.proxy.dialogs.loads["a"] = 2
    c._on_message(msg("B", t="load", l={"a": 3, "b": 1}))
    c._on_message(msg("C", t="load", l={"a": 1}))
    view: ClusterLoad = c.view
    assert (view.load("a"), view.load("b"), view.load("zz")) == (6, 1, 0)
    c._on_message(msg("C", t="load", l={}))  # C's calls ended
    assert view.load("a") == 5
    c._on_message(msg("B", t="gone"))
    assert view.load("a") == 2 and c.remote.keys() == {"C"}


def test_own_and_malformed_messages_are_skipped() -> None:
    c, _ = make()
    c._on_message(c._msg({"t": "load", "l": {"a": 9}}))
    assert c.view.load("a") == 0 and c.received == 0
    c._on_message(msg("A", t="load", l={"a": 9}))  # another process named as we are
    assert c.view.load("a") == 0 and c.name_clashes == 1
    for bad in (b"not json", b"{}", msg("B", t="load", l={"a": "x"}), msg("B", t="admin", s=[[1]])):
        c._on_message(bad)
    assert c.bad == 4 and c.view.load("a") == 0


def test_admin_state_of_another_node_is_applied_without_an_event() -> None:
    c, app = make()
    seen: list[Any] = []
    app.events.subscribe(seen.append)
    c._on_message(msg("B", t="admin", s=[[1, "sip:10.0.0.2:5060", "draining", 1.5e9, "ops"]]))
    d = app.dispatcher
    st = d.state(d.find(1, "sip:10.0.0.2:5060"))
    assert (st.admin, st.admin_by) == (AdminState.DRAINING, "ops")
    assert seen == []  # the node that made the change emits it, once


def test_a_bye_through_another_node_ends_our_dialog_and_its_load() -> None:
    c, app = make()
    table: DialogTable = app.proxy.dialogs
    dlg = Dialog(b"call-1", b"ft", 1, 0.0)
    dlg.state, dlg.to_tag, dlg.load_key = CONFIRMED, b"tt", "a"
    table.restore(dlg, 0.0, 100.0)
    assert table.load("a") == 1
    # Either side's BYE: tags in either order.
    c._on_message(msg("B", t="end", d=[["call-1", "tt", "ft"], ["other", "x", "y"]]))
    assert table.load("a") == 0 and len(table) == 0 and c.ended_here == 1


def test_silent_nodes_expire_after_load_ttl() -> None:
    c, app = make()
    c._on_message(msg("B", t="load", l={"a": 4}))
    app.loop.now += 1.0
    c._on_message(msg("C", t="load", l={"a": 1}))

    async def run_until(t: float) -> None:
        app.loop.now = t
        task = asyncio.ensure_future(c._expire_loop())
        # sleep-ok: one pass of the expiry loop on a fake clock (it sleeps this long)
        await asyncio.sleep(min(c.cfg.heartbeat, c.cfg.load_ttl / 4) + 0.1)
        task.cancel()

    asyncio.run(run_until(100.0 + c.cfg.load_ttl + 0.5))  # B silent for longer than load_ttl
    assert c.remote.keys() == {"C"} and c.view.load("a") == 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://:pw@h:6379/0", "redis://***@h:6379/0"),
        ("rediss://user:p@ss@h/1", "rediss://***@h/1"),
    ],
)
def test_the_status_never_shows_the_password(url: str, shown: str) -> None:
    assert _safe(url) == shown
