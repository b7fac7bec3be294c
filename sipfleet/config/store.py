"""``[store]``: where destinations (and open dialogs) are kept."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sipfleet.config.base import Model
from sipfleet.store.url import StoreLocation, parse_location

__all__ = ["StoreConfig"]


class StoreConfig(Model):
    """``[store]``: where destinations (and open dialogs) are kept."""

    type: Literal["sqlite", "list"] = Field(
        "sqlite", description="sqlite: Kamailio's dispatcher table in a file; list: a list file"
    )
    path: str = Field("sipfleet.db", description="the database or list file (relative: to cwd)")
    url: str = Field(
        "",
        description="a database instead of type and path: postgresql://USER:PASS@HOST:PORT/DB, "
        "mysql://... (MariaDB too), sqlite:///PATH or a file path; other schemes are refused",
    )
    timeout: float = Field(
        5.0, gt=0, le=60, description="database servers: seconds to connect or to answer"
    )
    pool_size: int = Field(4, ge=1, le=64, description="database servers: pooled connections")
    check_interval: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="database servers without NOTIFY (MySQL, MariaDB): seconds between checks "
        "of the dispatcher table for changes by others, 0 = only at reload",
    )
    persist_dialogs: bool = Field(
        True,
        description="keep open dialogs in the store so a restart keeps call-load and dlg.list",
    )
    seed_examples: bool = Field(
        True,
        description="a new, empty SQLite store gets the two example destinations "
        "sip:127.0.0.1:5070 and :5071",
    )

    @model_validator(mode="after")
    def _check_location(self) -> StoreConfig:
        self.location()  # a URL sipfleet cannot serve is refused here, with what is accepted
        return self

    def location(self) -> StoreLocation:
        """Where the store is: ``url`` if set, else ``path`` (a URL there works too)."""
        if self.url:
            return parse_location(self.url)
        return parse_location(self.path, file_kind=self.type)
