"""How the MCP tools reach sipfleet: one JSON-RPC call, in process or remote.

``RegistryBackend`` runs the call through the server's own JSON-RPC handler
(the /mcp route: exactly what /RPC would answer, with the MCP client named as
the caller in events); ``ClientBackend`` is the CLI's client (ctl socket or
HTTP) for ``sipfleet mcp`` on stdio.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from sipfleet.aio.rpc_client import (
    RpcUnreachable,
    call_ctl_json,
    call_http,
    jsonrpc_request,
)
from sipfleet.control.jsonrpc import JsonRpcHandler, JsonRpcReply
from sipfleet.control.methods import RPC_CALLER

__all__ = ["Backend", "BackendError", "ClientBackend", "RegistryBackend"]


class BackendError(Exception):
    """The call failed: a fault of the server (``code`` set) or no answer at all."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Backend(Protocol):
    transport: str
    """How the MCP client reached us: "stdio" or "http"."""

    async def call(self, method: str, params: Sequence[object] = (), *, who: str = "") -> Any: ...


def _result(doc: dict[str, Any]) -> Any:
    error = doc.get("error")
    if isinstance(error, dict):
        raise BackendError(
            f"{error.get('code')} - {error.get('message')}", int(error.get("code") or 0)
        )
    return doc.get("result")


class RegistryBackend:
    """In process: the server's JSON-RPC handler, the caller set to the MCP client."""

    transport = "http"

    def __init__(self, handler: JsonRpcHandler) -> None:
        self._handler = handler

    async def call(self, method: str, params: Sequence[object] = (), *, who: str = "") -> Any:
        token = RPC_CALLER.set(who or "mcp")
        try:
            outcome = self._handler.handle(orjson.dumps(jsonrpc_request(method, params)))
            reply = await outcome if inspect.isawaitable(outcome) else outcome
        finally:
            RPC_CALLER.reset(token)
        assert isinstance(reply, JsonRpcReply)
        return _result(orjson.loads(reply.body))


class ClientBackend:
    """Remote: the ctl socket (``socket_path``) or HTTP (``url``, ``token``)."""

    transport = "stdio"

    def __init__(
        self,
        *,
        url: str | None = None,
        token: str | None = None,
        socket_path: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if (url is None) == (socket_path is None):
            raise ValueError("give url or socket_path")
        self.url = url
        self.token = token
        self.socket_path = socket_path
        self.timeout = timeout

    @property
    def address(self) -> str:
        return self.url or f"unix:{self.socket_path}"

    async def call(self, method: str, params: Sequence[object] = (), *, who: str = "") -> Any:
        try:
            if self.url is not None:
                doc = await call_http(
                    self.url, method, params, token=self.token, timeout=self.timeout
                )
            else:
                assert self.socket_path is not None
                doc = await call_ctl_json(self.socket_path, method, params, timeout=self.timeout)
        except RpcUnreachable as e:
            raise BackendError(
                f"cannot reach sipfleet at {e.address}: {e.reason} (is it running? "
                "point at it with --run-dir, --socket or --url)"
            ) from None
        return _result(doc)
