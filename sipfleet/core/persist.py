"""Dialogs that survive a restart: a bounded write buffer, and the rows.

Confirmed and ended dialogs go in; batches of rows to write and keys to
delete come out, one batch in flight at a time (the adapter runs it against
the store). A dialog confirmed and ended between two batches never reaches
the disk (most short calls); the end of a dialog already on the disk is
written within ``DELETE_DELAY`` (a crash must not bring it back as a
phantom call). The buffer is bounded: past ``max_pending`` new dialogs are
not written and ``dropped`` counts them (the ``dialog_writes_dropped``
statistic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sipfleet.dispatch.destination import Destination
from sipfleet.dispatch.dispatcher import Dispatcher
from sipfleet.proxy.dialogs import CONFIRMED, Dialog
from sipfleet.proxy.net import Peer
from sipfleet.store.dialogs import DialogRecord

__all__ = [
    "DELETE_DELAY",
    "PERSIST_PERIOD",
    "Batch",
    "DialogWrites",
    "dialog_record",
    "restore_dialog",
]

PERSIST_PERIOD = 0.2  # new dialogs reach the disk at most this late
DELETE_DELAY = 0.01  # ... and ended ones this late (a crash must not resurrect them)
MAX_PENDING = 200_000  # bounds memory if the disk stalls

DialogKey = tuple[bytes, bytes]  # (call-id, from-tag)


@dataclass(frozen=True, slots=True)
class Batch:
    """One write to the store: dialogs to put (as rows), keys to delete."""

    puts: list[Dialog]
    deletes: list[DialogKey]


class DialogWrites:
    """The bounded buffer between the dialog table and the store."""

    def __init__(
        self,
        *,
        enabled: bool,
        max_pending: int = MAX_PENDING,
        period: float = PERSIST_PERIOD,
        delete_delay: float = DELETE_DELAY,
        wake: Callable[[float], None] | None = None,
    ) -> None:
        self.enabled = enabled
        self.max_pending = max_pending
        self.period = period
        self.delete_delay = delete_delay
        self.pending: dict[DialogKey, Dialog | None] = {}
        self.stored: set[DialogKey] = set()  # keys written to the disk
        self.dropped = 0
        self.in_flight = False
        #: when the next batch goes out anyway (set by ``start``)
        self.flush_at: float | None = None
        #: when a deletion must go out (None: none waiting)
        self.delete_at: float | None = None
        #: told the new ``delete_at`` when one is set (the adapter's timer may be later)
        self.wake = wake

    def __len__(self) -> int:
        return len(self.pending)

    def confirmed(self, dlg: Dialog) -> None:
        if len(self.pending) < self.max_pending:
            self.pending[(dlg.call_id, dlg.from_tag)] = dlg
        else:
            self.dropped += 1

    def ended(self, dlg: Dialog, now: float) -> None:
        key = (dlg.call_id, dlg.from_tag)
        if key in self.stored:
            self.pending[key] = None
            self._delete_soon(now)
        else:
            # Confirmed and ended between two batches: it never reaches the disk.
            self.pending.pop(key, None)

    def start(self, now: float) -> None:
        """Batches go out every ``period`` from now on."""
        if self.enabled:
            self.flush_at = now + self.period

    def due(self, now: float) -> bool:
        """True when a batch should go out now (the period, or a deletion's deadline)."""
        hit = False
        if self.flush_at is not None and now >= self.flush_at:
            self.flush_at = now + self.period
            hit = True
        if self.delete_at is not None and now >= self.delete_at:
            self.delete_at = None
            hit = True
        return hit

    def next_deadline(self) -> float | None:
        if self.delete_at is None:
            return self.flush_at
        if self.flush_at is None:
            return self.delete_at
        return min(self.flush_at, self.delete_at)

    def restored(self, dlg: Dialog) -> None:
        """A dialog read back from the store at startup: on the disk already."""
        self.stored.add((dlg.call_id, dlg.from_tag))

    def take(self) -> Batch | None:
        """The next batch, or None (nothing queued, or a batch still in flight)."""
        if not self.enabled or self.in_flight or not self.pending:
            return None
        writes, self.pending = self.pending, {}
        puts: list[Dialog] = []
        deletes: list[DialogKey] = []
        for k, d in writes.items():
            if d is None:
                deletes.append(k)
                self.stored.discard(k)
            else:
                puts.append(d)
                self.stored.add(k)
        self.in_flight = True
        return Batch(puts, deletes)

    def done(self, now: float) -> None:
        """The batch in flight is written (or failed: logged by the adapter)."""
        self.in_flight = False
        if self.pending:
            self._delete_soon(now)

    def _delete_soon(self, now: float) -> None:
        if self.delete_at is None:
            self.delete_at = now + self.delete_delay
            if self.wake is not None:
                self.wake(self.delete_at)


def dialog_record(dlg: Dialog, now: float, wall: float) -> DialogRecord:
    """The store's row of a dialog (``now`` the core's clock, ``wall`` the same instant)."""
    start = wall - (now - dlg.start)
    dest = dlg.dest
    return DialogRecord(
        dlg.call_id,
        dlg.from_tag,
        dlg.to_tag,
        dlg.h_id,
        dest.set_id if isinstance(dest, Destination) else None,
        dest.uri if isinstance(dest, Destination) else None,
        dlg.load_key,
        start,
        start + dlg.lifetime,
        dlg.from_line,
        dlg.to_line,
        dlg.caller_contact,
        dlg.callee_contact,
        b"\n".join(dlg.route_set),
        dlg.caller_cseq,
        dlg.callee_cseq,
        _peer_text(dlg.caller_peer),
        _peer_text(dlg.callee_peer),
    )


def restore_dialog(
    r: DialogRecord, dispatcher: Dispatcher, now: float, wall: float
) -> tuple[Dialog, float]:
    """A stored row back as a confirmed dialog, and the seconds it has left."""
    dlg = Dialog(r.call_id, r.from_tag, r.h_id, now - (wall - r.start))
    dlg.state = CONFIRMED
    dlg.to_tag = r.to_tag
    dlg.lifetime = r.expires - r.start
    dlg.from_line, dlg.to_line = r.from_line, r.to_line
    dlg.caller_contact, dlg.callee_contact = r.caller_contact, r.callee_contact
    dlg.route_set = r.route_set.split(b"\n") if r.route_set else []
    dlg.caller_cseq, dlg.callee_cseq = r.caller_cseq, r.callee_cseq
    dlg.caller_peer, dlg.callee_peer = _peer_from(r.caller_peer), _peer_from(r.callee_peer)
    dest = dispatcher.find(r.set_id, r.uri) if r.set_id is not None and r.uri else None
    dlg.dest = dest
    dlg.load_key = dest.load_key if dest is not None else r.load_key
    return dlg, r.expires - wall


def _peer_text(peer: Peer | None) -> str | None:
    return None if peer is None else f"{peer.listener}|{peer.host}|{peer.port}"


def _peer_from(text: str | None) -> Peer | None:
    if not text:
        return None
    listener, host, port = text.split("|")
    return Peer(int(listener), host, int(port))
