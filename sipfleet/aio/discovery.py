"""Fleet discovery by DNS, the asyncio side: ask DNS, apply the answer.

Each ``[[discovery]]`` entry has one task that looks its name up every
``refresh`` seconds with dnspython's asyncio resolver (``[dns] servers``, else
the system's resolv.conf) and hands the answer to the pure side
(``sipfleet.dispatch.discovery``). Joins become destinations at once; a member
that left is drained (admin state ``draining``, set by ``discovery``: no new
calls, its calls finish) and removed when its call-load reaches 0 (the
``drained`` event wakes the task) or after ``drain_timeout``. Events:
``member-joined``, ``member-draining``, ``member-removed``, ``discovery-error``
(the first failure, then at most once a minute per entry, as the log).

The destinations are rebuilt as a reload rebuilds them (in a worker thread,
then one swap) under the App's reload lock, so a reload and a refresh never
interleave; a swap made meanwhile by ``dispatcher.add``/``remove`` makes the
refresh build again. Discovered members are never written to the store;
``App.reload`` adds them with ``merge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from sipfleet.config.discovery import DiscoveryConfig, DnsConfig
from sipfleet.dispatch.destination import DestinationSpec, StateKey
from sipfleet.dispatch.discovery import (
    Discovered,
    Member,
    SrvRecord,
    base_specs,
    member_specs,
    merge,
    parse_server,
)
from sipfleet.dispatch.errors import DestinationError
from sipfleet.dispatch.settings import DiscoverySettings
from sipfleet.dispatch.state import AdminState
from sipfleet.dispatch.target import DestTarget

if TYPE_CHECKING:
    from sipfleet.aio.events import Event, EventBus
    from sipfleet.control.registry import Registry
    from sipfleet.dispatch.dispatcher import Dispatcher
    from sipfleet.dispatch.health import DstEvent
    from sipfleet.proxy.core import Proxy

__all__ = ["DiscoveryService", "DnsClient", "LookupFailed", "lookup"]

log = logging.getLogger("sipfleet.discovery")

#: A failing entry is logged and reported at most this often (s).
REPORT_EVERY = 60.0
#: Address lookups of one SRV answer in flight at once.
MAX_PARALLEL_LOOKUPS = 16
#: Rebuilds tried when other changes keep swapping the destinations meanwhile.
MAX_SYNC_ATTEMPTS = 5
#: Who drains members that left DNS (admin state "by").
BY = "discovery"


class LookupFailed(Exception):
    """A lookup that gave no usable answer: the last good members stay."""


class DnsClient:
    """dnspython's asyncio resolver, set up from ``[dns]``; no cache (every
    refresh asks), absolute names only (no search list)."""

    def __init__(self, cfg: DnsConfig) -> None:
        if cfg.servers:
            r = dns.asyncresolver.Resolver(configure=False)
            r.nameservers = [dns.nameserver.Do53Nameserver(*parse_server(s)) for s in cfg.servers]
        else:
            try:
                r = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration as e:
                raise LookupFailed(f"no DNS servers: set [dns] servers ({e})") from None
        r.lifetime = cfg.timeout
        r.timeout = min(cfg.timeout, 2.0)
        r.cache = None
        self.resolver = r

    async def query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The answer, None when the name has no such records (NODATA) or does
        not exist (NXDOMAIN); LookupFailed on a timeout or a server failure."""
        try:
            qname = dns.name.from_text(name)  # absolute
            return await self.resolver.resolve(qname, rdtype, raise_on_no_answer=True)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.resolver.LifetimeTimeout:
            raise LookupFailed(f"{rdtype} {name}: timeout") from None
        except dns.resolver.NoNameservers as e:
            raise LookupFailed(f"{rdtype} {name}: {_first_line(e)}") from None
        except dns.exception.DNSException as e:
            raise LookupFailed(f"{rdtype} {name}: {_first_line(e)}") from None

    async def addresses(self, name: str, family: str) -> list[str]:
        """A and/or AAAA addresses of a name ([] if it has none)."""
        types = {"ipv4": ("A",), "ipv6": ("AAAA",), "both": ("A", "AAAA")}[family]
        out: list[str] = []
        for t in types:
            ans = await self.query(name, t)
            if ans is not None:
                out += [rr.address for rr in ans]
        return out


def _first_line(e: Exception) -> str:
    return (str(e) or type(e).__name__).splitlines()[0][:300]


def _norm(name: object) -> str:
    return str(name).lower().rstrip(".")


async def lookup(
    client: DnsClient, cfg: DiscoverySettings
) -> tuple[list[SrvRecord], dict[str, list[str]]]:
    """Ask DNS for an entry: its records and the addresses of their targets.

    Raises LookupFailed when the name has no records (NXDOMAIN, NODATA, the
    "." target of RFC 2782), or any lookup times out or fails: one member
    that cannot be checked must not be drained.
    """
    want = {"ipv4": ("A",), "ipv6": ("AAAA",), "both": ("A", "AAAA")}[cfg.family]
    if cfg.kind == "A":
        addrs = await client.addresses(cfg.name, cfg.family)
        if not addrs:
            raise LookupFailed(f"{'/'.join(want)} {cfg.name}: no records")
        return [SrvRecord(0, 0, cfg.port, cfg.name)], {_norm(cfg.name): addrs}
    ans = await client.query(cfg.name, "SRV")
    if ans is None:
        raise LookupFailed(f"SRV {cfg.name}: no records")
    records = [
        SrvRecord(rr.priority, rr.weight, rr.port, _norm(rr.target))
        for rr in ans
        if _norm(rr.target)  # "." = service not available here
    ][: cfg.max_members]
    if not records:
        raise LookupFailed(f"SRV {cfg.name}: service not available (target '.')")
    # Addresses the server sent along (dnsmasq, CoreDNS and most servers do).
    addresses: dict[str, list[str]] = {}
    for rrset in ans.response.additional:
        if dns.rdatatype.to_text(rrset.rdtype) in want:
            addresses.setdefault(_norm(rrset.name), []).extend(rr.address for rr in rrset)
    missing = sorted({r.target for r in records} - addresses.keys())
    gate = asyncio.Semaphore(MAX_PARALLEL_LOOKUPS)

    async def one(target: str) -> None:
        async with gate:
            addresses[target] = await client.addresses(target, cfg.family)

    if missing:
        await asyncio.gather(*(one(t) for t in missing))
    return records, addresses


class DiscoveryHost(Protocol):
    """What the service needs of the App."""

    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def proxy(self) -> Proxy: ...
    @property
    def events(self) -> EventBus: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def router(self) -> _Router: ...


class _Router(Protocol):
    def invalidate(self) -> None: ...


class DiscoveryService:
    """Every ``[[discovery]]`` entry of one process."""

    def __init__(
        self,
        app: DiscoveryHost,
        entries: Sequence[DiscoveryConfig],
        dns_cfg: DnsConfig,
        *,
        lock: asyncio.Lock | None = None,
        client: DnsClient | None = None,
    ) -> None:
        self.app = app
        self.entries = [Discovered(c.to_settings()) for c in entries]
        self.dns_cfg = dns_cfg
        self._client = client
        self._lock = lock if lock is not None else asyncio.Lock()
        self._mine: set[StateKey] = set()  # keys of the members installed
        self._wake = [asyncio.Event() for _ in self.entries]
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Any = None
        self.syncs = 0
        # The snapshot last checked against the members, and their version then:
        # both unchanged, there is nothing to compare (the check is O(destinations)).
        self._version = 0
        self._checked: tuple[object, int] | None = None
        self.sync_conflicts = 0

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        if not self.entries:
            return
        if self._client is None:
            try:
                self._client = DnsClient(self.dns_cfg)
            except LookupFailed as e:
                log.error("discovery off: %s", e)
                return
        for i, entry in enumerate(self.entries):
            log.info("discovery: %s every %g s", entry.cfg.label, entry.cfg.refresh)
            self._tasks.append(self.app.loop.create_task(self._run(i, entry)))
        self._unsubscribe = self.app.events.subscribe(self._on_event)

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    def merge(self, stored: Sequence[DestinationSpec]) -> list[DestinationSpec]:
        """Stored specs plus the discovered members: what a reload installs. Call
        it under the reload lock, right before the build it feeds."""
        specs, self._mine = merge(stored, self.entries)
        return specs

    # -- the loop of one entry ----------------------------------------------------
    async def _run(self, i: int, entry: Discovered) -> None:
        loop = self.app.loop
        wake = self._wake[i]
        next_lookup = loop.time()
        while True:
            wake.clear()  # before the work: a drained event during it runs _settle again
            try:
                if loop.time() >= next_lookup:
                    next_lookup = loop.time() + entry.cfg.refresh
                    await self.refresh(entry)
                else:
                    await self._settle(entry)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("discovery: internal error in %s", entry.cfg.label)
            delay = max(next_lookup - loop.time(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)

    def _on_event(self, event: Event) -> None:
        # A draining member whose last call ended: remove it now, not at the
        # next refresh.
        if event.get("event") != "drained":
            return
        for i, entry in enumerate(self.entries):
            if entry.cfg.set == event.get("set") and any(
                m.spec.uri.lower() == str(event.get("uri", "")).lower()
                for m in entry.draining().values()
            ):
                self._wake[i].set()

    async def refresh(self, entry: Discovered) -> None:
        """One lookup of an entry, applied."""
        cfg = entry.cfg
        now = self.app.loop.time()
        assert self._client is not None
        try:
            records, addresses = await lookup(self._client, cfg)
            specs, warnings = member_specs(cfg, records, addresses)
            if not specs:
                raise LookupFailed(f"{cfg.kind} {cfg.name}: no target has an address")
        except LookupFailed as e:
            self._failed(entry, str(e), now)
            await self._settle(entry)
            return
        if entry.failing_since is not None:
            log.info(
                "discovery: %s answers again after %.0f s",
                cfg.label,
                now - entry.failing_since,
            )
        if tuple(warnings) != entry.warnings:
            for w in warnings[:10]:
                log.warning("discovery: %s: %s", cfg.label, w)
        entry.warnings = tuple(warnings)
        change = entry.apply(specs, now)
        if change:
            self._version += 1
        # Also when nothing changed: puts back a member dispatcher.remove took out.
        await self._sync()
        events = self.app.events
        for spec in change.joined:
            self._set_admin(spec, AdminState.ENABLED, only_ours=True)
            events.emit("member-joined", self._data(spec, cfg))
        for spec in change.changed:
            events.emit("member-changed", self._data(spec, cfg))
        for spec in change.left:
            self._set_admin(spec, AdminState.DRAINING)
            events.emit("member-draining", {**self._data(spec, cfg), "calls": self._load(spec)})
        await self._settle(entry)

    def _failed(self, entry: Discovered, reason: str, now: float) -> None:
        if not entry.fail(reason, now, REPORT_EVERY):
            return
        cfg = entry.cfg
        log.warning(
            "discovery of set %d: %s (%d failed lookups; keeping %d members)",
            cfg.set,
            reason,
            entry.errors,
            len(entry.members),
        )
        self.app.events.emit(
            "discovery-error",
            {
                "set": cfg.set,
                "name": cfg.name,
                "type": cfg.kind,
                "error": reason,
                "errors": entry.errors,
                "members": len(entry.members),
            },
        )

    async def _settle(self, entry: Discovered) -> None:
        """Remove the draining members with no call left or past drain_timeout."""
        now = self.app.loop.time()
        gone: list[tuple[Member, str, int]] = []
        for key, m in list(entry.draining().items()):
            calls = self._load(m.spec)
            if calls == 0 or now - m.since >= entry.cfg.drain_timeout:
                entry.remove(key)
                gone.append((m, "drained" if calls == 0 else "drain timeout", calls))
        if not gone:
            return
        self._version += 1
        await self._sync()
        for m, why, calls in gone:
            self.app.events.emit(
                "member-removed",
                {
                    **self._data(m.spec, entry.cfg),
                    "reason": why,
                    "calls": calls,
                    "waited": round(now - m.since, 3),
                },
            )

    # -- applying to the dispatcher -------------------------------------------------
    async def _sync(self) -> None:
        """Make the dispatcher hold exactly the stored specs plus the members."""
        app = self.app
        async with self._lock:
            for _ in range(MAX_SYNC_ATTEMPTS):
                d = app.dispatcher
                snap = d.snapshot
                if self._checked == (snap, self._version):
                    return
                specs, mine = merge(base_specs(snap, self._mine), self.entries)
                if len(specs) == snap.count and set(specs) == set(snap.by_spec()):
                    self._mine = mine
                    self._checked = (snap, self._version)
                    return
                try:
                    built = await asyncio.to_thread(d.build, specs)
                except DestinationError as e:
                    log.error("discovery: cannot build the destinations: %s", e)
                    return
                if d.snapshot is not snap:
                    self.sync_conflicts += 1
                    continue  # dispatcher.add/remove swapped meanwhile: again
                result = d.install(built)
                self._mine = mine
                self._checked = (d.snapshot, self._version)
                self.syncs += 1
                app.router.invalidate()
                _emit_dst(app, list(result.events))
                return
            log.warning("discovery: destinations kept changing; retrying at the next refresh")

    def _set_admin(self, spec: DestinationSpec, admin: AdminState, only_ours: bool = False) -> None:
        d = self.app.dispatcher
        target = DestTarget.uri(spec.set_id, spec.uri)
        found = d.lookup(target)
        if not found:
            return
        st = found[0][1]
        if only_ours and not (st.admin is AdminState.DRAINING and st.admin_by == BY):
            return  # an operator's drain or disable stays
        d.set_state(target, admin, since=time.time(), by=BY)

    def _load(self, spec: DestinationSpec) -> int:
        dest = self.app.dispatcher.find(spec.set_id, spec.uri)
        if dest is None:
            return 0
        return int(self.app.proxy.dialogs.load(dest.load_key))

    @staticmethod
    def _data(spec: DestinationSpec, cfg: DiscoverySettings) -> dict[str, Any]:
        return {
            "set": spec.set_id,
            "uri": spec.uri,
            "attrs": spec.attrs or None,
            "priority": spec.priority,
            "name": cfg.name,
        }

    # -- RPC -------------------------------------------------------------------------
    def register(self, registry: Registry) -> None:
        registry.add(
            "sipfleet.discovery",
            self.status,
            doc="The [[discovery]] entries: DNS name, members and their state, lookups",
        )

    def status(self) -> list[dict[str, Any]]:
        now = self.app.loop.time()
        out: list[dict[str, Any]] = []
        for e in self.entries:
            cfg = e.cfg
            out.append(
                {
                    "SET": cfg.set,
                    "NAME": cfg.name,
                    "TYPE": cfg.kind,
                    "REFRESH": cfg.refresh,
                    "LOOKUPS": e.lookups,
                    "ERRORS": e.errors,
                    "FAILING_FOR": None
                    if e.failing_since is None
                    else round(now - e.failing_since, 3),
                    "LAST_OK_AGO": None if e.last_ok is None else round(now - e.last_ok, 3),
                    "LAST_ERROR": e.last_error or None,
                    "MEMBERS": [
                        {
                            "URI": m.spec.uri,
                            "STATE": m.state.value,
                            "FOR": round(now - m.since, 3),
                            "ATTRS": m.spec.attrs,
                            "PRIORITY": m.spec.priority,
                            "CALLS": self._load(m.spec),
                        }
                        for m in e.members.values()
                    ],
                }
            )
        return out


def _emit_dst(app: DiscoveryHost, events: list[DstEvent]) -> None:
    for ev in events:
        app.events.emit(ev.kind, ev.data())
