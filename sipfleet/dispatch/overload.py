"""Overload control (RFC 7339, Kamailio 6.0 algorithm 64): setting it on a
destination (``ds_oc_set_attrs``) and listing it (``dispatcher.oclist``).

The per-destination data is ``OverloadState`` (state.py); selection skips
by it (select.py).
"""

from __future__ import annotations

import random
from typing import Any

from sipfleet.dispatch.flags import DS_STATE_BITS
from sipfleet.dispatch.runtime import SetRun
from sipfleet.dispatch.state import OverloadState

__all__ = ["oc_records", "oc_set_attrs"]


def oc_set_attrs(
    run: SetRun,
    uri: str,
    rate: int,
    interval_ms: int,
    seq: int,
    now: float,
    rng: random.Random,
) -> bool:
    """Start overload control on every entry of ``run`` with this URI
    (case-insensitive).

    For ``interval_ms`` (500 when 0) the destination is skipped for
    ``rate`` percent of algorithm-64 picks, ``rate`` clamped into
    [ocmin, ocmax]; an update with a ``seq`` not above the last is
    ignored. Returns whether an entry was updated.
    """
    key = uri.lower()
    updated = False
    for d, st in zip(run.entries, run.states, strict=True):
        if d.key[1] != key:
            continue
        oc = st.oc
        if oc is None:
            oc = st.oc = OverloadState(d.attrs.ocrate, d.attrs.ocmin, d.attrs.ocmax)
        if oc.ocseq >= seq:
            continue
        oc.ocrate = min(max(rate, oc.ocmin), oc.ocmax)
        oc.prepare(rng)
        oc.octime = now + (interval_ms if interval_ms > 0 else 500) / 1000.0
        oc.ocseq = seq
        updated = True
    return updated


def oc_records(run: SetRun) -> list[dict[str, Any]]:
    """``dispatcher.oclist`` for one set."""
    set_id = run.dset.set_id
    out: list[dict[str, Any]] = []
    for d, st in zip(run.entries, run.states, strict=True):
        oc = st.oc
        octime = oc.octime if oc is not None else 0.0
        out.append(
            {
                "group": set_id,
                "uri": d.uri,
                "flags": st.flags() | (d.flags & ~DS_STATE_BITS),
                "priority": d.priority,
                "ocrate": oc.ocrate if oc is not None else d.attrs.ocrate,
                "ocidx": oc.ocidx if oc is not None else 0,
                "ocseq": oc.ocseq if oc is not None else 0,
                "octime_sec": int(octime),
                "octime_usec": round((octime - int(octime)) * 1e6),
                "ocmin": oc.ocmin if oc is not None else d.attrs.ocmin,
                "ocmax": oc.ocmax if oc is not None else d.attrs.ocmax,
            }
        )
    return out
