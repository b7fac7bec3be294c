"""Drain: sipfleet's own RPC methods (Kamailio has none).

    dispatcher.drain          SET ADDRESS | ADDRESS   stop new calls, let calls finish
    dispatcher.undrain        SET ADDRESS | ADDRESS   take new calls again
    dispatcher.drain_status   [SET ADDRESS | ADDRESS] active calls, since when, drained

ADDRESS is a destination URI when it has a ``:`` (every SIP URI has one,
after the scheme or before a port), else a duid; without SET it names its
destinations in every set. Each method returns one entry per destination:
``{"SET", "URI", "DUID", "STATE", "HEALTH", "SINCE" (UTC, ISO 8601), "FOR"
(seconds), "BY", "ACTIVE_CALLS", "DRAINED"}`` (upper-case keys, as Kamailio's dispatcher prints).
"""

from __future__ import annotations

from typing import Any, Protocol

from sipfleet.control.methods import RPC_CALLER
from sipfleet.control.registry import Param, Registry, RpcFault
from sipfleet.dispatch.target import DestTarget

__all__ = ["DrainControl", "register_drain_methods"]

NOT_FOUND = RpcFault(404, "Destination Not Found")


class DrainControl(Protocol):
    """What the node offers: sipfleet.core.admin.AdminService."""

    async def drain(self, target: DestTarget, by: str) -> list[dict[str, Any]]: ...

    async def undrain(self, target: DestTarget, by: str) -> list[dict[str, Any]]: ...

    def drain_status(self, target: DestTarget | None) -> list[dict[str, Any]]: ...


def _target(a: object, b: object) -> DestTarget:
    """(SET, ADDRESS) or (ADDRESS,): which destinations a call names."""
    if b is None:
        if not isinstance(a, str) or not a:
            raise RpcFault(500, "Invalid Parameters")
        return _named(None, a)
    try:
        set_id = int(a)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise RpcFault(500, "Invalid Parameters") from None
    if not isinstance(b, str) or not b:
        raise RpcFault(500, "Invalid Parameters")
    return _named(set_id, b)


def _named(set_id: int | None, address: str) -> DestTarget:
    """ADDRESS as the module docstring reads it: a URI or a duid."""
    return DestTarget.uri(set_id, address) if ":" in address else DestTarget.duid(set_id, address)


def register_drain_methods(registry: Registry, app: DrainControl) -> None:
    async def drain(a: object, b: object = None) -> list[dict[str, Any]]:
        out = await app.drain(_target(a, b), RPC_CALLER.get())
        if not out:
            raise NOT_FOUND
        return out

    async def undrain(a: object, b: object = None) -> list[dict[str, Any]]:
        out = await app.undrain(_target(a, b), RPC_CALLER.get())
        if not out:
            raise NOT_FOUND
        return out

    def drain_status(a: object = None, b: object = None) -> list[dict[str, Any]]:
        if a is None:
            return app.drain_status(None)
        out = app.drain_status(_target(a, b))
        if not out:
            raise NOT_FOUND
        return out

    target = [Param("target", "any"), Param("address", "str", optional=True)]
    registry.add(
        "dispatcher.drain",
        drain,
        doc="Drain destinations (SET ADDRESS, or a duid): no new calls, active calls finish",
        params=target,
    )
    registry.add(
        "dispatcher.undrain",
        undrain,
        doc="End a drain (SET ADDRESS, or a duid): the destinations take new calls again",
        params=target,
    )
    registry.add(
        "dispatcher.drain_status",
        drain_status,
        doc="Active calls of draining destinations, since when, and whether drained",
        params=[Param("target", "any", optional=True), Param("address", "str", optional=True)],
    )
