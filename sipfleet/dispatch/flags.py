"""Destination flag bits, RPC state letters and Kamailio's state-argument parsing.

Bits as in Kamailio's ``dispatch.h``: 1 inactive (I), 2 trying (T), 4 disabled
(D), 8 probing (P), 16 no DNS at load, 32 no ping (6.0). A destination is
skipped by selection when I or D is set (``ds_skip_dst``).
"""

from __future__ import annotations

from sipfleet.dispatch.errors import DispatcherError

__all__ = [
    "DS_DISABLED",
    "DS_INACTIVE",
    "DS_NODNS",
    "DS_NOPING",
    "DS_PROBING",
    "DS_STATE_BITS",
    "DS_TRYING",
    "parse_mark_state",
    "parse_rpc_state",
    "skip_dst",
    "state_letters",
]

DS_INACTIVE = 1
DS_TRYING = 2
DS_DISABLED = 4
DS_PROBING = 8
DS_NODNS = 16
DS_NOPING = 32

#: The runtime state bits (I, T, D, P). Kamailio 6.x clears all six bits on a
#: state change (DS_STATES_ALL = 63); sipfleet keeps no-DNS and no-ping as
#: configuration, so an RPC state change never drops a "no ping" flag.
DS_STATE_BITS = DS_INACTIVE | DS_TRYING | DS_DISABLED | DS_PROBING


def skip_dst(flags: int) -> bool:
    """Kamailio ``ds_skip_dst``: inactive or disabled entries are not selected."""
    return bool(flags & (DS_INACTIVE | DS_DISABLED))


def state_letters(flags: int) -> str:
    """The two-letter state Kamailio's ``dispatcher.list`` prints, e.g. ``AP``.

    First letter by precedence I > D > T > A; second P (probing), N (no
    ping) or X (dispatcher.c ``ds_rpc_print_set``).
    """
    if flags & DS_INACTIVE:
        first = "I"
    elif flags & DS_DISABLED:
        first = "D"
    elif flags & DS_TRYING:
        first = "T"
    else:
        first = "A"
    if flags & DS_PROBING:
        second = "P"
    elif flags & DS_NOPING:
        second = "N"
    else:
        second = "X"
    return first + second


def parse_rpc_state(state: str) -> int:
    """Parse the state argument of ``dispatcher.set_state`` into state bits.

    First character a/A/1 active, i/I/0 inactive, d/D/2 disabled, t/T/3
    trying; a second ``p``/``P`` adds probing (ignored for disabled), as in
    ``dispatcher_rpc_set_state_helper``. Raises DispatcherError with
    Kamailio's fault text.
    """
    if not state:
        raise DispatcherError(500, "Invalid State Parameter")
    first = state[0]
    probing = len(state) > 1 and state[1] in "pP"
    if first in "0Ii":
        return DS_INACTIVE | (DS_PROBING if probing else 0)
    if first in "1Aa":
        return DS_PROBING if probing else 0
    if first in "2Dd":
        return DS_DISABLED
    if first in "3Tt":
        return DS_TRYING | (DS_PROBING if probing else 0)
    raise DispatcherError(500, "Unknown State Value")


def parse_mark_state(text: str) -> int:
    """Parse a ``ds_mark_dst("...")`` state string (``ds_parse_flags``).

    Each letter applies in turn: a clears every state bit, i/t/d/p set I, T,
    D, P. Raises ValueError on any other letter.
    """
    flags = 0
    for ch in text:
        c = ch.lower()
        if c == "a":
            flags &= ~DS_STATE_BITS
        elif c == "i":
            flags |= DS_INACTIVE
        elif c == "d":
            flags |= DS_DISABLED
        elif c == "t":
            flags |= DS_TRYING
        elif c == "p":
            flags |= DS_PROBING
        else:
            raise ValueError(f"bad state letter {ch!r} in {text!r} (expected a, i, t, d, p)")
    return flags
