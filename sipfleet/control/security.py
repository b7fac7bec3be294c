"""Bans and flood state over RPC (issue 11).

    security.bans                      every ban: address, reason, since, expires_in, offence
    security.ban     ADDRESS [SECONDS [REASON]]
                                       ban now (never a trunk or a back end)
    security.unban   ADDRESS           lift a ban (and forget earlier offences)
    pike.top         [ALL|HOT|WARM]    Kamailio pike's hot sources
    htable.dump      ipban             Kamailio's htable listing of the ban table
    htable.delete    ipban ADDRESS     Kamailio's htable item removal: an unban

The bans live in the core's Gate; ban/unban events reach the EventBus
(webhooks, ``sipfleet:events_ban``) with the next timer tick.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any, Protocol

from sipfleet.control.methods import RPC_CALLER
from sipfleet.control.registry import Param, Registry, RpcFault
from sipfleet.security.gate import Gate

__all__ = ["SecurityControl", "register_security_methods"]

TABLE = "ipban"  # Kamailio's default config names its ban htable so
NO_TABLE = RpcFault(500, "No such htable")
TRUSTED = RpcFault(403, "Trunk or back end: never banned")


class SecurityControl(Protocol):
    gate: Gate

    @property
    def loop(self) -> Any: ...


def _address(value: object) -> str:
    if not isinstance(value, str):
        raise RpcFault(400, "Invalid address")
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        raise RpcFault(400, f"Invalid address {value!r}") from None


def register_security_methods(
    registry: Registry, app: SecurityControl, wall: Callable[[], float] = time.time
) -> None:
    gate = app.gate

    def now() -> float:
        return float(app.loop.time())

    def bans() -> list[dict[str, Any]]:
        t, w = now(), wall()
        rows = gate.bans.listing(t)
        for row in rows:
            row["since"] = _iso(w - (t - row["since"]))
            row["expires_in"] = round(row["expires_in"], 1)
        return rows

    def ban(address: object, seconds: object = None, reason: object = None) -> dict[str, Any]:
        """SECONDS 0 or left out: [security] ban_time, doubled per earlier offence."""
        host = _address(address)
        duration: float | None = None
        if seconds is not None:
            try:
                duration = float(seconds)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise RpcFault(400, "Invalid seconds") from None
            if not 0 <= duration <= 10 * 365 * 86400:
                raise RpcFault(400, "Invalid seconds")
            if duration == 0:
                duration = None  # the default: ban_time, doubling for repeat offenders
        why = str(reason) if reason else f"rpc by {RPC_CALLER.get()}"
        made = gate.ban(host, why, now(), duration)
        if made is None:
            raise TRUSTED
        return {"address": host, "reason": why, "expires_in": round(made.until - now(), 1)}

    def unban(address: object) -> str:
        host = _address(address)
        if not gate.unban(host, now(), by=f"rpc by {RPC_CALLER.get()}"):
            raise RpcFault(404, "Not banned")
        return "Ok."

    def pike_top(which: object = "ALL") -> list[dict[str, Any]]:
        mode = which.upper() if isinstance(which, str) else "ALL"
        if mode not in ("ALL", "HOT", "WARM"):
            raise RpcFault(500, "Invalid Parameters")
        return gate.sources.top(now(), mode)

    def htable_dump(table: str) -> list[dict[str, Any]]:
        if table != TABLE:
            raise NO_TABLE
        t = now()
        return [
            {
                "entry": i,
                "size": 1,
                "slot": [{"name": b["address"], "value": b["offence"], "type": "int",
                          "expires": int(b["expires_in"])}],
            }
            for i, b in enumerate(gate.bans.listing(t))
        ]  # fmt: skip

    def htable_delete(table: str, key: str) -> None:
        if table != TABLE:
            raise NO_TABLE
        gate.unban(_address(key), now(), by=f"rpc by {RPC_CALLER.get()}")

    registry.add(
        "security.bans", bans, doc="Banned addresses: reason, since, seconds left, offence"
    )
    registry.add(
        "security.ban",
        ban,
        doc="Ban an address (ADDRESS [SECONDS [REASON]]); never a trunk or a back end",
        params=[
            Param("address", "str"),
            Param("seconds", "any", optional=True),
            Param("reason", "str", optional=True),
        ],
    )
    registry.add(
        "security.unban", unban, doc="Lift the ban of an address", params=[Param("address", "str")]
    )
    registry.add(
        "pike.top",
        pike_top,
        doc="Sources by request density: ALL, HOT (over the limit) or WARM",
        params=[Param("mode", "str", optional=True)],
    )
    registry.add(
        "htable.dump",
        htable_dump,
        doc="Dump a hash table (ipban: the bans)",
        params=[Param("htable", "str")],
    )
    registry.add(
        "htable.delete",
        htable_delete,
        doc="Delete a key of a hash table (ipban ADDRESS: an unban)",
        params=[Param("htable", "str"), Param("key", "str")],
    )


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
