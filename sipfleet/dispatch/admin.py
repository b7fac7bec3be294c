"""Setting what the operator says about destinations: one setter.

``set_state`` takes a ``DestTarget`` and either an ``AdminState`` (sipfleet's
drain, undrain, disable: the admin state only, health untouched) or
Kamailio state bits (``dispatcher.set_state`` / ``set_duid_state``:
``ds_reinit_state`` overwrites I, T, D and P). Kamailio's bits name the
first entry of the set with the URI or duid (the duid compared
case-insensitively, as ``ds_reinit_duid_state``); an admin state names
what ``lookup`` finds. A named destination that is not loaded is an error;
a whole set that is not loaded is not (Kamailio answers Ok to ``all``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sipfleet.dispatch.destination import Destination, StateKey
from sipfleet.dispatch.errors import DispatcherError
from sipfleet.dispatch.flags import DS_INACTIVE, DS_TRYING, skip_dst
from sipfleet.dispatch.runtime import SetRun
from sipfleet.dispatch.state import AdminState
from sipfleet.dispatch.target import BY_URI, WHOLE_SET, DestTarget, lookup

__all__ = ["admin_states", "set_state"]


def _not_found() -> DispatcherError:
    return DispatcherError(500, "State Update Failed")


def set_state(
    runs: Mapping[int, SetRun],
    target: DestTarget,
    state: AdminState | int,
    *,
    since: float | None,
    by: str,
) -> list[Destination]:
    """Set the state of the destinations ``target`` names; return those
    whose admin state changed, stamped with ``since`` and ``by`` (the
    caller persists them). Raises DispatcherError(500, "State Update
    Failed") when a named destination is not loaded."""
    if isinstance(state, AdminState):
        return _set_admin(runs, target, state, since, by)
    run = runs.get(target.set_id) if target.set_id is not None else None
    if target.kind == WHOLE_SET:
        if run is None:
            return []
        changed = _reinit(run, range(run.nr), state)
    else:
        if run is None:
            raise _not_found()
        if target.kind == BY_URI:
            i = run.dset.find_uri(target.name)
        else:
            i = run.dset.find_duid(target.name)
        if i is None:
            raise _not_found()
        changed = _reinit(run, (i,), state)
    for d in changed:
        st = run.states[d.index]
        st.admin_since = since
        st.admin_by = by
    return changed


def _set_admin(
    runs: Mapping[int, SetRun], target: DestTarget, admin: AdminState, since: float | None, by: str
) -> list[Destination]:
    found = lookup(runs, target)
    if not found and target.kind != WHOLE_SET:
        raise _not_found()
    changed: list[Destination] = []
    for d, st in found:
        if st.admin is admin:
            continue
        was = st.skip
        st.set_admin(admin)
        st.admin_since = since
        st.admin_by = by
        if st.rweight > 0 and was != st.skip:
            runs[d.set_id].rw_dirty = True
        changed.append(d)
    return changed


def _reinit(run: SetRun, indexes: Iterable[int], bits: int) -> list[Destination]:
    """``ds_reinit_state``: clear I, T, D, P and set ``bits``.

    An operator's ``a`` also ends a drain (the destination takes calls
    again); ``i``, ``t`` and ``p`` leave a drain in force; ``d`` turns
    it into disabled.
    """
    changed: list[Destination] = []
    for i in indexes:
        st = run.states[i]
        old_flags, old_admin = st.flags(), st.admin
        if old_admin is AdminState.DRAINING and not bits & (DS_INACTIVE | DS_TRYING):
            st.set_admin(AdminState.ENABLED)
        st.set_flags(bits)
        if st.admin is not old_admin:
            changed.append(run.entries[i])
        if st.rweight > 0 and skip_dst(old_flags) != skip_dst(st.flags()):
            run.rw_dirty = True
    return changed


def admin_states(runs: Mapping[int, SetRun]) -> dict[StateKey, AdminState]:
    """Every destination whose admin state is not ``enabled``."""
    out: dict[StateKey, AdminState] = {}
    for run in runs.values():
        for d, st in zip(run.entries, run.states, strict=True):
            if st.admin is not AdminState.ENABLED:
                out.setdefault(d.key, st.admin)
    return out
