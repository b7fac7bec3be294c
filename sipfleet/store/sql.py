"""Kamailio's ``dispatcher`` table on a database server (PostgreSQL, MySQL,
MariaDB), sipfleet's own tables beside it, as an ``AsyncStore``.

The ``dispatcher`` and ``version`` tables are created from Kamailio's own
schema files (copied in ``sipfleet/store/kamailio/``) when missing, so a
database made by ``kamdbctl`` works as it is and one made here works for
Kamailio. sipfleet's tables, created on first use:

    sipfleet_dispatcher_state   admin states that survive restarts (+ when, by whom)
    sipfleet_admin_audit        every admin change (the last AUDIT_KEEP rows)
    sipfleet_dialogs            open dialogs (``[store] persist_dialogs``)

A pool of connections with timeouts; each operation is one transaction.
When the server cannot be reached, reads raise StoreError (the process
keeps routing on its last snapshot), and writes of admin states and
dialogs are kept (bounded) and retried by a background task until they
land: ``status()`` says how many wait. ``changes()`` yields when another
writer changed the ``dispatcher`` table (the engine decides how: NOTIFY
on PostgreSQL, a checksum on an interval on MySQL) and when the server
came back after being unreachable (changes may have been missed).

Errors raised: StoreError, with the operation and the server's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any, Protocol, TypeVar

from sipfleet.dispatch.destination import DestinationSpec, StateKey
from sipfleet.dispatch.state import AdminState
from sipfleet.store._util import state_key
from sipfleet.store.base import AdminDetail, StoreError
from sipfleet.store.dialogs import DialogRecord
from sipfleet.store.health import StoreHealth
from sipfleet.store.sqlite import DISPATCHER_TABLE_VERSION, spec_row
from sipfleet.store.url import ServerUrl

__all__ = [
    "AUDIT_KEEP",
    "DOWN_DEADLINE",
    "MAX_DIALOG_BACKLOG",
    "MAX_PENDING_ADMIN",
    "Cursor",
    "SqlStore",
    "kamailio_ddl",
]

log = logging.getLogger("sipfleet.store")

T = TypeVar("T")

#: Audit rows kept; older ones are pruned as new ones come.
AUDIT_KEEP = 100_000
#: Dialog writes kept while the server is unreachable; beyond, the oldest
#: go (counted in status()): they are restored only if sipfleet restarts.
MAX_DIALOG_BACKLOG = 200_000
#: Admin states kept for a retry (one per destination, the newest wins).
MAX_PENDING_ADMIN = 100_000
#: Seconds an operation may take while the server is known to be down.
DOWN_DEADLINE = 1.0

#: Column types of sipfleet_dialogs by DialogRecord field: (PostgreSQL, MySQL).
_BYTES = ("BYTEA", "MEDIUMBLOB")
_DIALOG_COLUMNS: dict[str, tuple[tuple[str, str], bool]] = {
    # field: ((postgres type, mysql type), nullable)
    "call_id": (_BYTES, False),
    "from_tag": (_BYTES, False),
    "to_tag": (_BYTES, True),
    "h_id": (("BIGINT", "BIGINT"), False),
    "set_id": (("INTEGER", "INT"), True),
    "uri": (("TEXT", "TEXT"), True),
    "load_key": (("TEXT", "TEXT"), True),
    "start": (("DOUBLE PRECISION", "DOUBLE"), False),
    "expires": (("DOUBLE PRECISION", "DOUBLE"), False),
    "from_line": (_BYTES, False),
    "to_line": (_BYTES, False),
    "caller_contact": (_BYTES, False),
    "callee_contact": (_BYTES, False),
    "route_set": (_BYTES, False),
    "caller_cseq": (("BIGINT", "BIGINT"), False),
    "callee_cseq": (("BIGINT", "BIGINT"), False),
    "caller_peer": (("TEXT", "TEXT"), True),
    "callee_peer": (("TEXT", "TEXT"), True),
}
_missing = set(DialogRecord._fields) - set(_DIALOG_COLUMNS)
assert not _missing, f"sipfleet_dialogs has no column type for {_missing}"
DIALOG_FIELDS: tuple[str, ...] = DialogRecord._fields


def dialog_columns(engine: int) -> str:
    """The column list of sipfleet_dialogs for engine 0 (PostgreSQL) or 1 (MySQL)."""
    return ",\n    ".join(
        f"{name} {_DIALOG_COLUMNS[name][0][engine]}{'' if _DIALOG_COLUMNS[name][1] else ' NOT NULL'}"
        for name in DIALOG_FIELDS
    )


def kamailio_ddl(engine: str, which: str) -> list[str]:
    """Statements of Kamailio's ``{engine}-{which}-create.sql`` (copied verbatim)."""
    text = (
        resources.files("sipfleet.store")
        .joinpath("kamailio", f"{engine}-{which}-create.sql")
        .read_text(encoding="utf-8")
    )
    return [s.strip() for s in text.split(";") if s.strip()]


def dialog_key(call_id: bytes, from_tag: bytes) -> bytes:
    """The fixed-size primary key of a dialog row (Call-IDs can be long)."""
    return hashlib.sha1(call_id + b"\0" + from_tag, usedforsecurity=False).digest()


class Cursor(Protocol):
    """What the store uses of a DB-API cursor (psycopg's and asyncmy's alike)."""

    async def execute(self, query: Any, params: Any = ..., /) -> Any: ...
    async def executemany(self, query: Any, params_seq: Any, /) -> Any: ...
    async def fetchall(self) -> Sequence[Any]: ...
    async def fetchone(self) -> Any: ...


class SqlStore:
    """The engine-independent part; subclasses bring the driver and the dialect."""

    #: 0 for PostgreSQL's column types, 1 for MySQL's (see _DIALOG_COLUMNS).
    ENGINE = 0
    #: Kamailio's schema file prefix.
    SCHEMA = "postgres"
    #: Driver exceptions: become StoreError.
    DRIVER_ERRORS: tuple[type[BaseException], ...] = ()
    #: Those of them that mean the server is not there (not: it refused a statement).
    UNREACHABLE: tuple[type[BaseException], ...] = ()
    #: One row that changes when any row of the dispatcher table does.
    CHECKSUM = ""

    def __init__(
        self,
        url: ServerUrl,
        *,
        timeout: float = 5.0,
        pool_size: int = 4,
        check_interval: float = 1.0,
        persist_dialogs: bool = True,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.pool_size = pool_size
        self.check_interval = check_interval
        self.persist_dialogs = persist_dialogs
        self.health = StoreHealth(url.redacted())
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._dialog_backlog: dict[tuple[bytes, bytes], DialogRecord | None] = {}
        self._dialog_lock = asyncio.Lock()
        self._dialog_writes_dropped = 0
        self._dialogs_in_flight = 0
        self._pending_admin: dict[StateKey, tuple[AdminState | None, float | None, str]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url.redacted()!r})"

    # -- what subclasses provide -------------------------------------------------
    async def _open_pool(self) -> None:
        raise NotImplementedError

    async def _close_pool(self) -> None:
        raise NotImplementedError

    async def _transaction(self, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        """Run ``fn`` in one transaction on a pooled connection."""
        raise NotImplementedError

    def _schema_statements(self) -> list[str]:
        """sipfleet's own tables (and triggers), idempotent."""
        raise NotImplementedError

    async def _table_exists(self, cur: Cursor, name: str) -> bool:
        raise NotImplementedError

    def _upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        raise NotImplementedError

    async def _insert_id(self, cur: Cursor, sql: str, params: Sequence[Any]) -> int:
        """Insert one row into a table with a serial id; return the id."""
        raise NotImplementedError

    # -- plumbing ---------------------------------------------------------------
    async def _tx(self, what: str, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        """One transaction with a deadline; failures mark the store down.

        While the server is known to be down the deadline is short
        (DOWN_DEADLINE), so RPCs that write answer promptly; the retry task
        keeps trying in the background."""
        deadline = self.timeout * 2 if self.health.ok else min(self.timeout, DOWN_DEADLINE)
        try:
            result = await asyncio.wait_for(self._transaction(fn), deadline)
        except StoreError:
            raise  # our own check refused what the server answered: it is up
        except self._failures() as e:
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if isinstance(e, TimeoutError):
                msg = f"no answer within {deadline:g} s"
            if isinstance(e, (TimeoutError, OSError, *self.UNREACHABLE)):
                self.health.failed(what, e if not isinstance(e, TimeoutError) else Exception(msg))
            raise StoreError(f"{self.url.redacted()}: {what}: {msg}") from e
        if self.health.succeeded():
            self._changed.set()  # changes may have been missed while it was down
        return result

    def _failures(self) -> tuple[type[BaseException], ...]:
        return (TimeoutError, OSError, *self.DRIVER_ERRORS)

    async def open(self) -> None:
        """Connect, create what is missing, check the table version, start watching.

        Raises StoreError when the server cannot be reached (nothing to route on).
        """
        try:
            await asyncio.wait_for(self._open_pool(), self.timeout * 2)
        except StoreError:
            raise
        except self._failures() as e:
            msg = (str(e).strip().splitlines() or [f"no answer within {self.timeout * 2:g} s"])[0]
            raise StoreError(f"cannot reach {self.url.redacted()}: {msg}") from e
        try:
            await self.init()
            await self._tx("table version", self._check_version)
            self._tasks.append(asyncio.create_task(self._retry_loop(), name="store-retry"))
            await self._start_watch()
        except BaseException:
            await self._stop_tasks()
            await self._close_pool()
            raise

    async def _start_watch(self) -> None:
        """Start telling ``_changed`` of changes made from now on (a checksum of
        the table every ``check_interval``; PostgreSQL overrides: LISTEN)."""
        if self.check_interval <= 0:
            return
        first = await self._tx("change check", self._checksum)
        self._tasks.append(asyncio.create_task(self._poll(first), name="store-poll"))

    async def _checksum(self, cur: Cursor) -> tuple[Any, ...]:
        await cur.execute(self.CHECKSUM)
        return tuple(await cur.fetchone())

    async def _poll(self, last: tuple[Any, ...] | None) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                sig = await self._tx("change check", self._checksum)
            except StoreError:
                continue  # the health said so; a change is signalled on recovery
            if last is not None and sig != last:
                self._changed.set()
            last = sig

    @property
    def change_feed(self) -> str:
        """How changes are seen, for status()."""
        if self.check_interval <= 0:
            return "none (reload to see changes)"
        return f"checksum every {self.check_interval:g} s"

    async def init(self) -> None:
        async def go(cur: Cursor) -> None:
            if not await self._table_exists(cur, "version"):
                log.info("%s: creating Kamailio's version table", self.url.redacted())
                for stmt in kamailio_ddl(self.SCHEMA, "standard"):
                    await cur.execute(stmt)
            if not await self._table_exists(cur, "dispatcher"):
                log.info("%s: creating Kamailio's dispatcher table", self.url.redacted())
                for stmt in kamailio_ddl(self.SCHEMA, "dispatcher"):
                    await cur.execute(stmt)
            for stmt in self._schema_statements():
                await cur.execute(stmt)

        await self._tx("create tables", go)

    async def _check_version(self, cur: Cursor) -> None:
        await cur.execute("SELECT table_version FROM version WHERE table_name = 'dispatcher'")
        row = await cur.fetchone()
        version = None if row is None else int(row[0])
        if version != DISPATCHER_TABLE_VERSION:
            raise StoreError(
                f"{self.url.redacted()}: dispatcher table version {version}, expected "
                f"{DISPATCHER_TABLE_VERSION} (kamdbctl reinit, or sipfleet db init on a new "
                "database)"
            )

    # -- destinations -------------------------------------------------------------
    async def load(self) -> list[DestinationSpec]:
        async def go(cur: Cursor) -> list[DestinationSpec]:
            await self._check_version(cur)
            await cur.execute(
                "SELECT setid, destination, flags, priority, attrs, description "
                "FROM dispatcher ORDER BY id"
            )
            return [
                DestinationSpec(int(s), str(d), f or 0, p or 0, a or "", desc or "")
                for s, d, f, p, a, desc in await cur.fetchall()
            ]

        return await self._tx("load", go)

    async def _insert_rows(self, cur: Cursor, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            await cur.executemany(
                "INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                rows,
            )

    async def replace(self, specs: Iterable[DestinationSpec]) -> None:
        rows = [spec_row(s) for s in specs]

        async def go(cur: Cursor) -> None:
            await self._check_version(cur)
            await cur.execute("DELETE FROM dispatcher")
            await self._insert_rows(cur, rows)

        await self._tx("replace", go)

    async def add(self, spec: DestinationSpec) -> None:
        rows = [spec_row(spec)]

        async def go(cur: Cursor) -> None:
            await self._check_version(cur)
            await self._insert_rows(cur, rows)

        await self._tx("add", go)

    async def remove(self, set_id: int, uri: str) -> int:
        try:
            target = state_key(set_id, uri)[1]
        except ValueError as exc:
            raise StoreError(str(exc)) from exc

        async def go(cur: Cursor) -> int:
            await self._check_version(cur)
            await cur.execute("SELECT id, destination FROM dispatcher WHERE setid = %s", (set_id,))
            ids = [(rid,) for rid, dest in await cur.fetchall() if _norm(dest) == target]
            if ids:
                await cur.executemany("DELETE FROM dispatcher WHERE id = %s", ids)
            return len(ids)

        return await self._tx("remove", go)

    # -- admin states -------------------------------------------------------------
    async def load_admin_details(self) -> dict[StateKey, AdminDetail]:
        async def go(cur: Cursor) -> list[Any]:
            await cur.execute(
                "SELECT setid, destination, admin_state, changed_at, changed_by "
                "FROM sipfleet_dispatcher_state"
            )
            return list(await cur.fetchall())

        rows = await self._tx("load admin states", go)
        out: dict[StateKey, AdminDetail] = {}
        for s, d, a, t, b in rows:
            try:
                out[(int(s), str(d).lower())] = (
                    AdminState(a),
                    None if t is None else float(t),
                    str(b or ""),
                )
            except ValueError:
                log.warning("%s: ignoring admin state %r of %s", self.url.redacted(), a, d)
        # Writes not landed yet are newer than what the table says.
        for key, (state, since, by) in self._pending_admin.items():
            if state is None or state is AdminState.ENABLED:
                out.pop(key, None)
            else:
                out[key] = (state, since, by)
        return out

    async def save_admin_state(
        self, key: StateKey, state: AdminState | None, since: float | None = None, by: str = ""
    ) -> None:
        key = (key[0], key[1].lower())
        self._pending_admin.pop(key, None)
        if not self.health.ok:
            # Known down: no wait per destination (set_state "all" changes many);
            # the retry task writes it, and finds out when the server is back.
            if len(self._pending_admin) < MAX_PENDING_ADMIN:
                self._pending_admin[key] = (state, since, by)
            raise StoreError(
                f"{self.url.redacted()}: unreachable ({self.health.error}): "
                "the admin state is kept and written when it answers again"
            )
        try:
            await self._tx("save admin state", self._admin_writer(key, state, since, by))
        except StoreError:
            if len(self._pending_admin) < MAX_PENDING_ADMIN:
                self._pending_admin[key] = (state, since, by)
            raise

    def _admin_writer(
        self, key: StateKey, state: AdminState | None, since: float | None, by: str
    ) -> Callable[[Cursor], Awaitable[None]]:
        set_id, uri = key
        by = by[:64]

        async def go(cur: Cursor) -> None:
            if state is None or state is AdminState.ENABLED:
                await cur.execute(
                    "DELETE FROM sipfleet_dispatcher_state WHERE setid = %s AND destination = %s",
                    (set_id, uri),
                )
            else:
                await cur.execute(
                    self._upsert(
                        "sipfleet_dispatcher_state",
                        ("setid", "destination", "admin_state", "changed_at", "changed_by"),
                        ("setid", "destination"),
                    ),
                    (set_id, uri, state.value, since, by),
                )
            new_id = await self._insert_id(
                cur,
                "INSERT INTO sipfleet_admin_audit (at, setid, destination, admin_state, changed_by) "
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    since if since is not None else time.time(),
                    set_id,
                    uri,
                    (state or AdminState.ENABLED).value,
                    by,
                ),
            )
            if new_id > AUDIT_KEEP and new_id % 100 == 0:
                await cur.execute(
                    "DELETE FROM sipfleet_admin_audit WHERE id <= %s", (new_id - AUDIT_KEEP,)
                )

        return go

    async def audit(self, limit: int = 100) -> list[tuple[float, int, str, str, str]]:
        """The newest admin changes, newest first: (at, set, uri, state, by)."""

        async def go(cur: Cursor) -> list[Any]:
            await cur.execute(
                "SELECT at, setid, destination, admin_state, changed_by "
                "FROM sipfleet_admin_audit ORDER BY id DESC LIMIT %s",
                (max(min(limit, 10_000), 0),),
            )
            return list(await cur.fetchall())

        rows = await self._tx("read audit", go)
        return [(float(a), int(s), str(d), str(st), str(b)) for a, s, d, st, b in rows]

    # -- dialogs ------------------------------------------------------------------
    async def load_dialogs(self, now_wall: float) -> list[DialogRecord]:
        if not self.persist_dialogs:
            return []

        async def go(cur: Cursor) -> list[Any]:
            await cur.execute("DELETE FROM sipfleet_dialogs WHERE expires <= %s", (now_wall,))
            await cur.execute(f"SELECT {', '.join(DIALOG_FIELDS)} FROM sipfleet_dialogs")
            return list(await cur.fetchall())

        rows = await self._tx("load dialogs", go)
        return [
            DialogRecord._make(bytes(v) if isinstance(v, memoryview) else v for v in r)
            for r in rows
        ]

    async def apply_dialogs(
        self, puts: Sequence[DialogRecord], deletes: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """Queue the batch behind any earlier one and write what is queued.

        Never raises for an unreachable server: the batch stays queued (bounded,
        oldest dropped first) and the retry task writes it when the server is back.
        """
        if not self.persist_dialogs:
            return
        backlog = self._dialog_backlog
        for r in puts:
            backlog[(r.call_id, r.from_tag)] = r
        for k in deletes:
            backlog[k] = None
        self._trim_backlog()
        await self._flush_dialogs()

    def _trim_backlog(self) -> None:
        backlog = self._dialog_backlog
        while len(backlog) > MAX_DIALOG_BACKLOG:
            del backlog[next(iter(backlog))]
            self._dialog_writes_dropped += 1

    async def _flush_dialogs(self) -> None:
        async with self._dialog_lock:
            if not self._dialog_backlog:
                return
            batch, self._dialog_backlog = self._dialog_backlog, {}
            puts = [(dialog_key(*k), *r) for k, r in batch.items() if r is not None]
            deletes = [(dialog_key(*k),) for k, r in batch.items() if r is None]
            sql = self._upsert("sipfleet_dialogs", ("dkey", *DIALOG_FIELDS), ("dkey",))

            async def go(cur: Cursor) -> None:
                if puts:
                    await cur.executemany(sql, puts)
                if deletes:
                    await cur.executemany("DELETE FROM sipfleet_dialogs WHERE dkey = %s", deletes)

            self._dialogs_in_flight = len(batch)
            try:
                await self._tx("write dialogs", go)
            except BaseException as e:
                # Kept (cancelled too: close() writes it). Newer writes of the
                # same dialogs, queued meanwhile, win.
                for k, v in batch.items():
                    self._dialog_backlog.setdefault(k, v)
                self._trim_backlog()
                if not isinstance(e, StoreError):
                    raise
            finally:
                self._dialogs_in_flight = 0

    async def checkpoint(self) -> None:
        """Nothing to do: the server manages its own log."""

    # -- retry, changes, status ---------------------------------------------------
    async def _retry_loop(self) -> None:
        """Write what waits (dialogs, admin states) once the server answers again."""
        while True:
            await asyncio.sleep(max(self.check_interval, 0.2))
            try:
                await self._retry_pending()
            except StoreError:
                pass  # the health said so
            except Exception:
                log.exception("%s: internal error in the retry task", self.url.redacted())

    async def _retry_pending(self) -> None:
        if self._dialog_backlog:
            await self._flush_dialogs()
        for key, (state, since, by) in list(self._pending_admin.items()):
            if self._pending_admin.get(key) != (state, since, by):
                continue  # rewritten meanwhile
            await self._tx("save admin state", self._admin_writer(key, state, since, by))
            if self._pending_admin.get(key) == (state, since, by):
                del self._pending_admin[key]

    async def changes(self) -> AsyncIterator[None]:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._closed:
                return
            yield None

    def status(self) -> dict[str, Any]:
        return {
            **self.health.status(),
            "pending_admin_writes": len(self._pending_admin),
            "pending_dialog_writes": len(self._dialog_backlog) + self._dialogs_in_flight,
            "dialog_writes_dropped": self._dialog_writes_dropped,
            "changes": self.change_feed,
        }

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._changed.set()
        await self._stop_tasks()
        if self.health.ok:  # a last write, unless it would only wait for timeouts
            with contextlib.suppress(StoreError):
                await self._retry_pending()
        await self._close_pool()


def _norm(dest: str) -> str | None:
    try:
        return state_key(0, dest)[1]
    except ValueError:
        return None
