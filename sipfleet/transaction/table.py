"""The transaction tables of a stateful proxy (RFC 3261 17).

Server transactions by their 17.2.3 key, client transactions by their
17.1.3 key, the client transactions reached over each stream peer (so a
transport failure reaches them), one factory for each kind, and a bound on
each table: a flood of new requests must not grow memory without limit
(the dialog table has its own). A factory that finds its table full
refuses; the transaction user counts that and answers 503 (or drops).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from sipfleet.transaction.client import ClientTransaction
from sipfleet.transaction.server import ServerTransaction, TimerConfig

if TYPE_CHECKING:
    from sipfleet.proxy.net import Peer, Sink
    from sipfleet.sip.message import Message
    from sipfleet.transaction.timers import Timers

__all__ = ["MAX_TRANSACTIONS", "TransactionTable", "server_key"]

# Per table. The edge gate (sipfleet.security) refuses new server
# transactions at 200,000 by default; this bound sits no lower, so it only
# acts where the gate is off or set higher.
MAX_TRANSACTIONS: Final = 200_000

OnResponse = Callable[[ClientTransaction, "Message", float], None]
OnFailure = Callable[[ClientTransaction, int, float], None]


def server_key(msg: Message, method: str) -> object:
    """RFC 3261 17.2.3: the server transaction ``msg`` belongs to, for ``method``
    (ACK matches its INVITE)."""
    via = msg.via
    if method == "ACK":
        method = "INVITE"
    if via.branch.startswith("z9hG4bK"):
        return (via.branch, via.host, via.port, method)
    # RFC 2543 peers: 17.2.3's fallback matching.
    return (msg.call_id, msg.cseq[0], msg.from_tag, via.raw, method)


class TransactionTable:
    """Server and client transactions of one proxy, bounded to ``limit`` each."""

    __slots__ = (
        "_cb_client_done",
        "_cb_server_done",
        "by_peer",
        "cfg",
        "client",
        "limit",
        "on_client_done",
        "server",
        "sink",
        "timers",
    )

    def __init__(
        self,
        sink: Sink,
        timers: Timers,
        cfg: TimerConfig,
        limit: int = MAX_TRANSACTIONS,
        on_client_done: Callable[[ClientTransaction], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("the transaction bound must be at least 1")
        self.sink = sink
        self.timers = timers
        self.cfg = cfg
        self.limit = limit
        self.server: dict[object, ServerTransaction] = {}
        self.client: dict[object, ClientTransaction] = {}
        self.by_peer: dict[Peer, set[ClientTransaction]] = {}
        # The transaction user's own clean-up, after the table let go.
        self.on_client_done = on_client_done
        # Bound once: a bound method made per transaction is one more object
        # (GC-tracked, ~64 bytes) for each of the tens of thousands alive at
        # 1,000 calls/s, and the collector walks them all.
        self._cb_server_done = self._server_done
        self._cb_client_done = self._client_done

    # -- server side (17.2) ----------------------------------------------------
    def server_full(self) -> bool:
        """No room for a new server transaction."""
        return len(self.server) >= self.limit

    def new_server(
        self, key: object, invite: bool, reliable: bool, peer: Peer
    ) -> ServerTransaction:
        """A server transaction answering to ``peer``, in the table under ``key``.
        The caller checks ``server_full`` first (it answers the refusal)."""
        txn = ServerTransaction(
            key, invite, reliable, self.sink, peer, self.timers, self.cfg, self._cb_server_done
        )
        self.server[key] = txn
        return txn

    def _server_done(self, txn: ServerTransaction, timed_out: bool) -> None:
        self.server.pop(txn.key, None)
        txn.context = None

    # -- client side (17.1) ----------------------------------------------------
    def client_for(self, msg: Message) -> ClientTransaction | None:
        """RFC 3261 17.1.3: the client transaction a response belongs to."""
        return self.client.get((msg.top_branch(), msg.cseq[1]))

    def new_client(
        self,
        branch: str,
        method: str,
        reliable: bool,
        request: bytes,
        peer: Peer,
        on_response: OnResponse,
        on_failure: OnFailure,
        context: object = None,
        make_ack: Callable[[Message], bytes] | None = None,
    ) -> ClientTransaction | None:
        """A client transaction sending ``request`` to ``peer`` (not started),
        or None when the table is full. A CANCEL is never refused: there is
        at most one per INVITE, which the bound already counted."""
        if method != "CANCEL" and len(self.client) >= self.limit:
            return None
        # One boxed tuple shared by the transaction and the table (a tuple-typed
        # local would be boxed again by mypyc for each use).
        key: object = (branch, method)
        txn = ClientTransaction(
            key,
            branch,
            method == "INVITE",
            reliable,
            request,
            self.sink,
            peer,
            self.timers,
            self.cfg,
            on_response,
            on_failure,
            self._cb_client_done,
            make_ack,
        )
        txn.context = context
        self.client[key] = txn  # the transaction's own key: one tuple, not two
        # A CANCEL lives and dies with its INVITE, which a transport failure reaches.
        if reliable and method != "CANCEL":
            peers = self.by_peer.get(peer)
            if peers is None:
                self.by_peer[peer] = {txn}
            else:
                peers.add(txn)
        return txn

    def transport_failed(self, peer: Peer) -> set[ClientTransaction] | None:
        """The client transactions waiting on ``peer``, forgotten here."""
        return self.by_peer.pop(peer, None)

    def _client_done(self, txn: ClientTransaction) -> None:
        self.client.pop(txn.key, None)
        peers = self.by_peer.get(txn.peer)
        if peers is not None:
            peers.discard(txn)
            if not peers:
                del self.by_peer[txn.peer]
        if self.on_client_done is not None:
            self.on_client_done(txn)
