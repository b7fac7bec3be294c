"""``[cluster]``: several nodes share admin state and call-load through Redis.

What is shared, and how (the README's "Cluster" section says why):

- Admin state (drain, disable): the store (PostgreSQL) stays the truth; the
  node that made a change publishes it on the channel ``<prefix>bus`` and
  every node applies it to its dispatcher at once (no store round trip). A
  node that (re)connects rereads the admin states from the store.
- Call-load: each node reports its own open dialogs per destination: at most
  every ``publish_interval`` when they changed (coalesced), and every
  ``heartbeat`` anyway, on the channel and in a hash ``<prefix>load:<node>``
  that expires after ``load_ttl``. Every node keeps the others' last reports
  in a dict and adds their sum to its own live counts (``ClusterLoad``): no
  Redis round trip on the per-call path. A node silent for ``load_ttl`` (dead,
  or Redis down) stops counting.
- Dialogs: a BYE relayed (by its signed Route) for a dialog this node does not
  know is announced, and the node that holds the dialog ends it (its load
  goes with it). Confirmed dialogs are also written to ``<prefix>dlg:<call-id>``
  (the node that holds them, expiring with the dialog's lifetime) so an
  operator can find where a call lives.
- Events: a webhook event is claimed (SET NX) before it is posted, so the
  same event seen by several nodes (a destination down, probed by each) is
  posted once per ``event_window``.

When Redis is unreachable routing goes on with local counts and the others'
last reports until they expire; the status says so, the log says so
(rate-limited), and the service reconnects with backoff, then republishes
and resyncs. Calls are never refused because of Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from sipfleet.config.cluster import ClusterConfig
from sipfleet.dispatch.state import AdminState
from sipfleet.dispatch.target import DestTarget
from sipfleet.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from sipfleet.aio.app import App
    from sipfleet.aio.events import Event
    from sipfleet.proxy.dialogs import Dialog, DialogTable
    from sipfleet.sip.message import Message

__all__ = ["Cluster", "ClusterLoad", "check_installed"]

log = logging.getLogger("sipfleet.cluster")
_down_log = RateLimitedLog(log, per_second=0.2, burst=1)  # a dead Redis fails every try
_bad_log = RateLimitedLog(log)  # a peer's malformed message

_MAX_NODES = 256  # remote nodes tracked; more are refused and counted
_MAX_PENDING = 10_000  # BYEs and dialog writes queued while Redis is slow or down
_BACKOFF_MAX = 5.0


def check_installed() -> None:
    """Raise StoreError (a clean "cannot start") when the redis client is missing."""
    try:
        import redis.asyncio  # noqa: F401
    except ImportError as e:
        from sipfleet.store.base import StoreError

        raise StoreError(
            f"[cluster] needs the redis client ({e.name}): pip install 'sipfleet[cluster]'"
        ) from e


class ClusterLoad:
    """The LoadView of a clustered node: its own live counts plus the sum of
    the other nodes' last reports (O(1) per lookup)."""

    __slots__ = ("local", "remote")

    def __init__(self, local: DialogTable) -> None:
        self.local = local
        self.remote: dict[str, int] = {}

    def load(self, key: str) -> int:
        return self.local.loads.get(key, 0) + self.remote.get(key, 0)


class _Remote:
    __slots__ = ("at", "loads")

    def __init__(self, loads: dict[str, int], at: float) -> None:
        self.loads = loads
        self.at = at


class Cluster:
    """One node's link to the cluster; ``start()``, ``close()``."""

    def __init__(self, app: App, cfg: ClusterConfig, node: str) -> None:
        self.app = app
        self.cfg = cfg
        self.node = node
        p = cfg.key_prefix
        self.channel = f"{p}bus"
        self._load_key = f"{p}load:{node}"
        self._load_pattern = f"{p}load:*"
        self._dlg_prefix = f"{p}dlg:"
        self._ev_prefix = f"{p}ev:"
        self.view = ClusterLoad(app.proxy.dialogs)
        self.remote: dict[str, _Remote] = {}
        self.ok = False
        self.error: str | None = "not connected yet"
        self.down_since: float | None = time.time()
        self.connects = 0
        self.sent = 0
        self.received = 0
        self.bad = 0
        self.applied_admin = 0
        self.ended_here = 0  # our dialogs ended by a BYE through another node
        self.foreign_byes = 0  # BYEs through here for another node's dialogs
        self.nodes_refused = 0
        self.pending_dropped = 0
        self.claims_lost = 0
        self._published: dict[str, int] | None = None
        self._instance = os.urandom(6).hex()  # tells two nodes given one name apart
        self._own = orjson.dumps({"n": node, "i": self._instance})[:-1] + b","
        self.name_clashes = 0
        self._byes: deque[tuple[bytes, bytes | None, bytes | None]] = deque(maxlen=_MAX_PENDING)
        self._dlg_writes: dict[bytes, float | None] = {}  # call-id -> expires (None: delete)
        self._wake = asyncio.Event()
        self._redis: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Any = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        import redis.asyncio as aioredis

        t = self.cfg.timeout
        self._redis = aioredis.Redis.from_url(
            self.cfg.redis,
            socket_timeout=t,
            socket_connect_timeout=t,
            health_check_interval=0,
            retry_on_timeout=False,
        )
        self._unsubscribe = self.app.events.subscribe(self._on_event)
        loop = self.app.loop
        self._tasks = [
            loop.create_task(self._session_loop()),
            loop.create_task(self._expire_loop()),
        ]

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        r = self._redis
        if r is not None:
            if self.ok:  # leaving cleanly: the others stop counting our calls now
                try:
                    await r.delete(self._load_key)
                    await r.publish(self.channel, self._msg({"t": "gone"}))
                except Exception:
                    pass
            try:
                await r.aclose()
            except Exception:
                pass

    # -- the session: connect, sync, then pump until Redis fails ---------------------
    async def _session_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._went_down(e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)
            if self.ok:
                backoff = 0.1

    def _went_down(self, e: BaseException) -> None:
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if self.ok or self.down_since is None:
            self.down_since = time.time()
            log.error(
                "cluster: Redis unreachable (%s): routing on local counts and the last "
                "reports of %d nodes until they expire",
                text,
                len(self.remote),
            )
        else:
            _down_log.warning(time.monotonic(), "cluster: Redis still unreachable: %s", text)
        self.ok = False
        self.error = text
        self._published = None  # republish everything when back

    async def _session(self) -> None:
        r = self._redis
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            await self._resync(r)
            self.ok, self.error = True, None
            if self.down_since is not None:
                was = self.down_since
                self.down_since = None
                if self.connects:
                    log.warning(
                        "cluster: Redis back after %.1f s: republished and resynced",
                        time.time() - was,
                    )
                else:
                    log.info("cluster: node %s joined through %s", self.node, _safe(self.cfg.redis))
            self.connects += 1
            pump = asyncio.ensure_future(self._publish_loop(r))
            try:
                while True:
                    if pump.done():
                        pump.result()  # raises what stopped it
                    msg = await pubsub.get_message(timeout=self.cfg.heartbeat)
                    if msg is not None and msg.get("type") == "message":
                        self._on_message(msg["data"])
            finally:
                pump.cancel()
                try:
                    await pump
                except (asyncio.CancelledError, Exception):
                    pass
        finally:
            try:
                await pubsub.aclose()
            except Exception:
                pass

    async def _resync(self, r: Any) -> None:
        """After a (re)connect: publish ours, read the others', reread the store."""
        await self._publish_loads(r, force=True)
        now = self.app.loop.time()
        fresh: dict[str, _Remote] = {}
        async for key in r.scan_iter(match=self._load_pattern, count=200):
            name = (key.decode() if isinstance(key, bytes) else str(key))[
                len(self._load_pattern) - 1 :
            ]
            if name == self.node:
                continue
            if len(fresh) >= _MAX_NODES:
                self.nodes_refused += 1
                continue
            raw = await r.hgetall(key)
            fresh[name] = _Remote(_counts(raw), now)
        self.remote = fresh
        self._resum()
        await self._reread_admin()

    async def _reread_admin(self) -> None:
        store = self.app.store
        if store is None:
            return
        try:
            details = await store.load_admin_details()
        except Exception as e:
            log.warning("cluster: cannot reread admin states from the store: %s", e)
            return
        d = self.app.dispatcher
        for dest in d.destinations():
            st = d.state(dest)
            detail = details.get(dest.key)
            if detail is None:
                # No row: enabled (an undrain deletes it). Members that DNS
                # discovery drains are this node's own doing, not the store's.
                if st.admin is AdminState.ENABLED or st.admin_by == "discovery":
                    continue
                detail = (AdminState.ENABLED, time.time(), "cluster-resync")
            admin, since, by = detail
            if st.admin is not admin:
                d.set_state(DestTarget.uri(dest.set_id, dest.uri), admin, since=since, by=by)
                self.applied_admin += 1

    # -- publishing ------------------------------------------------------------------
    def _msg(self, body: dict[str, Any]) -> bytes:
        # The node first: our own messages come back to us and are skipped unparsed.
        return orjson.dumps({"n": self.node, "i": self._instance, **body})

    async def _publish_loop(self, r: Any) -> None:
        beat = self.app.loop.time() + self.cfg.heartbeat
        interval = self.cfg.publish_interval
        while True:
            now = self.app.loop.time()
            force = now >= beat
            if force:
                beat = now + self.cfg.heartbeat
            await self._publish_loads(r, force=force)
            await self._flush_byes(r)
            await self._flush_dialogs(r)
            await asyncio.sleep(interval)

    async def _publish_loads(self, r: Any, *, force: bool) -> None:
        loads = self.app.proxy.dialogs.loads
        if not force and loads == self._published:
            return
        snap = dict(loads)
        msg = self._msg({"t": "load", "l": snap})
        if not force:
            # A change between heartbeats: the others hear it; the hash (read by
            # nodes that connect) catches up at the heartbeat. One command, not five.
            await r.publish(self.channel, msg)
        else:
            pipe = r.pipeline(transaction=True)
            pipe.delete(self._load_key)
            # an empty hash would not exist: a node with no calls is still a node
            pipe.hset(self._load_key, mapping=snap or {"": 0})
            pipe.pexpire(self._load_key, max(int(self.cfg.load_ttl * 1000), 1))
            pipe.publish(self.channel, msg)
            await pipe.execute()
        self._published = snap
        self.sent += 1

    async def _flush_byes(self, r: Any) -> None:
        if not self._byes:
            return
        batch: list[tuple[bytes, bytes | None, bytes | None]] = []
        while self._byes and len(batch) < 500:
            batch.append(self._byes.popleft())
        ends = [[_s(c), _s(f), _s(t)] for c, f, t in batch]
        await r.publish(self.channel, self._msg({"t": "end", "d": ends}))
        self.sent += 1

    async def _flush_dialogs(self, r: Any) -> None:
        if not self._dlg_writes:
            return
        writes, self._dlg_writes = self._dlg_writes, {}
        wall = time.time()
        pipe = r.pipeline(transaction=False)
        for call_id, expires in writes.items():
            key = self._dlg_prefix + call_id.decode("latin-1")
            if expires is None:
                pipe.delete(key)
            else:
                pipe.set(key, self.node, px=max(int((expires - wall) * 1000), 1))
        await pipe.execute()

    # -- hooks of the node -----------------------------------------------------------
    def foreign_bye(self, msg: Message) -> None:
        """Proxy hook: a BYE for a dialog another node holds went through here."""
        self.foreign_byes += 1
        if len(self._byes) >= _MAX_PENDING:
            self.pending_dropped += 1
        self._byes.append((msg.call_id, msg.from_tag, msg.to_tag))

    def dialog_confirmed(self, dlg: Dialog) -> None:
        if len(self._dlg_writes) >= _MAX_PENDING:
            self.pending_dropped += 1
            return
        now = self.app.loop.time()
        self._dlg_writes[dlg.call_id] = time.time() + max(dlg.lifetime - (now - dlg.start), 0.0)

    def dialog_ended(self, dlg: Dialog) -> None:
        if dlg.call_id in self._dlg_writes and self._dlg_writes[dlg.call_id] is not None:
            del self._dlg_writes[dlg.call_id]  # confirmed and ended between two flushes
            return
        if len(self._dlg_writes) < _MAX_PENDING:
            self._dlg_writes[dlg.call_id] = None
        else:
            self.pending_dropped += 1

    def _on_event(self, event: Event) -> None:
        """Admin changes made here go to the others at once."""
        if event.get("event") != "state-changed" or event.get("admin_changed") == 0:
            return
        set_id = event.get("set")
        uri, duid = event.get("uri"), event.get("duid")
        name = uri or duid
        if not isinstance(name, str):
            return
        disp = self.app.dispatcher
        sid = set_id if isinstance(set_id, int) else None
        if name == "all":  # dispatcher.set_state a SET all
            found = [(d, disp.state(d)) for d in disp.destinations() if d.set_id == sid]
        else:
            found = disp.lookup(DestTarget.uri(sid, name) if uri else DestTarget.duid(sid, name))
        states = [[d.set_id, d.uri, st.admin.value, st.admin_since, st.admin_by] for d, st in found]
        if states and self.ok:
            self.app.loop.create_task(self._send({"t": "admin", "s": states}))

    async def _send(self, body: dict[str, Any]) -> None:
        try:
            await self._redis.publish(self.channel, self._msg(body))
            self.sent += 1
        except Exception as e:
            # The store has it; the others reread the store when they reconnect.
            _down_log.warning(time.monotonic(), "cluster: cannot publish %s: %s", body["t"], e)

    async def claim(self, event: Event, url: str) -> bool:
        """Webhooks: True when this node is the one to post ``event`` (or Redis
        cannot say: then every node posts, at least once beats never)."""
        if not self.ok:
            return True
        ident = (
            url
            + "|"
            + "|".join(
                str(event.get(k)) for k in ("event", "set", "uri", "duid", "state", "admin_changed")
            )
        )
        key = self._ev_prefix + hashlib.sha1(ident.encode()).hexdigest()
        try:
            won = await self._redis.set(
                key, self.node, nx=True, px=int(self.cfg.event_window * 1000)
            )
        except Exception:
            return True
        if not won:
            self.claims_lost += 1
        return bool(won)

    # -- receiving -------------------------------------------------------------------
    def _on_message(self, data: bytes) -> None:
        if data.startswith(self._own):
            return
        try:
            msg = orjson.loads(data)
            node = msg["n"]
            kind = msg["t"]
        except Exception:
            self.bad += 1
            _bad_log.warning(time.monotonic(), "cluster: bad message on %s", self.channel)
            return
        if node == self.node:
            # Not ours (those are skipped above): another process has our name,
            # and its counts would overwrite ours in Redis.
            self.name_clashes += 1
            _bad_log.error(
                time.monotonic(),
                "cluster: another node is also named %r: give each a [cluster] node name",
                node,
            )
            return
        self.received += 1
        try:
            if kind == "load":
                self._got_loads(str(node), msg["l"])
            elif kind == "admin":
                self._got_admin(msg["s"])
            elif kind == "end":
                self._got_ends(msg["d"])
            elif kind == "gone":
                if self.remote.pop(str(node), None) is not None:
                    self._resum()
        except Exception as e:
            self.bad += 1
            _bad_log.warning(time.monotonic(), "cluster: bad %s message from %s: %s", kind, node, e)

    def _got_loads(self, node: str, loads: dict[str, Any]) -> None:
        if node not in self.remote and len(self.remote) >= _MAX_NODES:
            self.nodes_refused += 1
            return
        self.remote[node] = _Remote(_counts(loads), self.app.loop.time())
        self._resum()

    def _got_admin(self, states: list[list[Any]]) -> None:
        d = self.app.dispatcher
        for set_id, uri, admin, since, by in states:
            target = DestTarget.uri(int(set_id), str(uri))
            if d.lookup(target):  # a destination another node has and this one not: skipped
                d.set_state(target, AdminState(admin), since=since, by=str(by or ""))
            self.applied_admin += 1

    def _got_ends(self, ends: list[list[str | None]]) -> None:
        table = self.app.proxy.dialogs
        now = self.app.loop.time()
        for call_id, from_tag, to_tag in ends:
            if call_id is None:
                continue
            dlg = table.find(call_id.encode("latin-1"), _b(from_tag), _b(to_tag))
            if dlg is not None:
                table.end(dlg, "bye-elsewhere", now)
                self.ended_here += 1

    def _resum(self) -> None:
        total: dict[str, int] = {}
        for r in self.remote.values():
            for k, v in r.loads.items():
                total[k] = total.get(k, 0) + v
        gone = [k for k in self.view.remote if k not in total]
        self.view.remote = total
        # A drain is done when the calls of every node have ended: the last
        # ones may end elsewhere (each node reports it; webhooks post it once).
        d = self.app.dispatcher
        if gone:
            ended = set(gone)
            for dest in d.destinations():
                if dest.load_key in ended and d.state(dest).admin is AdminState.DRAINING:
                    self.app._check_drained(dest)

    async def _expire_loop(self) -> None:
        """The others' reports expire ``load_ttl`` after they were heard (Redis up or not)."""
        while True:
            await asyncio.sleep(min(self.cfg.heartbeat, self.cfg.load_ttl / 4))
            cutoff = self.app.loop.time() - self.cfg.load_ttl
            stale = [n for n, r in self.remote.items() if r.at < cutoff]
            for n in stale:
                del self.remote[n]
                log.warning(
                    "cluster: node %s silent for %.0f s: its calls stop counting",
                    n,
                    self.cfg.load_ttl,
                )
            if stale:
                self._resum()

    # -- status --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.app.loop.time()
        return {
            "ok": self.ok,
            "node": self.node,
            "redis": _safe(self.cfg.redis),
            "error": self.error,
            "down_since": self.down_since if not self.ok else None,
            "nodes": {
                n: {"age": round(now - r.at, 3), "calls": sum(r.loads.values())}
                for n, r in sorted(self.remote.items())
            },
            "remote_load": dict(self.view.remote),
            "local_load": dict(self.app.proxy.dialogs.loads),
            "connects": self.connects,
            "sent": self.sent,
            "received": self.received,
            "bad_messages": self.bad,
            "admin_applied": self.applied_admin,
            "foreign_byes": self.foreign_byes,
            "dialogs_ended_by_others": self.ended_here,
            "nodes_refused": self.nodes_refused,
            "pending_dropped": self.pending_dropped,
            "event_claims_lost": self.claims_lost,
            "name_clashes": self.name_clashes,
        }


def _counts(raw: dict[Any, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        n = int(v)
        if key and n > 0:
            out[key] = n
    return out


def _s(b: bytes | None) -> str | None:
    return None if b is None else b.decode("latin-1")


def _b(s: str | None) -> bytes | None:
    return None if s is None else s.encode("latin-1")


def _safe(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest
