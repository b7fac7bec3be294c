"""The response context of a stateful proxy (RFC 3261 16.2, 16.7), as tables.

A ``Context`` is one server transaction and the branches forwarded for it;
a ``Branch`` is one forwarded copy and what became of it. Each is a small
state machine, ``(state, event) -> (next state, actions)``, to read
against RFC 3261 16.7 (responses), 16.10 (CANCEL) and 9.1 (no CANCEL
before a provisional). ``fire`` returns the actions for the proxy core to
carry out, or None when the event changes nothing in that state.

Context events: "cancel" (a CANCEL came, 16.10), "final" (a final response
went upstream), "all_done" (no branch is pending, 16.7 item 6).
Context actions: "cancel_branches", "failover" (next candidate if the
failure allows it, else the best answer), "best" (the best answer).

Branch events: "1xx" (a provisional), "cancel" (the upstream CANCEL),
"give_up" (we stop waiting: Kamailio's fr timer, or another branch's 2xx,
16.7 item 10), "final" (the branch has its outcome: a final response, a
timeout or a transport error). Branch actions: "cancel" (send CANCEL),
"timer_c" (16.6 item 11), "relay" (pass the provisional up), "stop" (stop
retransmitting; Timer B/F still ends the transaction).
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sipfleet.proxy.dialogs import Dialog
    from sipfleet.proxy.net import Peer
    from sipfleet.proxy.router import Decision, Target
    from sipfleet.sip.message import Message
    from sipfleet.transaction.client import ClientTransaction
    from sipfleet.transaction.server import ServerTransaction
    from sipfleet.transaction.timers import Timer

__all__ = [
    "BRANCH_INVITE",
    "BRANCH_NON_INVITE",
    "CONTEXT_TABLE",
    "Branch",
    "BranchState",
    "Context",
    "ContextState",
]


class ContextState(IntEnum):
    CALLING = 0  # no final answer upstream yet
    CANCELLED = 1  # a CANCEL came; the answer will be 487 or a 2xx
    ANSWERED = 2  # a final went upstream (more 2xx may follow, 16.7 item 5)


class BranchState(IntEnum):
    # Pending: the branch's outcome is still open.
    TRYING = 0  # sent, nothing heard
    PROCEEDING = 1  # a provisional came
    CANCEL_WANTED = 2  # cancelled upstream before a provisional: CANCEL on the first (9.1)
    CANCELLING = 3  # CANCEL sent; its 487 (or a 2xx) is awaited
    # Concluded: the outcome is known (or given up); late 2xx still go upstream.
    DONE = 4
    DONE_CANCEL_WANTED = 5  # given up before a provisional: CANCEL on the first (9.1)


C = ContextState
B = BranchState

CONTEXT_TABLE: Final[dict[tuple[ContextState, str], tuple[ContextState, tuple[str, ...]]]] = {
    (C.CALLING, "cancel"): (C.CANCELLED, ("cancel_branches",)),  # 16.10
    (C.CALLING, "final"): (C.ANSWERED, ()),
    (C.CANCELLED, "final"): (C.ANSWERED, ()),
    (C.CALLING, "all_done"): (C.CALLING, ("failover",)),  # 16.7 item 6, or serial forking
    (C.CANCELLED, "all_done"): (C.CANCELLED, ("best",)),
}

BRANCH_INVITE: Final[dict[tuple[BranchState, str], tuple[BranchState, tuple[str, ...]]]] = {
    (B.TRYING, "1xx"): (B.PROCEEDING, ("timer_c", "relay")),
    (B.TRYING, "cancel"): (B.CANCEL_WANTED, ()),
    (B.TRYING, "give_up"): (B.DONE_CANCEL_WANTED, ("stop",)),
    (B.TRYING, "final"): (B.DONE, ()),
    (B.PROCEEDING, "1xx"): (B.PROCEEDING, ("relay",)),
    (B.PROCEEDING, "cancel"): (B.CANCELLING, ("cancel",)),
    (B.PROCEEDING, "give_up"): (B.DONE, ("cancel",)),
    (B.PROCEEDING, "final"): (B.DONE, ()),
    (B.CANCEL_WANTED, "1xx"): (B.CANCELLING, ("cancel", "relay")),
    (B.CANCEL_WANTED, "give_up"): (B.DONE_CANCEL_WANTED, ("stop",)),
    (B.CANCEL_WANTED, "final"): (B.DONE, ()),
    (B.CANCELLING, "1xx"): (B.CANCELLING, ("relay",)),
    (B.CANCELLING, "give_up"): (B.DONE, ()),
    (B.CANCELLING, "final"): (B.DONE, ()),
    (B.DONE_CANCEL_WANTED, "1xx"): (B.DONE, ("cancel",)),
}

# No CANCEL for a non-INVITE (9.1): giving up only stops the retransmissions.
BRANCH_NON_INVITE: Final[dict[tuple[BranchState, str], tuple[BranchState, tuple[str, ...]]]] = {
    (B.TRYING, "1xx"): (B.PROCEEDING, ("relay",)),
    (B.TRYING, "give_up"): (B.DONE, ("stop",)),
    (B.TRYING, "final"): (B.DONE, ()),
    (B.PROCEEDING, "1xx"): (B.PROCEEDING, ("relay",)),
    (B.PROCEEDING, "give_up"): (B.DONE, ("stop",)),
    (B.PROCEEDING, "final"): (B.DONE, ()),
}


# As looked up per event: the next state, the actions, and whether the branch
# concludes (leaves its context's pending list) with this transition.
_Compiled = dict[tuple[BranchState, str], tuple[BranchState, tuple[str, ...], bool]]


def _compile(
    table: dict[tuple[BranchState, str], tuple[BranchState, tuple[str, ...]]],
) -> _Compiled:
    return {key: (nxt, actions, key[0] < B.DONE <= nxt) for key, (nxt, actions) in table.items()}


_INVITE: Final = _compile(BRANCH_INVITE)
_NON_INVITE: Final = _compile(BRANCH_NON_INVITE)
_CALLING: Final = ContextState.CALLING
_CANCELLED: Final = ContextState.CANCELLED
_ANSWERED: Final = ContextState.ANSWERED
_TRYING: Final = BranchState.TRYING
_DONE: Final = BranchState.DONE


class Context:
    """A response context (16.2): one server transaction and its branches."""

    __slots__ = (
        "attempts",
        "cancel_reason",
        "decision",
        "dialog",
        "finals",
        "head",
        "initial",
        "msg",
        "next_index",
        "peer",
        "pending",
        "rr",
        "rr_token",
        "server",
        "sips",
        "state",
        "tail",
        "top_via",
    )

    def __init__(self, msg: Message, peer: Peer, server: ServerTransaction, top_via: bytes) -> None:
        self.msg = msg
        self.peer = peer
        self.server = server
        self.top_via = top_via
        self.state = _CALLING
        self.decision: Decision | None = None
        self.next_index = 0
        self.attempts = 0
        # Branches still waiting for an answer. A concluded branch leaves this
        # list, so context and branches never form a cycle that would outlive
        # them (they are freed by refcount, not by the collector).
        self.pending: list[Branch] = []
        self.finals: list[tuple[int, bytes | None]] = []  # (status, response bytes or None=local)
        self.cancel_reason: list[bytes] = []
        self.dialog: Dialog | None = None
        self.initial = False  # an out-of-dialog request the router placed
        self.head = b""  # request line
        self.tail: list[bytes] = []  # edited header lines after our Via/RR
        self.rr = False
        self.rr_token = b""  # the signature in our Record-Route
        self.sips = False  # RFC 5630: TLS on every hop, so only TLS branches

    def fire(self, event: str) -> tuple[str, ...] | None:
        """Apply ``event``; the actions to take, None when it changes nothing."""
        entry = CONTEXT_TABLE.get((self.state, event))
        if entry is None:
            return None
        self.state = entry[0]
        return entry[1]

    @property
    def answered(self) -> bool:
        return self.state is _ANSWERED

    @property
    def cancelled(self) -> bool:
        """A CANCEL came before any final answer went up."""
        return self.state is _CANCELLED


class Branch:
    """One forwarded copy of the request and what became of it."""

    __slots__ = (
        "_table",
        "ctx",
        "peer",
        "state",
        "target",
        "timer",
        "txn",
        "via_line",
    )

    def __init__(
        self, ctx: Context, target: Target, peer: Peer, via_line: bytes, invite: bool
    ) -> None:
        self.ctx = ctx
        self.target = target
        self.peer = peer
        self.via_line = via_line
        self.txn: ClientTransaction | None = None
        self.state = _TRYING
        self._table = _INVITE if invite else _NON_INVITE
        self.timer: Timer | None = None

    @property
    def concluded(self) -> bool:
        return self.state >= _DONE

    def fire(self, event: str) -> tuple[str, ...] | None:
        """Apply ``event``; the actions to take, None when it changes nothing.
        A branch that concludes leaves its context's pending list."""
        entry = self._table.get((self.state, event))
        if entry is None:
            return None
        if entry[2]:
            self.ctx.pending.remove(self)
        self.state = entry[0]
        return entry[1]

    def make_ack(self, resp: Message) -> bytes:
        """The hop-by-hop ACK for a non-2xx final on this branch (17.1.1.3)."""
        ctx = self.ctx
        msg = ctx.msg
        lines = [ctx.head.replace(msg.method.encode(), b"ACK", 1), self.via_line]
        for name, line in zip(msg.names, msg.lines, strict=True):
            if name in (b"from", b"call-id"):
                lines.append(line)
        lines.append(resp.lines[resp.pos(b"to")] if resp.has(b"to") else b"To: <>")
        lines.extend(line for line in ctx.tail if line[:6].lower() == b"route:")
        lines.append(b"CSeq: %d ACK" % msg.cseq[0])
        lines.append(b"Max-Forwards: 70")
        lines.append(b"Content-Length: 0")
        lines.append(b"")
        lines.append(b"")
        return b"\r\n".join(lines)

    def make_cancel(self, max_forwards: int) -> bytes:
        """9.1: CANCEL with the branch's R-URI, Via, Route, Call-ID, CSeq number."""
        ctx = self.ctx
        msg = ctx.msg
        lines = [ctx.head.replace(msg.method.encode(), b"CANCEL", 1), self.via_line]
        for name, line in zip(msg.names, msg.lines, strict=True):
            if name in (b"from", b"to", b"call-id"):
                lines.append(line)
        lines.extend(line for line in ctx.tail if line[:6].lower() == b"route:")
        lines.append(b"CSeq: %d CANCEL" % msg.cseq[0])
        lines.append(b"Max-Forwards: %d" % max_forwards)
        for reason in ctx.cancel_reason:
            lines.append(b"Reason: " + reason)
        lines.append(b"Content-Length: 0")
        lines.append(b"")
        lines.append(b"")
        return b"\r\n".join(lines)
