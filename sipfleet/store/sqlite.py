"""An embedded SQLite database with Kamailio's ``dispatcher`` table (version 4).

The schema is Kamailio's own (``utils/kamctl/sqlite/dispatcher-create.sql``
and the ``version`` table of ``standard-create.sql``), so Kamailio's
``db_sqlite`` can read the same file. sipfleet keeps the admin states that
must survive restarts in a table of its own,
``sipfleet_dispatcher_state``, which Kamailio ignores.

One connection per store, shared by whatever thread the adapter calls from
(``check_same_thread`` off) and serialised by a lock. Every write is one
transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from sipfleet.dispatch.destination import DestinationSpec, StateKey, validate_spec
from sipfleet.dispatch.state import AdminState
from sipfleet.store._util import state_key
from sipfleet.store.base import AdminDetail, StoreError

__all__ = ["DISPATCHER_TABLE_VERSION", "SCHEMA", "SqliteStore", "spec_row"]

#: Kamailio's dispatcher table version this schema is.
DISPATCHER_TABLE_VERSION = 4
#: Column widths of Kamailio's schema; longer values are refused on write
#: (SQLite would keep them, Kamailio's MySQL/PostgreSQL tables would not).
MAX_DESTINATION = 192
MAX_ATTRS = 128
MAX_DESCRIPTION = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS version (
    id INTEGER PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_t_name_idx UNIQUE (table_name)
);
CREATE TABLE IF NOT EXISTS dispatcher (
    id INTEGER PRIMARY KEY NOT NULL,
    setid INTEGER DEFAULT 0 NOT NULL,
    destination VARCHAR(192) DEFAULT '' NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    priority INTEGER DEFAULT 0 NOT NULL,
    attrs VARCHAR(128) DEFAULT '' NOT NULL,
    description VARCHAR(64) DEFAULT '' NOT NULL
);
CREATE TABLE IF NOT EXISTS sipfleet_dispatcher_state (
    setid INTEGER NOT NULL,
    destination VARCHAR(192) NOT NULL,
    admin_state VARCHAR(16) NOT NULL,
    changed_at REAL,
    changed_by VARCHAR(64) DEFAULT '' NOT NULL,
    PRIMARY KEY (setid, destination)
);
INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('dispatcher', 4);
INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('sipfleet_dispatcher_state', 1);
"""

_tuple_new = tuple.__new__


class SqliteStore:
    """Destinations in SQLite, Kamailio's schema, plus persisted admin states."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            _ensure_parent(self.path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            if self.path != ":memory:":
                # WAL: a commit is one append, not two fsyncs of a rollback
                # journal (set_state answers in ~0.1 ms instead of ~3 ms);
                # NORMAL still survives a process crash, only an OS crash can
                # lose the last commits.
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def init(self) -> None:
        """Create the tables and version rows unless present (idempotent)."""
        with self._lock:
            try:
                self._db.executescript("BEGIN;" + SCHEMA + "COMMIT;")
                self._migrate()
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"cannot create schema in {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        """Columns added since the first schema (when and by whom a state changed)."""
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(sipfleet_dispatcher_state)")}
        if "changed_at" not in cols:
            self._db.execute("ALTER TABLE sipfleet_dispatcher_state ADD COLUMN changed_at REAL")
        if "changed_by" not in cols:
            self._db.execute(
                "ALTER TABLE sipfleet_dispatcher_state "
                "ADD COLUMN changed_by VARCHAR(64) DEFAULT '' NOT NULL"
            )

    def table_version(self) -> int | None:
        """The ``dispatcher`` row of the ``version`` table, None if absent."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT table_version FROM version WHERE table_name = 'dispatcher'"
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc} (run init first)") from exc
        return None if row is None else int(row[0])

    def _check_version(self) -> None:
        version = self.table_version()
        if version != DISPATCHER_TABLE_VERSION:
            raise StoreError(
                f"{self.path}: dispatcher table version {version}, expected "
                f"{DISPATCHER_TABLE_VERSION} (run init, or kamdbctl reinit)"
            )

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.rollback()

    def load(self) -> list[DestinationSpec]:
        """Every row in id order; NULL attrs and descriptions read as ''."""
        self._check_version()
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT setid, destination, flags, priority, attrs, description "
                    "FROM dispatcher ORDER BY id"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot read dispatcher table: {exc}") from exc
        return [
            _tuple_new(DestinationSpec, (s, d, f or 0, p or 0, a or "", desc or ""))
            for s, d, f, p, a, desc in rows
        ]

    def _write_rows(self, specs: Iterable[DestinationSpec], *, clear: bool) -> None:
        rows = [_row(spec) for spec in specs]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if clear:
                    self._db.execute("DELETE FROM dispatcher")
                self._db.executemany(
                    "INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"{self.path}: cannot write dispatcher table: {exc}") from exc

    def replace(self, specs: Iterable[DestinationSpec]) -> None:
        self._check_version()
        self._write_rows(specs, clear=True)

    def add(self, spec: DestinationSpec) -> None:
        self._check_version()
        self._write_rows((spec,), clear=False)

    def remove(self, set_id: int, uri: str) -> int:
        self._check_version()
        try:
            target = state_key(set_id, uri)[1]
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                rows = self._db.execute(
                    "SELECT id, destination FROM dispatcher WHERE setid = ?", (set_id,)
                ).fetchall()
                ids = [(rid,) for rid, dest in rows if _norm(dest) == target]
                self._db.executemany("DELETE FROM dispatcher WHERE id = ?", ids)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(
                    f"{self.path}: cannot remove from dispatcher table: {exc}"
                ) from exc
        return len(ids)

    def load_admin_states(self) -> dict[StateKey, AdminState]:
        return {k: v[0] for k, v in self.load_admin_details().items()}

    def load_admin_details(self) -> dict[StateKey, AdminDetail]:
        with self._lock:
            try:
                self._migrate()
                rows = self._db.execute(
                    "SELECT setid, destination, admin_state, changed_at, changed_by "
                    "FROM sipfleet_dispatcher_state"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{self.path}: cannot read admin states: {exc} (run init)"
                ) from exc
        try:
            return {
                (int(s), str(d).lower()): (AdminState(a), None if t is None else float(t), str(b))
                for s, d, a, t, b in rows
            }
        except ValueError as exc:
            raise StoreError(f"{self.path}: bad admin state: {exc}") from exc

    def save_admin_state(
        self, key: StateKey, state: AdminState | None, since: float | None = None, by: str = ""
    ) -> None:
        set_id, uri = key[0], key[1].lower()
        with self._lock:
            try:
                if state is None or state is AdminState.ENABLED:
                    self._db.execute(
                        "DELETE FROM sipfleet_dispatcher_state WHERE setid = ? AND destination = ?",
                        (set_id, uri),
                    )
                else:
                    self._db.execute(
                        "INSERT OR REPLACE INTO sipfleet_dispatcher_state "
                        "(setid, destination, admin_state, changed_at, changed_by) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (set_id, uri, state.value, since, by[:64]),
                    )
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot save admin state: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _norm(dest: str) -> str | None:
    try:
        return state_key(0, dest)[1]
    except ValueError:
        return None


def _row(spec: DestinationSpec) -> tuple[int, str, int, int, str, str]:
    where = f"set {spec.set_id} destination {spec.uri!r}"
    try:
        validate_spec(spec)
    except ValueError as exc:
        raise StoreError(f"{where}: {exc}") from exc
    if len(spec.uri) > MAX_DESTINATION:
        raise StoreError(f"{where}: destination longer than {MAX_DESTINATION} characters")
    if len(spec.attrs) > MAX_ATTRS:
        raise StoreError(f"{where}: attrs longer than {MAX_ATTRS} characters")
    if len(spec.description) > MAX_DESCRIPTION:
        raise StoreError(f"{where}: description longer than {MAX_DESCRIPTION} characters")
    return (spec.set_id, spec.uri, spec.flags, spec.priority, spec.attrs, spec.description)


#: A destination as a dispatcher table row, checked against Kamailio's column widths.
spec_row = _row


def _ensure_parent(path: str) -> None:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
