"""RPC methods on a running sipfleet (placeholder until the full set lands)."""

from __future__ import annotations

from typing import Any

from sipfleet.control.registry import Registry

__all__ = ["register_methods"]


def register_methods(registry: Registry, app: Any) -> None:
    async def reload() -> str:
        await app.reload()
        return "Ok. Dispatcher successfully reloaded."

    registry.add("dispatcher.reload", reload, doc="Reload dispatcher destination sets")
    registry.add(
        "dispatcher.list",
        lambda: app.dispatcher.list_records(load=app.proxy.dialogs),
        doc="Return the content of dispatcher sets",
    )
