"""One registry of RPC methods, shared by every control transport.

A method has a name, a one-line doc, a parameter spec and a handler. The
transports (JSON-RPC over HTTP, FIFO and datagrams; BINRPC for kamcmd) decode
their request into a method name plus positional values and ask the registry
to call it. Parameters are read the way Kamailio's ``rpc->scan`` reads them,
which differs between JSON-RPC and BINRPC (see ``Dialect``).

Errors, in two families:

    RpcFault          the caller's fault or a refused operation: answered
                      with {"code": C, "message": M} (HTTP status C)
    any other error   our bug: logged with its traceback, answered as
                      500 "Internal Server Error"

Handlers may be plain functions or return an awaitable (a method that
finishes later, e.g. a drain that waits). ``settle`` keeps sync callers sync
and hands async ones a coroutine to await, without this module touching an
event loop.
"""

from __future__ import annotations

import enum
import inspect
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, TypeVar

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "RPC_CALLER",
    "Dialect",
    "Handler",
    "Method",
    "Param",
    "ParamKind",
    "Registry",
    "RpcFault",
    "settle",
]

log = logging.getLogger(__name__)

#: Who is calling, for events, logs and the per-transport call counts. Transports
#: set it per request ("http 127.0.0.1", "binrpc", "fifo"...): its first word names
#: the transport; "rpc" when none did (an in-process caller).
RPC_CALLER: ContextVar[str] = ContextVar("sipfleet_rpc_caller", default="rpc")


class RpcFault(Exception):
    """A fault answered to the caller: Kamailio's ``rpc->fault(ctx, code, msg)``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"RpcFault({self.code}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RpcFault):
            return NotImplemented
        return (self.code, self.message) == (other.code, other.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))


# The fault most Kamailio methods answer when rpc->scan fails.
INVALID_PARAMS = RpcFault(500, "Invalid Parameters")
INTERNAL_ERROR = RpcFault(500, "Internal Server Error")


class Dialect(enum.Enum):
    """How parameters are read; the two Kamailio transports disagree.

    JSON (jsonrpcs): an int parameter takes any JSON number, truncated; any
    other JSON value reads as 0 and is not an error (Kamailio 5.6, measured:
    ``dispatcher.set_state ip "1" sip:..`` acts on group 0). A str parameter
    needs a JSON string (a number too when the parameter autoconverts).

    BINRPC (ctl): records are typed; an int parameter needs an int record, a
    str parameter a string record, unless the parameter autoconverts.
    """

    JSON = "json"
    BINRPC = "binrpc"


ParamKind = Literal["int", "str", "float", "any"]


@dataclass(frozen=True, slots=True)
class Param:
    """One positional parameter. ``autoconvert`` is Kamailio's '.' scan modifier.

    ``lenient`` (optional parameters only): a value that cannot be read counts
    as not given, for methods whose Kamailio handler ignores a failed
    ``rpc->scan`` of its optional part (ctl only prepares that fault, and the
    handler's own reply wins: ``kamcmd dispatcher.ping_active x`` reads the state).
    """

    name: str
    kind: ParamKind = "str"
    optional: bool = False
    autoconvert: bool = False
    lenient: bool = False


Handler = Callable[..., object]
"""Called with the scanned parameters by position; optional ones that were
not given are left out, so the handler's own defaults apply. Returns a
JSON-like value (None = nothing added: ``{}`` in JSON-RPC) or an awaitable."""


class _Missing(Exception):
    """A parameter could not be read (scan failure); the method picks the fault."""


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    handler: Handler
    doc: str
    params: tuple[Param, ...] = ()
    bad_params: RpcFault = field(default=INVALID_PARAMS)
    #: Calls by transport (the first word of RPC_CALLER): bounded by the
    #: transports sipfleet has, which set it.
    calls: Counter[str] = field(default_factory=Counter, compare=False, repr=False)

    def scan(self, raw: Sequence[object], dialect: Dialect) -> list[object]:
        """Read ``raw`` per the spec; raises the method's ``bad_params`` fault."""
        values: list[object] = []
        for i, spec in enumerate(self.params):
            if i >= len(raw):
                if spec.optional:
                    break
                raise self.bad_params
            try:
                values.append(_scan_one(raw[i], spec, dialect))
            except _Missing:
                if spec.optional and spec.lenient:
                    break
                raise self.bad_params from None
        return values

    def invoke(self, raw: Sequence[object], dialect: Dialect) -> object:
        """Scan and call the handler; the result may be an awaitable."""
        self.calls[RPC_CALLER.get().partition(" ")[0]] += 1
        return self.handler(*self.scan(raw, dialect))


def _scan_one(value: object, spec: Param, dialect: Dialect) -> object:
    kind = spec.kind
    if kind == "any":
        return value
    if kind == "int":
        return _scan_int(value, spec, dialect)
    if kind == "float":
        return _scan_float(value, spec, dialect)
    return _scan_str(value, spec, dialect)


def _scan_int(value: object, spec: Param, dialect: Dialect) -> int:
    if dialect is Dialect.JSON:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value) if math.isfinite(value) else 0
        return 0  # jsonrpcs reads a non-number as 0, without an error
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if spec.autoconvert:
        if isinstance(value, float) and math.isfinite(value):
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip(), 10)
            except ValueError:
                pass
    raise _Missing


def _scan_float(value: object, spec: Param, dialect: Dialect) -> float:
    if dialect is Dialect.JSON:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return 0.0  # like ints: valuedouble of a non-number
    if isinstance(value, float):
        return value
    if spec.autoconvert:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    raise _Missing


def _scan_str(value: object, spec: Param, dialect: Dialect) -> str:
    if isinstance(value, str):
        return value
    if spec.autoconvert and isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise _Missing
        return str(int(value))  # int2str of the number, as jsonrpcs/ctl autoconvert
    raise _Missing


class Registry:
    """The methods a running sipfleet answers, by name (case-sensitive).

    ``system.listMethods``, ``system.methodHelp`` and
    ``system.methodSignature`` are registered at construction, as in
    Kamailio's core.
    """

    def __init__(self, *, system_methods: bool = True) -> None:
        self._methods: dict[str, Method] = {}
        if system_methods:
            _register_system(self)

    def add(
        self,
        name: str,
        handler: Handler,
        *,
        doc: str,
        params: Iterable[Param] = (),
        bad_params: RpcFault = INVALID_PARAMS,
    ) -> Method:
        """Register ``handler`` as ``name``; a name may be registered once."""
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"bad RPC method name {name!r}")
        if name in self._methods:
            raise ValueError(f"RPC method {name!r} is already registered")
        if not doc.strip() or "\n" in doc.strip():
            raise ValueError(f"RPC method {name!r} needs a one-line doc")
        spec = tuple(params)
        seen_optional = False
        for p in spec:
            if seen_optional and not p.optional:
                raise ValueError(f"{name}: required parameter {p.name!r} after an optional one")
            seen_optional = seen_optional or p.optional
        _check_arity(name, handler, spec)
        method = Method(name, handler, doc.strip(), spec, bad_params)
        self._methods[name] = method
        return method

    def method(
        self,
        name: str,
        *,
        doc: str,
        params: Iterable[Param] = (),
        bad_params: RpcFault = INVALID_PARAMS,
    ) -> Callable[[_H], _H]:
        """Decorator form of ``add``."""

        def register(handler: _H) -> _H:
            self.add(name, handler, doc=doc, params=params, bad_params=bad_params)
            return handler

        return register

    def remove(self, name: str) -> None:
        del self._methods[name]

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def methods(self) -> list[Method]:
        return list(self._methods.values())

    def names(self) -> list[str]:
        """Every method name, sorted as Kamailio lists them."""
        return sorted(self._methods)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __len__(self) -> int:
        return len(self._methods)


def _check_arity(name: str, handler: Handler, spec: tuple[Param, ...]) -> None:
    """Catch a handler that cannot take its params at registration, not at the first call."""
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # some builtins have no signature to check
    required = sum(not p.optional for p in spec)
    for count in {required, len(spec)}:
        try:
            sig.bind(*([None] * count))
        except TypeError as e:
            raise ValueError(
                f"RPC method {name!r}: handler cannot take {count} params: {e}"
            ) from None


_H = TypeVar("_H", bound=Handler)
R = TypeVar("R")


def settle(
    call: Callable[[], object],
    on_value: Callable[[object], R],
    on_fault: Callable[[RpcFault], R],
) -> R | Awaitable[R]:
    """Run ``call`` and render its outcome, now or (for an awaitable) later.

    Faults become ``on_fault``; any other exception is our bug: logged with
    its traceback and answered as ``INTERNAL_ERROR``.
    """
    try:
        outcome = call()
    except RpcFault as fault:
        return on_fault(fault)
    except Exception:
        log.exception("RPC method failed")
        return on_fault(INTERNAL_ERROR)
    if inspect.isawaitable(outcome):
        return _settle_later(outcome, on_value, on_fault)
    return on_value(outcome)


async def _settle_later(
    outcome: Awaitable[object],
    on_value: Callable[[object], R],
    on_fault: Callable[[RpcFault], R],
) -> R:
    try:
        value = await outcome
    except RpcFault as fault:
        return on_fault(fault)
    except Exception:
        log.exception("RPC method failed")
        return on_fault(INTERNAL_ERROR)
    return on_value(value)


def _register_system(registry: Registry) -> None:
    """Kamailio's core introspection methods; faults as 5.6.3 answers them."""

    def list_methods() -> list[str]:
        return registry.names()

    def method_help(name: str) -> str:
        method = registry.get(name)
        if method is None:
            raise RpcFault(400, "command not found")
        return method.doc

    def method_signature(*_: object) -> None:
        raise RpcFault(500, "Not Implemented Yet")

    registry.add(
        "system.listMethods", list_methods, doc="Lists all RPC methods supported by the server."
    )
    registry.add(
        "system.methodHelp",
        method_help,
        doc="Print the help string for given method.",
        params=[Param("method", "str")],
        bad_params=RpcFault(400, "Method Name Expected"),
    )
    registry.add(
        "system.methodSignature",
        method_signature,
        doc="Returns signature of given method.",
        params=[Param("method", "any", optional=True)],
    )
