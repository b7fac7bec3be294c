"""Guard rails of the MCP tools: what an agent may take out of a set at once.

Pure functions over the fleet as ``dispatcher.list`` shows it (one row per
destination, ``flags`` in Kamailio's letters). A destination is *usable*
when selection may pick it: its first letter is A (active) or T (trying);
I (inactive), D (disabled or draining) are out.

Taking destinations out (drain, disable, set inactive, remove) is refused
when it would leave a set with no usable destination, or with more than
``max_out_share`` of its destinations unusable (whatever the reason: a
destination already down by health counts), unless the caller passes
``force``. Only a change that takes a usable destination out is checked:
an agent may always put capacity back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Refusal", "check_take_out", "find_targets", "is_usable", "set_summary"]


def is_usable(row: dict[str, Any]) -> bool:
    return str(row.get("flags") or "")[:1] in ("A", "T")


def find_targets(
    rows: Iterable[dict[str, Any]], target: str, set_id: int | None = None
) -> list[dict[str, Any]]:
    """Rows named by ``target``: a URI (compared case-insensitively) or a duid,
    within ``set_id`` when given, else in every set."""
    by_uri = ":" in target
    out = []
    for r in rows:
        if set_id is not None and r.get("set") != set_id:
            continue
        if by_uri:
            if str(r.get("uri") or "").lower() == target.lower():
                out.append(r)
        elif r.get("duid") == target:
            out.append(r)
    return out


def set_summary(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per set: destinations, usable ones, and their share."""
    sets: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        sets.setdefault(int(r["set"]), []).append(r)
    return [
        {
            "set": sid,
            "destinations": len(members),
            "usable": sum(map(is_usable, members)),
        }
        for sid, members in sorted(sets.items())
    ]


@dataclass(frozen=True)
class Refusal:
    set_id: int
    reason: str


def check_take_out(
    rows: Sequence[dict[str, Any]], taking: Sequence[dict[str, Any]], max_out_share: float
) -> list[Refusal]:
    """Why taking ``taking`` out of service is not allowed (empty: allowed)."""
    out: list[Refusal] = []
    keys = {(r["set"], str(r["uri"]).lower()) for r in taking}
    for sid in sorted({int(r["set"]) for r in taking}):
        members = [r for r in rows if r.get("set") == sid]
        usable = [r for r in members if is_usable(r)]
        leaving = [r for r in usable if (sid, str(r["uri"]).lower()) in keys]
        if not leaving:
            continue  # already out: nothing changes for the set's capacity
        left = len(usable) - len(leaving)
        total = len(members)
        if left == 0:
            names = ", ".join(str(r.get("duid") or r["uri"]) for r in leaving)
            out.append(
                Refusal(
                    sid,
                    f"set {sid}: {names} {'is' if len(leaving) == 1 else 'are'} the last usable "
                    f"destination{'s' if len(leaving) > 1 else ''}; taking "
                    f"{'it' if len(leaving) == 1 else 'them'} out leaves the set nothing "
                    "to send calls to",
                )
            )
            continue
        share = (total - left) / total
        if share > max_out_share + 1e-9:
            out.append(
                Refusal(
                    sid,
                    f"set {sid}: {total - left} of {total} destinations would be out of service "
                    f"({share:.0%}), more than max_out_share {max_out_share:.0%}",
                )
            )
    return out
