"""The response context tables (sipfleet.proxy.context) against RFC 3261 16.7,
16.10 and 9.1, without a proxy: which events send a CANCEL, and when a branch
leaves its context's pending list. (The machines read neither the message
nor the transactions; they are real ones for the compiled classes.)"""

from __future__ import annotations

import pytest

from sipfleet.proxy.context import (
    BRANCH_INVITE,
    BRANCH_NON_INVITE,
    Branch,
    BranchState,
    Context,
    ContextState,
)
from sipfleet.proxy.net import Peer
from sipfleet.proxy.router import Target
from sipfleet.sip.message import parse
from sipfleet.testing import UA, RecordingSink
from sipfleet.transaction.server import ServerTransaction, TimerConfig
from sipfleet.transaction.timers import Timers

UAC = Peer(0, "127.0.0.1", 5080)
UAS = Peer(0, "127.0.0.1", 5070)


def context() -> Context:
    msg = parse(UA("127.0.0.1", 5080).invite("sip:s@127.0.0.1", call_id="ctx", branch="z9hG4bK-c"))
    server = ServerTransaction(
        "key", True, False, RecordingSink(), UAC, Timers(), TimerConfig(), lambda t, out: None
    )
    return Context(msg, UAC, server, msg.via.raw)


def branch(ctx: Context, invite: bool = True) -> Branch:
    br = Branch(ctx, Target.from_uri("sip:127.0.0.1:5070"), UAS, b"Via: x", invite)
    ctx.pending.append(br)
    return br


@pytest.mark.parametrize(
    ("events", "cancels"),
    [
        (["1xx", "cancel"], 1),  # 16.10: a ringing branch is cancelled at once
        (["cancel", "1xx", "1xx"], 1),  # 9.1: not before its first provisional, then once
        (["give_up", "1xx", "1xx"], 1),  # given up (fr timer), cancelled when it rings
        (["1xx", "cancel", "give_up"], 1),  # already cancelled: no second CANCEL
        (["give_up", "final"], 0),  # never rang: nothing to cancel
        (["final", "1xx"], 0),
    ],
)
def test_invite_branch_cancels_once_and_only_after_a_provisional(
    events: list[str], cancels: int
) -> None:
    br = branch(context())
    sent = 0
    for event in events:
        sent += "cancel" in (br.fire(event) or ())
    assert sent == cancels


def test_a_concluded_branch_leaves_pending_and_ignores_late_finals() -> None:
    ctx = context()
    a, b = branch(ctx), branch(ctx)
    assert a.fire("1xx") == ("timer_c", "relay")
    assert a.fire("final") == () and a.concluded and ctx.pending == [b]
    assert a.fire("final") is None  # a second outcome changes nothing
    assert b.fire("give_up") == ("stop",) and b.state is BranchState.DONE_CANCEL_WANTED
    assert ctx.pending == []
    assert b.fire("1xx") == ("cancel",)  # no relay: the branch is concluded


def test_non_invite_branch_never_cancels() -> None:
    br = branch(context(), invite=False)
    assert br.fire("cancel") is None
    assert br.fire("give_up") == ("stop",) and br.concluded
    assert all("cancel" not in actions for _, actions in BRANCH_NON_INVITE.values())
    assert any("cancel" in actions for _, actions in BRANCH_INVITE.values())


def test_context_states() -> None:
    """16.10: a CANCEL counts once and not after the answer; 16.7 item 6: all
    branches done -> failover (or the best answer), or 487 once cancelled."""
    ctx = context()
    assert ctx.fire("all_done") == ("failover",)
    assert ctx.fire("cancel") == ("cancel_branches",) and ctx.cancelled
    assert ctx.fire("cancel") is None
    assert ctx.fire("all_done") == ("best",)
    assert ctx.fire("final") == () and ctx.answered
    assert ctx.fire("all_done") is None and ctx.fire("cancel") is None
    assert ctx.state is ContextState.ANSWERED
