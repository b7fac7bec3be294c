"""The dispatcher: destination sets, selection, health and load (pure core).

Never touches sockets, the event loop or the clock: callers pass ``now``.
Kamailio's dispatcher module is the reference for every rule; see
``shared/KAMAILIO.md`` and the docstrings that cite dispatch.c.
"""

from sipfleet.dispatch.attrs import Attrs, parse_attrs
from sipfleet.dispatch.destination import (
    Address,
    Destination,
    DestinationSpec,
    StateKey,
    make_destination,
    normalize_uri,
)
from sipfleet.dispatch.dispatcher import Dispatcher, SpecSource
from sipfleet.dispatch.errors import DestinationError, DispatcherError, ListFileError
from sipfleet.dispatch.flags import parse_rpc_state, state_letters
from sipfleet.dispatch.generation import ReloadResult
from sipfleet.dispatch.hashing import ds_get_hash, rpc_hash, uri_hash_keys
from sipfleet.dispatch.health import DstEvent, ProbeRequest
from sipfleet.dispatch.listfile import format_list, parse_list, read_list_file, write_list_file
from sipfleet.dispatch.select import (
    Keys,
    LoadView,
    NoDestination,
    NoDestinationReason,
    Selection,
    SelectKeys,
)
from sipfleet.dispatch.settings import ALGORITHMS, DispatcherSettings, ReplyCodes, RouteSpec
from sipfleet.dispatch.snapshot import Resolver, Snapshot, build_snapshot
from sipfleet.dispatch.state import AdminState, DestState, Health, LatencyStats
from sipfleet.dispatch.target import DestTarget

__all__ = [
    "ALGORITHMS",
    "Address",
    "AdminState",
    "Attrs",
    "DestState",
    "DestTarget",
    "Destination",
    "DestinationError",
    "DestinationSpec",
    "Dispatcher",
    "DispatcherError",
    "DispatcherSettings",
    "DstEvent",
    "Health",
    "Keys",
    "LatencyStats",
    "ListFileError",
    "LoadView",
    "NoDestination",
    "NoDestinationReason",
    "ProbeRequest",
    "ReloadResult",
    "ReplyCodes",
    "Resolver",
    "RouteSpec",
    "SelectKeys",
    "Selection",
    "Snapshot",
    "SpecSource",
    "StateKey",
    "build_snapshot",
    "ds_get_hash",
    "format_list",
    "make_destination",
    "normalize_uri",
    "parse_attrs",
    "parse_list",
    "parse_rpc_state",
    "read_list_file",
    "rpc_hash",
    "state_letters",
    "uri_hash_keys",
    "write_list_file",
]
