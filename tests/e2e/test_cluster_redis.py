"""Issue 12, the cluster half: two or three ``sipfleet run`` nodes on one PostgreSQL
(dbservers.py) and one Redis (redisserver.py), SIPp UACs spread over them.

- a drain made on node A shows on B and C within 500 ms (the median of 100 tries;
  the 99th within 1.5 s, a loaded machine's tail; both printed); ``dispatcher.set_state`` too; ``dispatcher.add`` on B is listed on C
  after the reload window;
- ``maxload`` of 4 holds across two nodes: six held calls put exactly four on it;
- Redis killed mid-run: zero failed calls, the status says so, the counts
  reconcile when it is back;
- a BYE through node B for a call set up through A ends A's dialog (A's load goes
  at once); A killed mid-run: calls through B continue, A's load expires after
  ``load_ttl``, and the BYEs of A's calls, sent through B, work.

A node's "shared address" is a UDP forwarder standing in for a VIP (``Vip``): the
UACs send to it, Record-Route names it (``[cluster] advertise``), and it forwards
requests to whichever node is "active" (the test switches it, as a VIP fails over).
SIPp's UAS answers every request of a call to the address its INVITE came from,
not to the top Via as RFC 3261 18.2.2 says; run with ``-rsa VIP`` it answers to the
forwarder, which sends responses on by their top Via, as a compliant UAS would.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import statistics
import threading
import time
from collections import Counter
from typing import Any

import fleet
import pytest
import redis
from dbservers import PgServer, pg_server_fixture  # noqa: F401  (fixture)
from redisserver import RedisServer, redis_server_fixture  # noqa: F401  (fixture)
from test_ops_acceptance import HookServer

pytestmark = pytest.mark.e2e
sipp_env = fleet.harness.sipp_env

SECRET = "cluster-route-secret-0123456789"
RELOAD_DELTA = 1.0
LOAD_TTL = 2.0
_prefixes = itertools.count(1)


class Vip:
    """A UDP address that forwards every datagram to the active node (a VIP)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((fleet.HOST, 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.target: int | None = None
        self.forwarded = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{fleet.HOST}:{self.port}"

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            port = _via_port(data) if data.startswith(b"SIP/2.0 ") else self.target
            if port is not None:
                self.sock.sendto(data, (fleet.HOST, port))
                self.forwarded += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def _via_port(response: bytes) -> int | None:
    """The sent-by port of a response's top Via (where RFC 3261 18.2.2 sends it)."""
    for line in response.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"via", b"v"):
            sent_by = value.split()[1].split(b";")[0].split(b",")[0]
            return int(sent_by.rpartition(b":")[2])
    return None


@pytest.fixture
def vip() -> Any:
    v = Vip()
    yield v
    v.close()


def insert(pg: PgServer, url: str, uri: str, attrs: str = "", flags: int = 0) -> None:
    pg.sql(
        url,
        "INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) "
        f"VALUES (1, '{uri}', {flags}, 0, '{attrs}', 'cluster test')",
    )


def node(
    env: Any,
    db: str,
    redis: RedisServer,
    prefix: str,
    name: str,
    *,
    dispatcher: dict[str, Any] | None = None,
    advertise: str = "",
    webhooks: list[dict[str, Any]] | None = None,
) -> fleet.Fleet:
    f = fleet.Fleet(
        env._dir(name),
        [],
        {"first_response_timeout": 1.0, "route_secret": SECRET},
        {"reload_delta": RELOAD_DELTA, **(dispatcher or {})},
        webhooks=webhooks or [],
    )
    f.sections["store"] = {"url": db, "timeout": 1.0, "persist_dialogs": False}
    f.sections["cluster"] = {
        "redis": redis.url,
        "node": name,
        "key_prefix": prefix,
        "heartbeat": 0.5,
        "load_ttl": LOAD_TTL,
        "timeout": 0.3,
        **({"advertise": advertise} if advertise else {}),
    }
    env.procs.append(f)
    f.start()
    return f


def cluster(f: fleet.Fleet) -> dict[str, Any]:
    st: dict[str, Any] = f.rpc("sipfleet.status")["cluster"]
    return st


def joined(nodes: list[fleet.Fleet]) -> None:
    """Every node hears every other."""
    for f in nodes:
        fleet.wait_for(
            "the cluster to form",
            lambda f=f: (s := cluster(f))["ok"] and len(s["nodes"]) == len(nodes) - 1,
            10,
        )


def prefix() -> str:
    return f"t{os.getpid()}-{next(_prefixes)}:"


def admin_of(f: fleet.Fleet, uri: str) -> str:
    st: str = f.rpc("dispatcher.drain_status", 1, uri)[0]["STATE"]
    return st


def test_drain_shows_on_every_node_within_500ms(sipp_env, pg_server, redis_server) -> None:
    db = pg_server.kamailio_db()
    a_uas = fleet.uas(sipp_env)
    insert(pg_server, db, a_uas.uri, "duid=m1")
    p = prefix()
    nodes = [node(sipp_env, db, redis_server, p, n) for n in ("A", "B", "C")]
    a, b, c = nodes
    joined(nodes)
    uri = a_uas.uri

    lat: list[float] = []
    for i in range(100):
        want = "draining" if i % 2 == 0 else "enabled"
        t0 = time.perf_counter()
        a.rpc("dispatcher.drain" if want == "draining" else "dispatcher.undrain", 1, uri)
        for other in (b, c):
            fleet.wait_for(
                f"{want} on another node",
                lambda o=other, w=want: admin_of(o, uri) == w,
                15,
                0.002,
            )
        lat.append(time.perf_counter() - t0)
    lat.sort()
    p50, p99 = statistics.median(lat) * 1000, lat[98] * 1000
    print(f"\ndrain on A -> seen on B and C: p50 {p50:.1f} ms, p99 {p99:.1f} ms (100 tries)")
    # The 500 ms holds for the typical try; the tail gets a loaded machine's
    # slack (two cores, three nodes, Redis, PostgreSQL and the polling). Through the
    # store instead of Redis a change would wait for reload_delta (1 s) on most tries.
    assert p50 < 500 and p99 < 1500, lat

    # Kamailio's set_state goes the same way, and the store has it (a restart keeps it).
    b.rpc("dispatcher.set_state", "d", 1, uri)
    fleet.wait_for("disabled on C", lambda: c.flags()[uri].startswith("D"), 15, 0.01)
    fleet.wait_for("disabled on A", lambda: a.flags()[uri].startswith("D"), 15, 0.01)
    b.rpc("dispatcher.set_state", "a", 1, uri)
    fleet.wait_for("active on C", lambda: c.flags()[uri].startswith("A"), 15, 0.01)

    # dispatcher.add on B: listed on C after the reload window (NOTIFY).
    t0 = time.monotonic()
    b.rpc("dispatcher.add", 2, "sip:127.0.0.1:5099", 0, 0, "duid=late")
    fleet.wait_for(
        "B's add listed on C",
        lambda: "sip:127.0.0.1:5099" in c.targets(),
        RELOAD_DELTA + 5,
    )
    print(f"dispatcher.add on B -> listed on C: {time.monotonic() - t0:.2f} s")
    assert "sip:127.0.0.1:5099" in a.targets()


def test_maxload_holds_across_nodes(sipp_env, pg_server, redis_server) -> None:
    """Algorithm 10, one UAS with maxload=4; six held calls, three through each node,
    interleaved 125 ms apart: four answered, two refused (503), never five on it."""
    db = pg_server.kamailio_db()
    x = fleet.uas(sipp_env)
    insert(pg_server, db, x.uri, "duid=x;maxload=4")
    p = prefix()
    disp = {"algorithm": 10}
    a = node(sipp_env, db, redis_server, p, "A", dispatcher=disp)
    b = node(sipp_env, db, redis_server, p, "B", dispatcher=disp)
    joined([a, b])

    hold = 4000
    u1 = fleet.uac(sipp_env, "uac_answer_or_503.xml", a, calls=3, rate=4, duration_ms=hold)
    time.sleep(0.125)  # sleep-ok: pacing, the two UACs' calls interleaved
    u2 = fleet.uac(sipp_env, "uac_answer_or_503.xml", b, calls=3, rate=4, duration_ms=hold)
    r1, r2 = u1.wait(), u2.wait()
    assert r1.failed == 0 and r2.failed == 0, (r1.summary(), r2.summary())
    outcomes = Counter(ln.kind for u in (u1, u2) for ln in fleet.uac_log(u))
    assert outcomes == {"ANSWERED": 4, "REJECTED": 2}, outcomes
    assert len(x.invites()) == 4
    assert _max_overlap(x.log()) == 4
    fleet.wait_for("the load back to 0", lambda: not cluster(a)["remote_load"], 15)


def _max_overlap(lines: list[Any]) -> int:
    """Most calls open at once on a UAS, from its INVITE and BYE log lines."""
    edges = sorted((x.time, 1 if x.kind == "INVITE" else -1) for x in lines)
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_redis_killed_mid_run(sipp_env, pg_server, redis_server) -> None:
    db = pg_server.kamailio_db()
    x, y, z = (fleet.uas(sipp_env) for _ in range(3))
    for name, u in (("x", x), ("y", y), ("z", z)):
        insert(pg_server, db, u.uri, f"duid={name}")
    p = prefix()
    disp = {"algorithm": 10}
    a = node(sipp_env, db, redis_server, p, "A", dispatcher=disp)
    b = node(sipp_env, db, redis_server, p, "B", dispatcher=disp)
    joined([a, b])

    a.rpc("dispatcher.drain", 1, x.uri)
    fleet.wait_for("B to hear of the drain", lambda: admin_of(b, x.uri) == "draining", 15)
    u1 = fleet.uac(sipp_env, "uac_logged.xml", a, calls=30, rate=6, duration_ms=1500)
    u2 = fleet.uac(sipp_env, "uac_logged.xml", b, calls=30, rate=6, duration_ms=1500)
    # Mid-run: calls up through both nodes when Redis goes.
    fleet.wait_for(
        "calls up through A and B",
        lambda: all(f.rpc("dlg.stats_active")["ongoing"] for f in (a, b)),
        15,
        seen=lambda: [f.rpc("dlg.stats_active") for f in (a, b)],
    )
    redis_server.stop()
    try:
        fleet.wait_for("A to say Redis is down", lambda: not cluster(a)["ok"], 15)
        assert "cluster" in a.rpc("core.info")
        # Admin changes while Redis is down still work (the store has them).
        a.rpc("dispatcher.drain", 1, y.uri)
        b.rpc("dispatcher.undrain", 1, x.uri)
        time.sleep(1.5)  # sleep-ok: the outage under test lasts a while, calls flowing
    finally:
        redis_server.start()
    joined([a, b])
    # Changes made while Redis was down reach the others from the store on reconnect:
    # a drain, and an undrain (no row in the store) of a drain they had heard of.
    fleet.wait_for("B to reread the drain", lambda: admin_of(b, y.uri) == "draining", 15)
    fleet.wait_for("A to reread the undrain", lambda: admin_of(a, x.uri) == "enabled", 15)
    a.rpc("dispatcher.undrain", 1, y.uri)
    r1, r2 = u1.wait(), u2.wait()
    assert r1.failed == 0 and r2.failed == 0, (r1.summary(), r2.summary())
    assert r1.successful == 30 and r2.successful == 30

    # Counts reconcile: each node's view of the other equals the other's own count.
    def agree() -> bool:
        sa, sb = cluster(a), cluster(b)
        return sa["remote_load"] == sb["local_load"] and sb["remote_load"] == sa["local_load"]

    fleet.wait_for("the counts to reconcile", agree, 15)
    assert "cluster" not in a.rpc("core.info")


def test_any_node_carries_any_dialog_and_a_dead_nodes_load_expires(
    sipp_env, pg_server, redis_server, vip: Vip
) -> None:
    db = pg_server.kamailio_db()
    x = fleet.uas(sipp_env, extra=["-rsa", vip.address])
    insert(pg_server, db, x.uri, "duid=x")
    p = prefix()
    a = node(sipp_env, db, redis_server, p, "A", advertise=vip.address)
    b = node(sipp_env, db, redis_server, p, "B", advertise=vip.address)
    joined([a, b])

    # 1. Set up through A (the VIP points at A), hung up through B: A's count goes at
    #    once (B tells A), not after load_ttl.
    vip.target = a.port
    u = fleet.uac(sipp_env, "uac_logged.xml", vip.address, calls=3, rate=10, duration_ms=2500)
    fleet.wait_for("A to hold 3 calls", lambda: a.rpc("dlg.stats_active")["ongoing"] == 3, 15)
    fleet.wait_for("B to count them", lambda: cluster(b)["remote_load"].get("x") == 3, 15)
    rc = redis.Redis.from_url(redis_server.url)
    try:
        fleet.wait_for(
            "A's dialogs in Redis",
            lambda: [rc.get(k) for k in rc.scan_iter(match=p + "dlg:*")] == [b"A"] * 3,
            15,
        )
        # A drain on B waits for A's calls too: they are B's to count.
        b.rpc("dispatcher.drain", 1, x.uri)
        [entry] = b.rpc("dispatcher.drain_status", 1, x.uri)
        assert (entry["ACTIVE_CALLS"], entry["DRAINED"]) == (3, False), entry
        vip.target = b.port
        r = u.wait()
        fleet.wait_for("the records gone", lambda: not list(rc.scan_iter(match=p + "dlg:*")), 15)
    finally:
        rc.close()
    for f in (a, b):
        fleet.wait_for(
            "drained everywhere",
            lambda f=f: f.rpc("dispatcher.drain_status", 1, x.uri)[0]["DRAINED"],
            15,
        )
        assert f.rpc("sipfleet.status")["events"].get("drained") == 1
    b.rpc("dispatcher.undrain", 1, x.uri)
    fleet.wait_for("undrained on A", lambda: admin_of(a, x.uri) == "enabled", 15)
    assert r.failed == 0 and r.successful == 3, r.summary()
    t_bye = time.monotonic()
    fleet.wait_for("A's dialogs ended by B", lambda: not cluster(a)["local_load"], 15, 0.02)
    assert time.monotonic() - t_bye < LOAD_TTL
    assert cluster(b)["foreign_byes"] == 3
    assert cluster(a)["dialogs_ended_by_others"] == 3

    # 2. A dies with calls up: calls through B go on, A's load expires after load_ttl,
    #    and the BYEs of A's calls (through the VIP, now B) work.
    vip.target = a.port
    u_a = fleet.uac(sipp_env, "uac_logged.xml", vip.address, calls=3, rate=10, duration_ms=5000)
    fleet.wait_for("A to hold 3 calls", lambda: cluster(a)["local_load"].get("x") == 3, 15)
    fleet.wait_for("B to count them", lambda: cluster(b)["remote_load"].get("x") == 3, 15)
    u_b = fleet.uac(sipp_env, "uac_logged.xml", b, calls=10, rate=5, duration_ms=500)
    fleet.wait_for(
        "a call through B", lambda: cluster(b)["local_load"].get("x"), 15, seen=lambda: cluster(b)
    )
    a.kill()
    vip.target = b.port
    t_kill = time.monotonic()
    fleet.wait_for("A's load to expire on B", lambda: "A" not in cluster(b)["nodes"], LOAD_TTL + 3)
    expired_after = time.monotonic() - t_kill
    print(f"\nA killed: its load stopped counting on B after {expired_after:.2f} s")
    assert expired_after >= LOAD_TTL - 1.0
    rb, ra = u_b.wait(), u_a.wait()
    assert rb.failed == 0 and rb.successful == 10, rb.summary()
    assert ra.failed == 0 and ra.successful == 3, ra.summary()
    fleet.wait_for("B's own calls done", lambda: not cluster(b)["local_load"], 15)


def test_webhook_fires_once_per_event_cluster_wide(sipp_env, pg_server, redis_server) -> None:
    """Both nodes probe a UAS that stops answering: each sees it go down, the webhook
    gets one dst-down; a drain on A: one state-changed (B applies it silently)."""
    hooks = HookServer()
    hooks.start()
    try:
        db = pg_server.kamailio_db()
        x = fleet.uas(sipp_env, probe=True)
        insert(pg_server, db, x.uri, "duid=x", flags=8)
        p = prefix()
        probing = {"ping_interval": 1, "probing_mode": 1, "probing_threshold": 1}
        hook = [{"url": hooks.url, "events": ["dst-down", "state-changed"]}]
        a, b = (
            node(sipp_env, db, redis_server, p, n, dispatcher=probing, webhooks=hook)
            for n in ("A", "B")
        )
        joined([a, b])
        x.signal(signal.SIGSTOP)
        try:
            for f in (a, b):
                fleet.wait_for(
                    "each node to see x down",
                    lambda f=f: f.rpc("sipfleet.status")["events"].get("dst-down"),
                    15,
                )
        finally:
            x.signal(signal.SIGCONT)
        a.rpc("dispatcher.drain", 1, x.uri)
        fleet.wait_for("the state-changed post", lambda: hooks.events("state-changed"), 15)
        time.sleep(0.5)  # sleep-ok: nothing more may come; a second post would by now
        assert len(hooks.events("dst-down")) == 1, hooks.events()
        assert len(hooks.events("state-changed")) == 1, hooks.events()
        assert sum(cluster(f)["event_claims_lost"] for f in (a, b)) == 1
    finally:
        hooks.stop()
