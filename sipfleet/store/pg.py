"""PostgreSQL through psycopg 3 (async, pooled by psycopg_pool).

Changes to the ``dispatcher`` table reach every node through LISTEN/NOTIFY:
a statement trigger, ``sipfleet_dispatcher_changed``, notifies channel
``sipfleet_dispatcher`` after each INSERT, UPDATE, DELETE or TRUNCATE (by
kamcli, psql or another sipfleet). A node's own writes come back to it too:
the reload they cause rereads what it already has, and it closes a race (a
reload for someone else's change that read the table just before our own
write committed would otherwise leave our change out until the next one).
Without the right to create
the trigger (the table belongs to someone else) the store falls back to a
checksum on an interval, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg_pool import AsyncConnectionPool

from sipfleet.store.base import StoreError
from sipfleet.store.sql import Cursor, SqlStore, dialog_columns

__all__ = ["CHANNEL", "PostgresStore"]

log = logging.getLogger("sipfleet.store")
# The pool logs each failed reconnection; StoreHealth says it once per 10 s instead.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
T = TypeVar("T")

#: The NOTIFY channel the trigger tells.
CHANNEL = "sipfleet_dispatcher"
#: Silence on the LISTEN connection this long: check it is still there.
_KEEPALIVE = 15.0
#: Serialises schema creation between nodes starting together.
_SCHEMA_LOCK = 0x51F1EE7

_TABLES = [
    f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})",
    """CREATE TABLE IF NOT EXISTS sipfleet_dispatcher_state (
    setid INTEGER NOT NULL,
    destination VARCHAR(192) NOT NULL,
    admin_state VARCHAR(16) NOT NULL,
    changed_at DOUBLE PRECISION,
    changed_by VARCHAR(64) DEFAULT '' NOT NULL,
    PRIMARY KEY (setid, destination)
)""",
    """CREATE TABLE IF NOT EXISTS sipfleet_admin_audit (
    id BIGSERIAL PRIMARY KEY NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    setid INTEGER NOT NULL,
    destination VARCHAR(192) NOT NULL,
    admin_state VARCHAR(16) NOT NULL,
    changed_by VARCHAR(64) DEFAULT '' NOT NULL
)""",
    f"""CREATE TABLE IF NOT EXISTS sipfleet_dialogs (
    dkey BYTEA PRIMARY KEY NOT NULL,
    {dialog_columns(0)}
)""",
]

_TRIGGER = [
    f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})",
    f"""CREATE OR REPLACE FUNCTION sipfleet_dispatcher_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', TG_OP);
    RETURN NULL;
END
$$""",
    """DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'sipfleet_dispatcher_changed'
                   AND tgrelid = 'dispatcher'::regclass) THEN
        CREATE TRIGGER sipfleet_dispatcher_changed
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON dispatcher
            FOR EACH STATEMENT EXECUTE PROCEDURE sipfleet_dispatcher_notify();
    END IF;
END
$$""",
]


class PostgresStore(SqlStore):
    ENGINE = 0
    SCHEMA = "postgres"
    DRIVER_ERRORS = (psycopg.Error,)
    UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError)
    CHECKSUM = (
        "SELECT count(*), coalesce(max(id), 0), coalesce(sum(hashtext(concat_ws(',', id, setid, "
        "destination, flags, priority, attrs, description))::bigint), 0) FROM dispatcher"
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        u = self.url
        extra = {k: v for k, v in u.query.items() if k != "options"}
        options = f"{u.query.get('options', '')} -c statement_timeout={int(self.timeout * 1000)}"
        self.conninfo = pg_conninfo.make_conninfo(
            "",
            host=u.host or None,
            port=u.port,
            user=u.user,
            password=u.password,
            dbname=u.database,
            connect_timeout=max(int(self.timeout), 1),
            application_name="sipfleet",
            options=options.strip(),
            **extra,
        )
        self._pool: AsyncConnectionPool[Any] | None = None
        self._listening = asyncio.Event()
        self._notify = False

    async def _open_pool(self) -> None:
        # One plain connection first: its error says why (the pool's only says "timeout").
        conn = await psycopg.AsyncConnection.connect(self.conninfo)
        await conn.close()
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            timeout=self.timeout,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,
            name="sipfleet",
        )
        await pool.open(wait=True, timeout=self.timeout)
        self._pool = pool

    async def _close_pool(self) -> None:
        if self._pool is not None:
            await self._pool.close(timeout=self.timeout)
            self._pool = None

    async def _transaction(self, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        if self._pool is None:
            raise StoreError(f"{self.url.redacted()}: store closed")
        async with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            return await fn(cur)

    def _schema_statements(self) -> list[str]:
        return list(_TABLES)

    async def _table_exists(self, cur: Cursor, name: str) -> bool:
        await cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
        row = await cur.fetchone()
        return bool(row[0])

    def _upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
        )

    async def _insert_id(self, cur: Cursor, sql: str, params: Sequence[Any]) -> int:
        await cur.execute(sql + " RETURNING id", params)
        row = await cur.fetchone()
        return int(row[0])

    # -- LISTEN/NOTIFY ------------------------------------------------------------
    async def _start_watch(self) -> None:
        async def trigger(cur: Cursor) -> None:
            for stmt in _TRIGGER:
                await cur.execute(stmt)

        try:
            await self._tx("create trigger", trigger)
        except StoreError as e:
            log.warning(
                "%s: no NOTIFY trigger on dispatcher (%s): checking for changes every %g s instead",
                self.url.redacted(),
                e,
                self.check_interval,
            )
            await super()._start_watch()
            return
        self._notify = True
        self._tasks.append(asyncio.create_task(self._listen(), name="store-listen"))
        try:
            await asyncio.wait_for(self._listening.wait(), self.timeout * 2)
        except TimeoutError:
            raise StoreError(f"{self.url.redacted()}: LISTEN {CHANNEL}: no answer") from None

    @property
    def change_feed(self) -> str:
        return f"LISTEN {CHANNEL}" if self._notify else super().change_feed

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if self._listening.is_set():
                        self._changed.set()  # notifications may have been missed meanwhile
                    self._listening.set()
                    if self.health.succeeded():
                        self._changed.set()
                    backoff = 0.5
                    while True:
                        async for _ in conn.notifies(timeout=_KEEPALIVE):
                            self._changed.set()
                        await conn.execute("SELECT 1")  # still there?
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as e:
                self.health.failed(f"LISTEN {CHANNEL}", e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
