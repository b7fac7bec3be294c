"""The rest of the dialog module's RPC methods (dlg.list, dlg.end_dlg and
dlg.stats_active are in ``sipfleet.control.methods``).

    dlg.terminate_dlg CALLID FROMTAG TOTAG   BYE both sides, as dlg.end_dlg
    dlg.list_match KEY OP VALUE [LIMIT]      dialogs whose ruri|furi|turi|callid
                                             (eq|re|sw) or start_ts (gt|lt) match
    dlg.list_match_ctx ...                   the same (sipfleet has no context)
    dlg.list_ctx                             dlg.list (no context either)
    dlg.dlg_list CALLID [FROMTAG]            the dialogs of one Call-ID
    dlg.briefing [FORMAT]                    h_entry, h_id and FORMAT's fields
    dlg.profile_list / profile_get_size P    404 "Profile not found: P": no profiles

Parameters, faults and shapes as Kamailio 5.6.3's dialog.c. Where sipfleet
differs: ``ruri`` matches the callee's Contact (the dialog's remote target;
sipfleet keeps no copy of the INVITE's R-URI), and dlg.briefing's ``T``
gives the callee's tag (5.6.3 prints the caller's tag there by mistake).
"""

from __future__ import annotations

import re
from typing import Any

from sipfleet.control.methods import AppLike, dialog_record, end_dialog
from sipfleet.control.registry import Param, ParamKind, Registry, RpcFault
from sipfleet.proxy.dialogs import CONFIRMED, Dialog

__all__ = ["register_dlg_methods"]

_KEYS = ("ruri", "furi", "turi", "callid", "start_ts")
_MAX_PATTERN = 1024  # a regex longer than this is refused, not compiled


def register_dlg_methods(registry: Registry, app: AppLike) -> None:
    def records(dialogs: list[Dialog]) -> list[dict[str, Any]]:
        now_wall, now = app.wall(), app.now()
        return [dialog_record(app, d, now_wall, now) for d in dialogs]

    def terminate(call_id: str, from_tag: str, to_tag: str) -> None:
        dlg = app.proxy.dialogs.find(call_id.encode(), from_tag.encode(), to_tag.encode())
        if dlg is None or dlg.to_tag is None:
            raise RpcFault(500, "Couldnt find callid in dialog")
        if dlg.state != CONFIRMED:
            return  # dlg_bye_all of an early dialog fails without a fault
        end_dialog(app, dlg, what="dlg.terminate_dlg")

    def list_match(key: str, op: str, value: str, limit: int = 0) -> list[dict[str, Any]]:
        if not key or not op or not value:
            raise RpcFault(500, "Invalid parameters")
        if key not in _KEYS:
            raise RpcFault(500, "Invalid matching key parameter")
        if len(op) != 2 or op not in ("eq", "re", "sw", "gt", "lt"):
            raise RpcFault(500, "Invalid matching operator parameter")
        pattern: re.Pattern[str] | None = None
        if op == "re":
            if len(value) > _MAX_PATTERN:
                raise RpcFault(500, "Invalid matching value parameter")
            try:
                pattern = re.compile(value, re.IGNORECASE | re.MULTILINE)
            except re.error:
                raise RpcFault(500, "Invalid matching value parameter") from None
        if key == "start_ts" and op in ("eq", "re", "sw"):
            raise RpcFault(500, "Matching operator not supported with start_ts key")
        if key != "start_ts" and op in ("gt", "lt"):
            raise RpcFault(500, "Matching operator not supported")
        number = int(value) if value.isdigit() else None
        now_wall, now = app.wall(), app.now()
        found: list[Dialog] = []
        for dlg in app.proxy.dialogs:
            rec = dialog_record(app, dlg, now_wall, now)
            if key == "start_ts":
                ts = int(rec["start_ts"])
                hit = number is not None and (ts > number if op == "gt" else ts < number)
            else:
                text = {
                    "ruri": rec["callee"]["contact"],
                    "furi": rec["from_uri"],
                    "turi": rec["to_uri"],
                    "callid": rec["call-id"],
                }[key]
                if op == "eq":
                    hit = text == value
                elif op == "sw":
                    hit = text.startswith(value)
                else:
                    hit = pattern is not None and pattern.search(text) is not None
            if hit:
                found.append(dlg)
                if 0 < limit == len(found):
                    break
        if not found:
            raise RpcFault(404, "Not found")
        return records(found)

    def list_ctx() -> list[dict[str, Any]]:
        return records(list(app.proxy.dialogs))

    def dlg_list(call_id: str, from_tag: str | None = None) -> list[dict[str, Any]]:
        cid = call_id.encode()
        tag = from_tag.encode() if from_tag is not None else None
        return records(
            [
                d
                for d in app.proxy.dialogs
                if d.call_id == cid and (tag is None or d.from_tag == tag)
            ]
        )

    def briefing(fmt: str = "ftcFT") -> list[dict[str, Any]]:
        now_wall, now = app.wall(), app.now()
        out = []
        for dlg in app.proxy.dialogs:
            rec = dialog_record(app, dlg, now_wall, now)
            item: dict[str, Any] = {"h_entry": rec["h_entry"], "h_id": rec["h_id"]}
            for c in fmt[:64]:
                field = {
                    "f": ("from_uri", rec["from_uri"]),
                    "t": ("to_uri", rec["to_uri"]),
                    "c": ("call-id", rec["call-id"]),
                    "F": ("from_tag", rec["caller"]["tag"]),
                    "T": ("to_tag", rec["callee"]["tag"]),
                    "I": ("init_ts", rec["init_ts"]),
                    "S": ("start_ts", rec["start_ts"]),
                    "E": ("end_ts", rec["end_ts"]),
                    "s": ("state", rec["state"]),
                }.get(c)
                if field is not None:
                    item[field[0]] = field[1]
            out.append(item)
        return out

    def no_profile(name: str, value: object = None) -> None:
        raise RpcFault(404, f"Profile not found: {name}")

    s: ParamKind = "str"
    registry.add(
        "dlg.terminate_dlg",
        terminate,
        doc="End a given dialog based on callid",
        params=[
            Param("callid", s, autoconvert=True),
            Param("from_tag", s, autoconvert=True),
            Param("to_tag", s, autoconvert=True),
        ],
        bad_params=RpcFault(400, "Need a Callid ,from tag ,to tag"),
    )
    match_params = [
        Param("key", s),
        Param("op", s),
        Param("value", s, autoconvert=True),
        Param("limit", "int", optional=True, lenient=True),
    ]
    registry.add(
        "dlg.list_match",
        list_match,
        doc="Print matching dialogs",
        params=match_params,
        bad_params=RpcFault(500, "Invalid parameters"),
    )
    registry.add(
        "dlg.list_match_ctx",
        list_match,
        doc="Print matching dialogs with associated context",
        params=match_params,
        bad_params=RpcFault(500, "Invalid parameters"),
    )
    registry.add("dlg.list_ctx", list_ctx, doc="Print all dialogs with associated context")
    registry.add(
        "dlg.dlg_list",
        dlg_list,
        doc="Print dialog based on callid and optionally fromtag",
        params=[
            Param("callid", s, autoconvert=True),
            Param("from_tag", s, optional=True, autoconvert=True),
        ],
    )
    registry.add(
        "dlg.briefing",
        briefing,
        doc="List the summary of dialog records in memory",
        params=[Param("format", s, optional=True, lenient=True)],
    )
    registry.add(
        "dlg.profile_list",
        no_profile,
        doc="Lists all the dialogs belonging to a profile",
        params=[Param("profile", s, autoconvert=True), Param("value", "any", optional=True)],
    )
    registry.add(
        "dlg.profile_get_size",
        no_profile,
        doc="Returns the number of dialogs belonging to a profile",
        params=[Param("profile", s, autoconvert=True), Param("value", "any", optional=True)],
    )
