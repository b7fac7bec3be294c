"""Probe latency maths: ``ds_update_latency`` and congestion control (cc=1).

Each OPTIONS reply to a probing destination adds a sample to its
``LatencyStats`` (see state.py); with ``cc=1`` the estimate above the
average lowers the destination's runtime rweight, as Kamailio's
``ds_update_weighted_congestion_control`` does.
"""

from __future__ import annotations

from sipfleet.dispatch.destination import Destination
from sipfleet.dispatch.runtime import SetRun
from sipfleet.dispatch.state import DestState, LatencyStats

__all__ = ["cc_weight", "update_latency"]

_UINT32_MAX = 0xFFFFFFFF


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def cc_weight(weight: int, lat: LatencyStats) -> tuple[int, int]:
    """``ds_update_weighted_congestion_control``: (active weight, congestion ms)."""
    cms = max(int(lat.estimate - lat.average), 0)
    return max(weight - cms, 0), cms


def update_latency(
    run: SetRun,
    st: DestState,
    d: Destination,
    code: int | None,
    rtt: float | None,
    alpha: float,
) -> None:
    """``ds_update_latency``: statistics, and congestion control (cc=1).

    ``code`` None or 408 is a timeout; ``rtt`` seconds, None when unknown;
    ``alpha`` the weight of the old estimate.
    """
    if not st.probing:
        return
    lat = st.latency
    timeout = code is None or code == 408
    if timeout and lat.timeout < _UINT32_MAX:
        lat.timeout += 1
    if rtt is None:
        return
    if not timeout:
        lat.update(int(rtt * 1000), alpha)
    entries, states = run.entries, run.states
    if not d.attrs.cc or d.attrs.weight <= 0:
        return
    if not all(e.attrs.cc for e in entries):
        # Kamailio recomputes only this entry's rweight and does not
        # rebuild the table unless every entry of the set has cc=1.
        st.rweight = cc_weight(d.attrs.weight, lat)[0]
        return
    total = congested = normal = 0
    apply = False
    for e, s in zip(entries, states, strict=True):
        if e.attrs.weight <= 0:
            continue
        aw, cms = cc_weight(e.attrs.weight, s.latency if s.has_latency else LatencyStats())
        total += cms
        if aw == 0:
            congested += 1
        else:
            normal += 1
        if s is st and s.rweight != aw:
            s.rweight = aw
            apply = True
    if congested > 1 and normal == 0:
        # Every destination is congested: share by congestion ratio.
        for s in states:
            cms = int(s.latency.estimate - s.latency.average) if s.has_latency else 0
            aw = _cdiv(total << 4, cms or 1)
            if s.rweight != aw:
                s.rweight = aw
                apply = True
    if apply:
        run.rw_dirty = True
