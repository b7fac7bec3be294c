"""Where the store is: ``[store] url`` / ``--db``, parsed.

    sipfleet.db, /var/lib/sipfleet/db       an SQLite file (no scheme)
    sqlite:///relative.db, sqlite:////abs   an SQLite file (SQLAlchemy's spelling)
    postgresql://USER:PASS@HOST:PORT/DB     PostgreSQL (postgres:// too)
    mysql://USER:PASS@HOST:PORT/DB          MySQL or MariaDB (mariadb:// too)

A ``+driver`` after the scheme (``postgresql+psycopg2://``, as kamcli and
SQLAlchemy write them) is accepted and ignored. Any other scheme is refused:
before, such a URL was taken for a file path and created folders named
after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["ServerUrl", "StoreLocation", "parse_location"]

_SCHEMES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}

_HELP = (
    "use a file path, sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
    "or mysql://USER:PASSWORD@HOST:PORT/DATABASE (MariaDB too)"
)


@dataclass(frozen=True)
class ServerUrl:
    """A parsed ``scheme://user:password@host:port/database?key=value``."""

    scheme: Literal["postgresql", "mysql"]
    host: str
    port: int | None
    user: str | None
    password: str | None
    database: str
    query: dict[str, str] = field(default_factory=dict)

    def redacted(self) -> str:
        """The URL without its password, for logs and status."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{user}{host}{port}/{self.database}"


@dataclass(frozen=True)
class StoreLocation:
    kind: Literal["sqlite", "list", "postgresql", "mysql"]
    path: str = ""  # sqlite and list
    server: ServerUrl | None = None

    def describe(self) -> str:
        return self.server.redacted() if self.server is not None else self.path


def parse_location(text: str, *, file_kind: Literal["sqlite", "list"] = "sqlite") -> StoreLocation:
    """Raise ValueError, saying what is accepted, for a URL sipfleet cannot serve."""
    text = text.strip()
    if not text:
        raise ValueError(f"empty store location: {_HELP}")
    if "://" not in text:
        return StoreLocation(file_kind, text)
    scheme_full, _, rest = text.partition("://")
    scheme = scheme_full.lower().split("+", 1)[0]
    if scheme == "sqlite":
        # SQLAlchemy: sqlite:///relative.db, sqlite:////absolute.db
        if not rest.startswith("/") or len(rest) < 2:
            raise ValueError(f"store URL {text!r}: expected sqlite:///PATH")
        return StoreLocation("sqlite", rest[1:])
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise ValueError(f"store URL scheme {scheme_full!r} is not supported: {_HELP}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"store URL {_redact(text)!r}: {e}") from None
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ValueError(f"store URL {_redact(text)!r}: name one database after the host (/DB)")
    query = dict(parse_qsl(parts.query))
    if not parts.hostname and "unix_socket" not in query and "host" not in query:
        raise ValueError(f"store URL {_redact(text)!r}: no host")
    server = ServerUrl(
        kind,  # type: ignore[arg-type]
        parts.hostname or "",
        port,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password is not None else None,
        database,
        query,
    )
    return StoreLocation(kind, server=server)  # type: ignore[arg-type]


def _redact(text: str) -> str:
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
