"""``build_core``: the one wiring of a node, used by the server, the tests and the benchmarks.

From the config and what the store holds (destinations, admin states), in
order: the dispatcher (admin states and who set them), the router (its
call-load is the core's from the start), the proxy over the listeners and
the sink, the edge security gate with the trusted back ends, the [[trunk]]
routes, the dialog table's hooks (drain rules, persistence, events).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from sipfleet.control.registry import Registry
from sipfleet.core.admin import Events, LockFactory
from sipfleet.core.node import Core, CoreHooks, RunBlocking, run_inline
from sipfleet.dispatch.destination import DestinationSpec, StateKey
from sipfleet.dispatch.dispatcher import Dispatcher
from sipfleet.dispatch.snapshot import Resolver
from sipfleet.dispatch.state import AdminState
from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.net import Listener, Sink
from sipfleet.security.gate import Gate
from sipfleet.sip.build import set_server_header
from sipfleet.sip.message import Limits
from sipfleet.transaction.server import TimerConfig

if TYPE_CHECKING:
    from sipfleet.config import Config
    from sipfleet.store.base import AsyncStore

__all__ = ["build_core", "build_gate", "build_listeners", "build_settings"]

#: (admin state, since (wall clock), by whom) per destination, as the store keeps them
AdminDetails = Mapping[StateKey, tuple[AdminState, float | None, str]]


def build_settings(cfg: Config, route_key: bytes | None = None) -> ProxySettings:
    """The proxy's settings from [proxy] (and [cluster] advertise: our names too)."""
    p = cfg.proxy
    aliases = []
    for a in p.aliases:
        host, _, port = a.rpartition(":") if a.count(":") == 1 else (a, "", "")
        aliases.append((host or a, int(port) if port else 5060))
    for spec in p.listen:  # [cluster] advertise names every node: it is ours too
        shared = cfg.cluster.advertise_hostport(spec.port)
        if shared is not None:
            aliases.append((shared[0].lower(), shared[1]))
    return ProxySettings(
        timers=TimerConfig(p.t1, p.t2, p.t4),
        first_response_timeout=p.first_response_timeout,
        final_response_timeout=p.final_response_timeout,
        max_forwards=p.max_forwards,
        record_route=p.record_route,
        limits=Limits(p.max_message_size, p.max_header_count, p.max_line_length),
        aliases=aliases,
        answer_options=p.answer_options,
        transform_503=p.transform_503,
        dialog_lifetime=p.dialog_lifetime,
        route_key=route_key,
        preloaded_route=p.preloaded_route,
        max_transactions=cfg.limits.max_transactions,  # [limits]: the tables' bound
    )


def build_listeners(cfg: Config) -> list[Listener]:
    """One Listener per [proxy] listen entry, in order (their index is the Peer's)."""
    return [
        Listener(
            i,
            spec.proto,
            spec.host,
            spec.port,
            spec.advertise,
            cfg.cluster.advertise_hostport(spec.port),  # [cluster] advertise
        )
        for i, spec in enumerate(cfg.proxy.listen)
    ]


def build_gate(cfg: Config) -> Gate:
    """The core's edge security from [security], [[trunk]], [overload], [limits]."""
    return Gate(cfg.security_settings())


def build_core(
    cfg: Config,
    specs: Iterable[DestinationSpec],
    admin_details: AdminDetails,
    *,
    now: Callable[[], float],
    sink: Sink,
    events: Events,
    lock: LockFactory,
    route_key: bytes | None = None,
    store: AsyncStore | None = None,
    resolver: Resolver | None = None,
    listeners: Sequence[Listener] | None = None,
    gate: Gate | None = None,
    hooks: CoreHooks | None = None,
    run_blocking: RunBlocking = run_inline,
    wall: Callable[[], float] = time.time,
    started_wall: float | None = None,
    registry: Registry | None = None,
    wake: Callable[[float], None] | None = None,
) -> Core:
    """A complete node core.

    ``now`` is the monotonic clock timers run on, ``wall`` the wall clock
    events and listings show; ``lock`` makes the locks that serialise store
    writes and reloads (asyncio.Lock in the server); ``run_blocking`` runs a
    snapshot build off the loop (asyncio.to_thread in the server);
    ``registry`` is where the RPC methods go (the control plane's);
    ``wake(when)`` hears of a new deadline that may be earlier than the one
    the adapter armed for ``next_deadline()``.
    """
    dispatcher = Dispatcher(
        cfg.dispatcher.to_settings(),
        specs,
        now=now(),
        resolver=resolver,
        admin_states={k: v[0] for k, v in admin_details.items()},
    )
    for d in dispatcher.destinations():
        detail = admin_details.get(d.key)
        if detail is not None:
            st = dispatcher.state(d)
            st.admin_since, st.admin_by = detail[1], detail[2]
    lsts = build_listeners(cfg) if listeners is None else list(listeners)
    settings = build_settings(cfg, route_key)
    set_server_header(cfg.security.server)
    return Core(
        dispatcher,
        cfg.route_specs(),
        lsts,
        lambda router: Proxy(lsts, sink, router, settings),
        gate if gate is not None else build_gate(cfg),
        store=store,
        events=events,
        now=now,
        wall=wall,
        lock=lock,
        run_blocking=run_blocking,
        hooks=hooks,
        persist_dialogs=cfg.store.persist_dialogs,
        trunk_routes=any(t.route for t in cfg.trunk),
        started_wall=started_wall,
        registry=registry,
        wake=wake,
    )
