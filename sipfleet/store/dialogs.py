"""Open dialogs, persisted so a restarted sipfleet keeps its call-load and
``dlg.list`` (in-dialog requests route by their Route headers anyway).

A table ``sipfleet_dialogs`` in an SQLite file: the store's own database
for the SQLite store, a ``<list file>.dialogs.db`` beside a list file.

Writes come in small batches from the adapter's write-behind queue and run
on the event loop itself: in WAL mode with ``synchronous=NORMAL`` a commit
is an append to the log (tens of microseconds), cheaper than handing it to
a thread and back. The one slow step, writing the log back into the
database with its fsync, is taken off the loop: automatic checkpoints are
off, and ``checkpoint()`` runs from a worker thread on its own connection.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from sipfleet.store.base import StoreError

__all__ = ["DialogRecord", "DialogStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS sipfleet_dialogs (
    call_id BLOB NOT NULL,
    from_tag BLOB NOT NULL,
    to_tag BLOB,
    h_id INTEGER NOT NULL,
    set_id INTEGER,
    uri TEXT,
    load_key TEXT,
    start REAL NOT NULL,
    expires REAL NOT NULL,
    from_line BLOB NOT NULL,
    to_line BLOB NOT NULL,
    caller_contact BLOB NOT NULL,
    callee_contact BLOB NOT NULL,
    route_set BLOB NOT NULL,
    caller_cseq INTEGER NOT NULL,
    callee_cseq INTEGER NOT NULL,
    caller_peer TEXT,
    callee_peer TEXT,
    PRIMARY KEY (call_id, from_tag)
);
"""


class DialogRecord(NamedTuple):
    """One confirmed dialog; times are wall-clock seconds."""

    call_id: bytes
    from_tag: bytes
    to_tag: bytes | None
    h_id: int
    set_id: int | None
    uri: str | None
    load_key: str | None
    start: float
    expires: float
    from_line: bytes
    to_line: bytes
    caller_contact: bytes
    callee_contact: bytes
    route_set: bytes  # values joined by "\n"
    caller_cseq: int
    callee_cseq: int
    caller_peer: str | None  # "listener|host|port"
    callee_peer: str | None


class DialogStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open dialog store {path}: {exc}") from exc

    def apply(self, puts: Iterable[DialogRecord], deletes: Iterable[tuple[bytes, bytes]]) -> None:
        """One transaction: write these dialogs, forget those."""
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO sipfleet_dialogs VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    puts,
                )
                self._db.executemany(
                    "DELETE FROM sipfleet_dialogs WHERE call_id = ? AND from_tag = ?", deletes
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.rollback()
                raise StoreError(f"{self.path}: cannot write dialogs: {exc}") from exc

    def load(self, now_wall: float) -> list[DialogRecord]:
        """Every dialog not yet expired; expired ones are dropped."""
        with self._lock:
            try:
                self._db.execute("DELETE FROM sipfleet_dialogs WHERE expires <= ?", (now_wall,))
                rows = self._db.execute("SELECT * FROM sipfleet_dialogs").fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot read dialogs: {exc}") from exc
        return [DialogRecord(*r) for r in rows]

    def checkpoint(self) -> None:
        """Write the log back into the database (blocking: call from a thread).

        A connection of its own, so the loop's writes never wait for it
        (a PASSIVE checkpoint does not block writers)."""
        if self.path == ":memory:":
            return
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: checkpoint failed: {exc}") from exc

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sipfleet_dialogs")

    def close(self) -> None:
        with self._lock:
            self._db.close()
