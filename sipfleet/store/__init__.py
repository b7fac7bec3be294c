"""Destination stores: a Kamailio list file, SQLite with Kamailio's schema
(synchronous: call them from a worker thread), or Kamailio's table on
PostgreSQL / MySQL / MariaDB (``sipfleet.store.pg``, ``sipfleet.store.mysql``).
The running process sees every one as an ``AsyncStore``, opened by
``sipfleet.store.open.open_store``.
"""

from sipfleet.store.base import EXAMPLE_SPECS, AsyncStore, DestinationStore, StoreError
from sipfleet.store.listfile import ListFileStore
from sipfleet.store.sqlite import SqliteStore
from sipfleet.store.transfer import export_list_file, import_list_file

__all__ = [
    "EXAMPLE_SPECS",
    "AsyncStore",
    "DestinationStore",
    "ListFileStore",
    "SqliteStore",
    "StoreError",
    "export_list_file",
    "import_list_file",
]
