"""The result of ``dispatcher.list``, shaped exactly as Kamailio builds it.

``ds_rpc_print_set`` in dispatcher.c: every array item is wrapped in a
one-key object (``{"SET": ...}``, ``{"DEST": ...}``); sets come in the
AVL walk order; ``ATTRS`` appears when the entry has attrs (never in
``short``); ``LATENCY`` when latency stats are kept; ``RUNTIME`` when
call-load is tracked; ``full`` adds HOST, IPADDR, PORT, PROTOID and
DNSTIME_SEC/USEC (5.6.3's full listing, measured). Unset strings are None
(JSON null). This is the RPC's answer as sent: nothing reshapes it after.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sipfleet.dispatch.errors import DispatcherError
from sipfleet.dispatch.flags import DS_DISABLED, DS_NOPING, state_letters
from sipfleet.dispatch.runtime import SetRun
from sipfleet.dispatch.select import LoadView

__all__ = ["MODE_FULL", "MODE_NORMAL", "MODE_SHORT", "list_records", "parse_mode"]

MODE_NORMAL = "normal"
MODE_SHORT = "short"
MODE_FULL = "full"


def parse_mode(mode: object) -> str:
    """The listing mode of ``dispatcher.list``'s optional argument: ``full``
    or ``short`` in any case; anything else is the normal listing."""
    smode = mode.lower() if isinstance(mode, str) else ""
    return smode if smode in (MODE_FULL, MODE_SHORT) else MODE_NORMAL


def list_records(
    runs: Iterable[SetRun], mode: str = MODE_NORMAL, *, latency: bool, load: LoadView | None
) -> dict[str, Any]:
    """Build ``{"NRSETS": n, "RECORDS": [{"SET": {...}}, ...]}``.

    Raises DispatcherError(500, "No Destination Sets") when there is none.
    """
    full = mode == MODE_FULL
    short = mode == MODE_SHORT
    records: list[dict[str, Any]] = []
    for run in runs:
        targets: list[dict[str, Any]] = []
        for d, st in zip(run.entries, run.states, strict=True):
            dest: dict[str, Any] = {
                "URI": d.uri,
                # A draining destination takes no new call: Kamailio's nearest
                # letter is D.
                "FLAGS": state_letters(
                    st.flags() | (d.flags & DS_NOPING) | (DS_DISABLED if st.skip_admin else 0)
                ),
                "PRIORITY": d.priority,
            }
            if full:
                dest["HOST"] = d.host
                addr = st.resolved or d.address
                dest["IPADDR"] = addr.ip if addr is not None else None
                dest["PORT"] = d.port or 0
                dest["PROTOID"] = d.proto_id
                # Resolved once at load, never re-resolved.
                dest["DNSTIME_SEC"] = 0
                dest["DNSTIME_USEC"] = 0
            a = d.attrs
            if not short and a.body is not None:
                dest["ATTRS"] = {
                    "BODY": a.body,
                    "DUID": a.duid,
                    "MAXLOAD": a.maxload,
                    "WEIGHT": a.weight,
                    "RWEIGHT": st.rweight,
                    "SOCKET": a.socket,
                    "SOCKNAME": a.sockname,
                    "OBPROXY": a.obproxy,
                }
            if latency:
                if st.has_latency:
                    dest["LATENCY"] = st.latency.as_record()
                else:
                    dest["LATENCY"] = {"AVG": 0.0, "STD": 0.0, "EST": 0.0, "MAX": 0, "TIMEOUT": 0}
            if load is not None:
                dest["RUNTIME"] = {"DLGLOAD": load.load(d.load_key)}
            targets.append({"DEST": dest})
        records.append({"SET": {"ID": run.dset.set_id, "TARGETS": targets}})
    if not records:
        raise DispatcherError(500, "No Destination Sets")
    return {"NRSETS": len(records), "RECORDS": records}
