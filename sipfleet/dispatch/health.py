"""Health rules: probe eligibility, state transitions, dst-up/dst-down events.

Ports of Kamailio's dispatch.c: ``ds_ping_result_helper`` and ``ds_ping_set``
(who is probed), ``ds_options_callback`` (what a probe result means) and
``ds_update_state`` (thresholds and the trying -> inactive path). An event
is due when a destination changes between usable and unusable (inactive or
disabled), as Kamailio runs ``event_route[dispatcher:dst-up|dst-down]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sipfleet.dispatch.destination import Destination
from sipfleet.dispatch.flags import (
    DS_DISABLED,
    DS_INACTIVE,
    DS_NODNS,
    DS_NOPING,
    DS_PROBING,
    DS_TRYING,
    skip_dst,
)
from sipfleet.dispatch.runtime import SetRun
from sipfleet.dispatch.state import DestState

__all__ = [
    "DST_DOWN",
    "DST_UP",
    "PROBE_ALL",
    "PROBE_INACTIVE",
    "PROBE_NONE",
    "PROBE_ONLYFLAGGED",
    "DstEvent",
    "ProbeRequest",
    "apply_state",
    "event_for",
    "probe_eligible",
    "probe_result_state",
    "update_state",
]

DST_UP = "dst-up"
DST_DOWN = "dst-down"

PROBE_NONE = 0
PROBE_ALL = 1
PROBE_INACTIVE = 2
PROBE_ONLYFLAGGED = 3


class DstEvent(NamedTuple):
    """A destination became usable (dst-up) or unusable (dst-down).

    ``code`` is the SIP code behind it when there was one (None for a
    timeout or an operator action). A tuple: a reload may report 100k.
    """

    kind: str
    set_id: int
    uri: str
    duid: str | None
    reason: str
    code: int | None = None

    @property
    def route(self) -> str:
        """Kamailio's event route name, e.g. ``dispatcher:dst-down``."""
        return "dispatcher:" + self.kind

    def data(self) -> dict[str, object]:
        """The event's fields as logged, counted and sent to webhooks."""
        return {
            "set": self.set_id,
            "uri": self.uri,
            "duid": self.duid,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """One OPTIONS to send: to ``destination.uri``, From ``from_uri``.

    ``obproxy`` (attribute) overrides the next hop; the destination's
    ``socket``/``sockname`` attributes say where to send from.
    """

    destination: Destination
    method: str
    from_uri: str
    obproxy: str | None
    sent_at: float


def event_for(
    dest: Destination, old_flags: int, new_flags: int, reason: str, code: int | None
) -> DstEvent | None:
    """The event a state change deserves, if any."""
    was, now = skip_dst(old_flags), skip_dst(new_flags)
    if was == now:
        return None
    return DstEvent(
        DST_DOWN if now else DST_UP, dest.set_id, dest.uri, dest.attrs.duid, reason, code
    )


def probe_eligible(flags: int, config_flags: int, mode: int) -> bool:
    """Whether a destination gets an OPTIONS this round (``ds_ping_set``).

    Never when disabled, flagged no-ping (32), or no-DNS (16, as Kamailio
    6.x); then by mode: 1 all, 0 and 3 those with P, 2 those with P and I.
    """
    if flags & DS_DISABLED or config_flags & (DS_NOPING | DS_NODNS):
        return False
    if mode == PROBE_ALL:
        return True
    if mode != PROBE_INACTIVE:
        return bool(flags & DS_PROBING)
    return bool(flags & DS_PROBING and flags & DS_INACTIVE)


def probe_result_state(ok: bool, flags: int, mode: int) -> int | None:
    """The state a probe result asks for (``ds_options_callback``), or None.

    None: ignore the result (mode 3 and the P flag was dropped meanwhile,
    or the destination was disabled meanwhile). On success the P flag stays
    only in modes 1 and 3, so in mode 0 a destination is probed until it
    answers once; on failure the state is T, with P unless mode is 0.
    """
    if mode == PROBE_ONLYFLAGGED and not flags & DS_PROBING:
        return None
    if flags & DS_DISABLED:
        return None
    if ok:
        if mode == PROBE_ALL or (mode == PROBE_ONLYFLAGGED and flags & DS_PROBING):
            return DS_PROBING
        return 0
    return DS_TRYING | (DS_PROBING if mode != PROBE_NONE else 0)


def update_state(
    st: DestState, state: int, mode: int, probing_threshold: int, inactive_threshold: int
) -> tuple[int, int]:
    """Apply a requested state the way ``ds_update_state`` does.

    ``mode`` 1 (``ds_mark_dst``) turns T into I at once; mode 0 (probes)
    counts: ``probing_threshold`` failures make an entry inactive (trying
    on the way), ``inactive_threshold`` successes bring an inactive one
    back. Returns (old flags, new flags).
    """
    old = st.flags()
    init_state = state
    if state & DS_TRYING and old & DS_INACTIVE:
        # Inactive stays inactive: it has to become active before trying.
        state = (state & ~DS_TRYING) | DS_INACTIVE
    new = DS_DISABLED if state & DS_DISABLED else state
    if state & DS_TRYING:
        st.probing_count += 1
        if mode == 1 or st.probing_count >= probing_threshold:
            new = (new & ~DS_TRYING) | DS_INACTIVE
            st.probing_count = 0
    elif not init_state & DS_TRYING and old & DS_INACTIVE:
        st.probing_count += 1
        if mode == 0 and st.probing_count < inactive_threshold:
            new |= DS_INACTIVE
            if old & DS_PROBING:
                new |= DS_PROBING
        else:
            st.probing_count = 0
    else:
        st.probing_count = 0
    st.set_flags(new)
    return old, st.flags()


def apply_state(
    run: SetRun,
    st: DestState,
    d: Destination,
    state: int,
    mode: int,
    reason: str,
    code: int | None,
    probing_threshold: int,
    inactive_threshold: int,
) -> list[DstEvent]:
    """``update_state`` on an entry of ``run``; the event it deserves, if any.

    A change between usable and unusable of an entry with an rweight makes
    algorithm 11's table stale.
    """
    old, new = update_state(st, state, mode, probing_threshold, inactive_threshold)
    ev = event_for(d, old, new, reason, code)
    if ev is None:
        return []
    if st.rweight > 0:
        run.rw_dirty = True
    return [ev]
