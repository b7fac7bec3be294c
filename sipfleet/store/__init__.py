"""Destination stores: a Kamailio list file, or SQLite with Kamailio's schema.

Synchronous (file and database I/O): call them from a worker thread.
"""

from sipfleet.store.base import EXAMPLE_SPECS, DestinationStore, StoreError
from sipfleet.store.listfile import ListFileStore
from sipfleet.store.sqlite import SqliteStore
from sipfleet.store.transfer import export_list_file, import_list_file

__all__ = [
    "EXAMPLE_SPECS",
    "DestinationStore",
    "ListFileStore",
    "SqliteStore",
    "StoreError",
    "export_list_file",
    "import_list_file",
]
