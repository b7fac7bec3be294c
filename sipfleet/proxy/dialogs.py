"""The dialog table: every call the proxy set up, from INVITE to BYE.

It is the single owner of call-load: a destination's load is the number of
open dialogs on it, counted up when a dialog starts or moves to it and down
when it ends, always in the same place, so the count cannot drift (Kamailio
keeps a separate call-load table next to the dialog module, and they part
ways). What ends a dialog: a BYE, a 3xx-6xx final to the INVITE (CANCEL and
timeouts included), or its lifetime running out without a BYE.

Dialogs are keyed by Call-ID; a BYE from either side finds its dialog by
Call-ID and whichever tag it carries.

A 2xx makes a dialog *answered* (Kamailio's confirmed-not-acknowledged); its
ACK makes it *confirmed*. An answered dialog counts as load (Kamailio counts
early dialogs too) but is not persisted; if its ACK does not come within
``ack_timeout`` (64*T1, RFC 3261 13.3.1.4) it ends, and the proxy sends a BYE
to both sides, so a flood of un-ACKed INVITEs leaves no phantom calls.

``h_entry`` and ``h_id`` (``dlg.list``, ``dlg.end_dlg``) are stable across a
restart: ``h_entry`` is a CRC of the Call-ID, ``h_id`` is persisted and never
reused while a dialog lives (new ids start above every restored one).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from sipfleet.sip.address import split_commas
from sipfleet.transaction.timers import Timer, Timers

if TYPE_CHECKING:
    from sipfleet.proxy.context import Context
    from sipfleet.proxy.net import Peer
    from sipfleet.proxy.router import Target
    from sipfleet.sip.message import Message

__all__ = ["Dialog", "DialogTable"]

EARLY: Final = 1  # Kamailio's DLG_STATE_EARLY ... CONFIRMED (dlg.list "state")
ANSWERED: Final = 3  # a 2xx went up, its ACK has not come (DLG_STATE_CONFIRMED_NA)
CONFIRMED: Final = 4
DELETED: Final = 5
_HASH_SIZE: Final = 4096  # Kamailio's dialog hash size: h_entry is a slot in it


class Dialog:
    """One call. ``load_key`` is what it counts against (None: not counted)."""

    __slots__ = (
        "call_id",
        "callee_contact",
        "callee_cseq",
        "callee_peer",
        "caller_contact",
        "caller_cseq",
        "caller_peer",
        "ctx",
        "dest",
        "from_line",
        "from_tag",
        "h_entry",
        "h_id",
        "lifetime",
        "load_key",
        "route_set",
        "start",
        "state",
        "timer",
        "to_line",
        "to_tag",
    )

    def __init__(self, call_id: bytes, from_tag: bytes, h_id: int, start: float) -> None:
        self.call_id = call_id
        self.from_tag = from_tag
        self.to_tag: bytes | None = None
        self.state = EARLY
        self.h_entry = zlib.crc32(call_id) % _HASH_SIZE
        self.h_id = h_id
        self.start = start
        self.lifetime = 0.0
        self.load_key: str | None = None
        self.dest: object = None
        self.ctx: Context | None = None
        self.timer: Timer | None = None
        self.from_line = b""
        self.to_line = b""
        self.caller_contact = b""
        self.callee_contact = b""
        self.caller_cseq = 0
        self.callee_cseq = 0
        self.route_set: list[bytes] = []  # the Record-Route set of the 2xx, top first
        self.caller_peer: Peer | None = None
        self.callee_peer: Peer | None = None

    def matches(self, tag_a: bytes | None, tag_b: bytes | None) -> bool:
        """A request of this dialog carries our two tags, in either order."""
        tags = (self.from_tag, self.to_tag)
        return tag_a in tags and (tag_b in tags or self.to_tag is None)


class DialogTable:
    """Dialogs by Call-ID, and the call-load per destination they add up to.

    ``on_end(dialog, reason)`` hears about every dialog that ends (for
    events and persistence); ``on_idle(dest)`` about every destination whose
    last call ended or moved away (a drain waits for that).
    """

    def __init__(
        self,
        timers: Timers,
        lifetime: float = 7200.0,
        max_dialogs: int = 1_000_000,
        on_end: Callable[[Dialog, str], None] | None = None,
        ack_timeout: float = 0.0,
    ) -> None:
        self.timers = timers
        self.lifetime = lifetime
        # 0: a 2xx confirms at once (the ACK does not pass through us when we
        # do not record-route).
        self.ack_timeout = ack_timeout
        #: called when an answered dialog's ACK never came, before it ends
        self.on_ack_timeout: Callable[[Dialog, float], None] | None = None
        self.max_dialogs = max_dialogs  # bounds memory if BYEs never come
        self.on_end = on_end
        self.on_idle: Callable[[object], None] | None = None
        self.on_confirm: Callable[[Dialog], None] | None = None
        self.by_call: dict[bytes, Dialog | list[Dialog]] = {}
        self.loads: dict[str, int] = {}
        self.count = 0
        self.early = 0
        self.answered = 0
        self.processed = 0
        self.expired = 0
        self.failed = 0
        self.no_ack = 0
        self._next_id = 1

    # -- LoadView for the dispatcher ------------------------------------------
    def load(self, key: str) -> int:
        return self.loads.get(key, 0)

    # -- the proxy's hooks -------------------------------------------------------
    def on_branch(self, ctx: Context, target: Target, now: float) -> None:
        """An initial INVITE went to ``target`` (first try or failover)."""
        dlg = ctx.dialog
        if dlg is None:
            if self.count >= self.max_dialogs:
                return
            msg = ctx.msg
            dlg = Dialog(msg.call_id, msg.from_tag or b"", self._next_id, now)
            self._next_id += 1
            dlg.ctx = ctx
            dlg.from_line = msg.lines[msg.first[b"from"]]
            dlg.to_line = msg.lines[msg.first[b"to"]]
            dlg.caller_contact = msg.get(b"contact") or b""
            dlg.caller_cseq = msg.cseq[0]
            dlg.caller_peer = ctx.peer
            ctx.dialog = dlg
            self._insert(dlg)
            self.early += 1
            dlg.lifetime = self.lifetime
            dlg.timer = self.timers.add(now, self.lifetime, self._expire, dlg)
        self._count_on(dlg, target)

    def on_final(
        self,
        ctx: Context,
        target: Target | None,
        status: int,
        msg: Message | None,
        now: float,
        peer: Peer | None = None,
    ) -> None:
        """The INVITE's first final answer upstream (2xx, or the best failure)."""
        dlg = ctx.dialog
        if dlg is None or dlg.state != EARLY:
            return
        if 200 <= status < 300 and msg is not None:
            if target is not None and target.dest is not dlg.dest:
                self._count_on(dlg, target)  # a late 2xx from a branch we gave up on
            self.early -= 1
            dlg.to_tag = msg.to_tag
            dlg.to_line = msg.lines[msg.first[b"to"]] if b"to" in msg.first else dlg.to_line
            dlg.callee_contact = msg.get(b"contact") or b""
            rr: list[bytes] = []
            for value in msg.get_lines(b"record-route"):
                rr.extend(split_commas(value))
            dlg.route_set = rr
            dlg.callee_peer = peer
            dlg.ctx = None
            if self.ack_timeout > 0:
                dlg.state = ANSWERED
                self.answered += 1
                if dlg.timer is not None:
                    dlg.timer.cancel()
                dlg.timer = self.timers.add(now, self.ack_timeout, self._ack_expire, dlg)
            else:
                self._confirm(dlg)
            return
        self.failed += 1
        self.end(dlg, "failed", now)

    def on_ack(self, dlg: Dialog, now: float) -> None:
        """The ACK of the 2xx passed through: the dialog is confirmed."""
        if dlg.state != ANSWERED:
            return
        self.answered -= 1
        if dlg.timer is not None:
            dlg.timer.cancel()
        remaining = max(dlg.lifetime - (now - dlg.start), 0.0)
        dlg.timer = self.timers.add(now, remaining, self._expire, dlg)
        self._confirm(dlg)

    def _confirm(self, dlg: Dialog) -> None:
        dlg.state = CONFIRMED
        if self.on_confirm is not None:
            self.on_confirm(dlg)

    def on_in_dialog(self, dlg: Dialog, msg: Message, now: float) -> None:
        """An in-dialog request of ``dlg`` passed through: BYE ends it."""
        if msg.method == "BYE":
            self.end(dlg, "bye", now)
        elif dlg.state == CONFIRMED:
            cseq = msg.cseq[0]
            if msg.from_tag == dlg.from_tag:
                dlg.caller_cseq = max(dlg.caller_cseq, cseq)
            else:
                dlg.callee_cseq = max(dlg.callee_cseq, cseq)

    # -- lookups and ending ---------------------------------------------------------
    def find(self, call_id: bytes, tag_a: bytes | None, tag_b: bytes | None) -> Dialog | None:
        entry = self.by_call.get(call_id)
        if entry is None:
            return None
        if isinstance(entry, Dialog):
            return entry if entry.matches(tag_a, tag_b) else None
        for dlg in entry:
            if dlg.matches(tag_a, tag_b):
                return dlg
        return None

    def get(self, h_entry: int, h_id: int) -> Dialog | None:
        for dlg in self:
            if dlg.h_id == h_id and dlg.h_entry == h_entry:
                return dlg
        return None

    def end(self, dlg: Dialog, reason: str, now: float) -> None:
        """Remove a dialog and its load (idempotent)."""
        if dlg.state == DELETED:
            return
        if dlg.state == EARLY:
            self.early -= 1
        elif dlg.state == ANSWERED:
            self.answered -= 1
        dlg.state = DELETED
        self._uncount(dlg)
        if dlg.timer is not None:
            dlg.timer.cancel()
            dlg.timer = None
        if dlg.ctx is not None:
            dlg.ctx.dialog = None
            dlg.ctx = None
        entry = self.by_call.get(dlg.call_id)
        if entry is dlg:
            del self.by_call[dlg.call_id]
        elif isinstance(entry, list):
            entry.remove(dlg)
            if len(entry) == 1:
                self.by_call[dlg.call_id] = entry[0]
        self.count -= 1
        self.processed += 1
        if self.on_end is not None:
            self.on_end(dlg, reason)

    def __iter__(self) -> Iterator[Dialog]:
        for entry in list(self.by_call.values()):
            if isinstance(entry, Dialog):
                yield entry
            else:
                yield from entry

    def __len__(self) -> int:
        return self.count

    def stats_active(self) -> dict[str, int]:
        """Kamailio's ``dlg.stats_active`` shape."""
        return {
            "starting": 0,
            "connecting": self.early,
            "answering": self.answered,
            "ongoing": self.count - self.early - self.answered,
            "all": self.count,
        }

    def restore(self, dlg: Dialog, now: float, remaining: float) -> None:
        """Put back a dialog persisted before a restart."""
        dlg.ctx = None
        dlg.timer = self.timers.add_at(now + max(remaining, 0.0), self._expire, dlg)
        self._insert(dlg)
        if dlg.state == EARLY:
            self.early += 1
        self._next_id = max(self._next_id, dlg.h_id + 1)
        if dlg.load_key is not None:
            self.loads[dlg.load_key] = self.loads.get(dlg.load_key, 0) + 1

    def as_record(self, dlg: Dialog, now_wall: float, now: float) -> dict[str, Any]:
        """One ``dlg.list`` entry in Kamailio's shape."""
        start_ts = int(now_wall - (now - dlg.start))
        return {
            "h_entry": dlg.h_entry,
            "h_id": dlg.h_id,
            "call-id": dlg.call_id.decode("utf-8", "replace"),
            "from_uri": _uri_of(dlg.from_line),
            "to_uri": _uri_of(dlg.to_line),
            "state": dlg.state,
            "start_ts": start_ts,
            "init_ts": start_ts,
            "end_ts": 0,
            "timeout": int(start_ts + dlg.lifetime),
            "lifetime": int(dlg.lifetime),
            "dflags": 0,
            "sflags": 0,
            "iflags": 0,
            "caller": {
                "tag": dlg.from_tag.decode("utf-8", "replace"),
                "contact": _uri_of(b"c: " + dlg.caller_contact),
                "cseq": str(dlg.caller_cseq),
                "route_set": ",".join(
                    v.decode("utf-8", "replace") for v in reversed(dlg.route_set)
                ),
                "socket": "",
            },
            "callee": {
                "tag": (dlg.to_tag or b"").decode("utf-8", "replace"),
                "contact": _uri_of(b"c: " + dlg.callee_contact),
                "cseq": str(dlg.callee_cseq),
                "route_set": ",".join(v.decode("utf-8", "replace") for v in dlg.route_set),
                "socket": "",
            },
            "profiles": [],
            "variables": [],
        }

    # -- internals -----------------------------------------------------------
    def _insert(self, dlg: Dialog) -> None:
        entry = self.by_call.get(dlg.call_id)
        if entry is None:
            self.by_call[dlg.call_id] = dlg
        elif isinstance(entry, list):
            entry.append(dlg)
        else:
            self.by_call[dlg.call_id] = [entry, dlg]
        self.count += 1

    def _count_on(self, dlg: Dialog, target: Target) -> None:
        """Move the dialog's load to ``target`` (Kamailio ds_next_dst moves it too)."""
        self._uncount(dlg)
        dest = target.dest
        key = getattr(dest, "load_key", None)
        dlg.dest = dest
        dlg.callee_peer = None
        dlg.load_key = key
        if key is not None:
            self.loads[key] = self.loads.get(key, 0) + 1

    def _uncount(self, dlg: Dialog) -> None:
        key = dlg.load_key
        if key is not None:
            n = self.loads[key] - 1
            dlg.load_key = None
            if n:
                self.loads[key] = n
            else:
                del self.loads[key]
                if self.on_idle is not None:
                    self.on_idle(dlg.dest)

    def _expire(self, now: float, dlg: Dialog) -> None:
        dlg.timer = None
        self.expired += 1
        self.end(dlg, "expired", now)

    def _ack_expire(self, now: float, dlg: Dialog) -> None:
        """64*T1 after the 2xx and no ACK: a phantom call (RFC 3261 13.3.1.4)."""
        dlg.timer = None
        if dlg.state != ANSWERED:
            return
        self.no_ack += 1
        if self.on_ack_timeout is not None:
            self.on_ack_timeout(dlg, now)
        self.end(dlg, "no-ack", now)


def _uri_of(line: bytes) -> str:
    """The URI in a From/To/Contact line, as dlg.list prints it."""
    value = line.partition(b":")[2].strip()
    lt = value.find(b"<")
    if lt >= 0:
        gt = value.find(b">", lt)
        value = value[lt + 1 : gt if gt > 0 else None]
    else:
        value = value.split(b";", 1)[0]
    return value.strip().decode("utf-8", "replace")
