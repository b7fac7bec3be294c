"""MySQL and MariaDB through asyncmy (async, pooled).

MySQL has no NOTIFY: changes made by others (kamcli, SQL, another node)
are seen by a checksum of the ``dispatcher`` table every
``[store] check_interval`` seconds (count, highest id, sum of CRC32 of the
rows: one indexed scan of a table of hundreds of rows), or at the next
reload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncmy
from asyncmy.errors import InterfaceError, MySQLError, OperationalError

from sipfleet.store.base import StoreError
from sipfleet.store.sql import Cursor, SqlStore, dialog_columns

__all__ = ["MysqlStore"]

T = TypeVar("T")

# asyncmy logs the server's notes at WARNING ("Table ... already exists" for
# every CREATE TABLE IF NOT EXISTS at each start); failures reach StoreHealth.
logging.getLogger("asyncmy").setLevel(logging.ERROR)

_TABLES = [
    """CREATE TABLE IF NOT EXISTS sipfleet_dispatcher_state (
    setid INT NOT NULL,
    destination VARCHAR(192) NOT NULL,
    admin_state VARCHAR(16) NOT NULL,
    changed_at DOUBLE,
    changed_by VARCHAR(64) DEFAULT '' NOT NULL,
    PRIMARY KEY (setid, destination)
)""",
    """CREATE TABLE IF NOT EXISTS sipfleet_admin_audit (
    id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    at DOUBLE NOT NULL,
    setid INT NOT NULL,
    destination VARCHAR(192) NOT NULL,
    admin_state VARCHAR(16) NOT NULL,
    changed_by VARCHAR(64) DEFAULT '' NOT NULL
)""",
    f"""CREATE TABLE IF NOT EXISTS sipfleet_dialogs (
    dkey VARBINARY(20) PRIMARY KEY NOT NULL,
    {dialog_columns(1)}
)""",
]


class MysqlStore(SqlStore):
    ENGINE = 1
    SCHEMA = "mysql"
    # asyncmy raises RuntimeError ("Transport does not expose socket instance")
    # when the server closes the connection while it is being set up.
    DRIVER_ERRORS = (MySQLError, RuntimeError)
    UNREACHABLE = (OperationalError, InterfaceError, RuntimeError)
    CHECKSUM = (
        "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(SUM(CRC32(CONCAT_WS(',', id, setid, "
        "destination, flags, priority, attrs, description))), 0) FROM dispatcher"
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._pool: Any = None

    def _connect_args(self) -> dict[str, Any]:
        u = self.url
        args: dict[str, Any] = {
            "user": u.user or "root",
            "password": u.password or "",
            "db": u.database,
            "connect_timeout": self.timeout,
            "autocommit": True,
            "charset": u.query.get("charset", "utf8mb4"),
        }
        if "unix_socket" in u.query:
            args["unix_socket"] = u.query["unix_socket"]
        else:
            args["host"] = u.host or "127.0.0.1"
            args["port"] = u.port or 3306
        return args

    async def _open_pool(self) -> None:
        self._pool = await asyncmy.create_pool(
            minsize=1, maxsize=self.pool_size, pool_recycle=300, **self._connect_args()
        )

    async def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    async def _transaction(self, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        pool = self._pool
        if pool is None:
            raise StoreError(f"{self.url.redacted()}: store closed")
        conn = await asyncio.wait_for(pool.acquire(), self.timeout)
        done = False
        try:
            await conn.begin()
            async with conn.cursor() as cur:
                result = await fn(cur)
            await conn.commit()
            done = True
            return result
        finally:
            if not done:
                conn.close()  # in an unknown state: never back into the pool
            pool.release(conn)

    def _schema_statements(self) -> list[str]:
        return list(_TABLES)

    async def _table_exists(self, cur: Cursor, name: str) -> bool:
        await cur.execute(
            "SELECT COUNT(*) FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = %s",
            (name,),
        )
        row = await cur.fetchone()
        return bool(row[0])

    def _upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        return (
            f"REPLACE INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))})"
        )

    async def _insert_id(self, cur: Cursor, sql: str, params: Sequence[Any]) -> int:
        await cur.execute(sql, params)
        await cur.execute("SELECT LAST_INSERT_ID()")
        row = await cur.fetchone()
        return int(row[0])
