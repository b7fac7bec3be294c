"""``[store] url`` / ``--db``: what is a file, what is a server, what is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sipp import sipfleet_command

from sipfleet.config import ConfigError, load_config
from sipfleet.store.url import ServerUrl, StoreLocation, parse_location


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("sipfleet.db", StoreLocation("sqlite", "sipfleet.db")),
        ("/var/lib/sipfleet/db", StoreLocation("sqlite", "/var/lib/sipfleet/db")),
        ("sqlite:///rel/x.db", StoreLocation("sqlite", "rel/x.db")),
        ("sqlite:////abs/x.db", StoreLocation("sqlite", "/abs/x.db")),
        (
            "postgresql://kam:p%40ss@db.example:5433/kamailio",
            StoreLocation(
                "postgresql",
                server=ServerUrl("postgresql", "db.example", 5433, "kam", "p@ss", "kamailio"),
            ),
        ),
        (
            "postgres://kam@[::1]/kamailio?sslmode=require",
            StoreLocation(
                "postgresql",
                server=ServerUrl(
                    "postgresql", "::1", None, "kam", None, "kamailio", {"sslmode": "require"}
                ),
            ),
        ),
        (
            "mysql+pymysql://kamailio:kamailiorw@localhost/kamailio",
            StoreLocation(
                "mysql",
                server=ServerUrl("mysql", "localhost", None, "kamailio", "kamailiorw", "kamailio"),
            ),
        ),
        (
            "mariadb://u:p@127.0.0.1:3307/k",
            StoreLocation("mysql", server=ServerUrl("mysql", "127.0.0.1", 3307, "u", "p", "k")),
        ),
    ],
)
def test_locations(text: str, want: StoreLocation) -> None:
    assert parse_location(text) == want


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("redis://127.0.0.1/0", "scheme 'redis' is not supported"),
        ("mongodb://h/db", "scheme 'mongodb' is not supported"),
        ("postgresql://u:secret@h:5432", "name one database"),
        ("postgresql://u:secret@h:5432/a/b", "name one database"),
        ("mysql://u:secret@h:notaport/db", "port"),
        ("sqlite://x.db", "expected sqlite:///PATH"),
        ("", "empty store location"),
    ],
)
def test_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error) as info:
        parse_location(text)
    assert "secret" not in str(info.value)  # passwords never reach a message


def test_redacted_url_has_no_password() -> None:
    server = parse_location("postgresql://kam:hunter2@h:5432/k").server
    assert server is not None and server.redacted() == "postgresql://kam@h:5432/k"


def test_config_refuses_an_unsupported_scheme_in_url_and_in_path() -> None:
    for key in ("store.url", "store.path"):
        with pytest.raises(ConfigError, match="'ftp' is not supported"):
            load_config(overrides={key: "ftp://h/x"}, env={})
    cfg = load_config(overrides={"store.path": "postgresql://u@h/k"}, env={})
    assert cfg.store.location().kind == "postgresql"  # SIPFLEET_DB used to map to path
    cfg = load_config(env={"SIPFLEET_DB": "mysql://u@h/k"})
    assert cfg.store.location().kind == "mysql"
    cfg = load_config(overrides={"store.type": "list", "store.path": "d.list"}, env={})
    assert cfg.store.location() == StoreLocation("list", "d.list")


def _sipfleet(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sipfleet_command(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_run_with_an_unsupported_scheme_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    # It used to be taken for an SQLite path and create ./redis:/... folders.
    r = _sipfleet("run", "--db", "redis://127.0.0.1:6379/db", "--http", "off", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "scheme 'redis' is not supported" in r.stderr and "postgresql://" in r.stderr
    assert list(tmp_path.iterdir()) == []
    r = _sipfleet("db", "init", "--db", "ftp://h/x", cwd=tmp_path)
    assert r.returncode == 2 and "'ftp' is not supported" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_with_an_unreachable_server_says_so_and_creates_nothing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listen = f"udp:127.0.0.1:{port}"  # never bound: the store is opened first
    for url in (
        f"postgresql://u:pw@127.0.0.1:{port}/kamailio",
        f"mysql://u:pw@127.0.0.1:{port}/kamailio",
    ):
        r = _sipfleet("run", "--db", url, "--http", "off", "--listen", listen,
                      cwd=tmp_path)  # fmt: skip
        assert r.returncode == 2, r.stderr
        assert f"cannot start: cannot reach {url.replace(':pw', '')}" in r.stderr, r.stderr
        assert "pw@" not in r.stderr
        assert list(tmp_path.iterdir()) == []
