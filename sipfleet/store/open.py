"""``open_store(cfg)``: the configured store, opened, as an ``AsyncStore``.

A file path (or ``sqlite:///PATH``) is SQLite, created and seeded with the
example destinations when new; ``[store] type = "list"`` a Kamailio list
file; ``postgresql://`` and ``mysql://`` (``mariadb://``) URLs a database
server, whose drivers are imported only then.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from sipfleet.dispatch.destination import DestinationSpec
from sipfleet.store.base import AsyncStore, DestinationStore, StoreError
from sipfleet.store.dialogs import DialogStore
from sipfleet.store.listfile import ListFileStore
from sipfleet.store.local import LocalStore
from sipfleet.store.sqlite import SqliteStore
from sipfleet.store.url import StoreLocation

if TYPE_CHECKING:
    from sipfleet.config import StoreConfig

__all__ = ["EXAMPLE_DESTINATIONS", "open_location", "open_store"]

log = logging.getLogger("sipfleet.store")

#: What a new embedded store starts with: the two back ends of the README.
EXAMPLE_DESTINATIONS = (
    DestinationSpec(1, "sip:127.0.0.1:5070", 0, 0, "duid=media-1", "example back end"),
    DestinationSpec(1, "sip:127.0.0.1:5071", 0, 0, "duid=media-2", "example back end"),
)


async def open_store(cfg: StoreConfig) -> AsyncStore:
    """The configured store, ready; raise StoreError if it cannot be opened
    (a database server that does not answer: there is nothing to route on)."""
    return await open_location(
        cfg.location(),
        persist_dialogs=cfg.persist_dialogs,
        seed_examples=cfg.seed_examples,
        timeout=cfg.timeout,
        pool_size=cfg.pool_size,
        check_interval=cfg.check_interval,
    )


async def open_location(
    loc: StoreLocation,
    *,
    persist_dialogs: bool = False,
    seed_examples: bool = False,
    timeout: float = 5.0,
    pool_size: int = 4,
    check_interval: float = 1.0,
) -> AsyncStore:
    if loc.server is not None:
        from sipfleet.store.sql import SqlStore

        store: SqlStore
        try:
            if loc.kind == "postgresql":
                from sipfleet.store.pg import PostgresStore

                store = PostgresStore(
                    loc.server,
                    timeout=timeout,
                    pool_size=pool_size,
                    check_interval=check_interval,
                    persist_dialogs=persist_dialogs,
                )
            else:
                from sipfleet.store.mysql import MysqlStore

                store = MysqlStore(
                    loc.server,
                    timeout=timeout,
                    pool_size=pool_size,
                    check_interval=check_interval,
                    persist_dialogs=persist_dialogs,
                )
        except ImportError as e:
            raise StoreError(
                f"{loc.describe()}: the database driver is not installed ({e.name}): "
                "pip install psycopg[binary] psycopg-pool asyncmy"
            ) from e
        await store.open()
        return store

    path = loc.path

    def open_files() -> LocalStore:
        dest: DestinationStore
        if loc.kind == "list":
            dest = ListFileStore(path)
            dialog_path = path + ".dialogs.db"
        else:
            dest = _open_sqlite(path, seed_examples)
            dialog_path = path
        dialogs = DialogStore(dialog_path) if persist_dialogs else None
        return LocalStore(dest, dialogs, name=path)

    return await asyncio.to_thread(open_files)


def _open_sqlite(path: str, seed_examples: bool) -> SqliteStore:
    fresh = not os.path.exists(path) or os.path.getsize(path) == 0
    store = SqliteStore(path)
    if fresh:
        store.init()
    if fresh and seed_examples and not store.load():
        store.replace(EXAMPLE_DESTINATIONS)
        log.info("new store %s seeded with the example destinations", path)
    return store
