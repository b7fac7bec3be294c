"""The control plane's pure core: one registry of RPC methods and the
protocols that reach it (JSON-RPC as Kamailio's jsonrpcs, BINRPC as its ctl).

Register a method::

    from sipfleet.control import Param, Registry, RpcFault

    registry = Registry()          # system.listMethods/methodHelp/methodSignature included
    registry.add(
        "dispatcher.set_state",
        set_state,                 # set_state(state: str, group: int, address: str) -> str
        doc="Set the state of a destination address.",
        params=[Param("state", autoconvert=True), Param("group", "int"), Param("address")],
    )

Handlers raise ``RpcFault(code, message)`` for Kamailio's faults and may
return an awaitable. The transports live in ``sipfleet.aio.rpc_servers``.
"""

from sipfleet.control.binrpc import BinRpcHandler
from sipfleet.control.core_methods import ServerInfo, register_core_methods
from sipfleet.control.jsonrpc import JsonRpcHandler, JsonRpcReply
from sipfleet.control.registry import (
    INVALID_PARAMS,
    Dialect,
    Method,
    Param,
    Registry,
    RpcFault,
    settle,
)

__all__ = [
    "INVALID_PARAMS",
    "BinRpcHandler",
    "Dialect",
    "JsonRpcHandler",
    "JsonRpcReply",
    "Method",
    "Param",
    "Registry",
    "RpcFault",
    "ServerInfo",
    "register_core_methods",
    "settle",
]
