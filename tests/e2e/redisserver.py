"""A private Redis server for the cluster tests.

``redis_server`` (a session fixture) starts Debian's ``redis-server`` on a
free loopback port with its own directory and no persistence; tests use
their own key prefix so they do not see each other. ``stop()`` and
``start()`` kill and bring it back on the same port (the "Redis dies
mid-run" tests). A test is skipped only when redis-server is not installed
(``scripts/test`` installs it).

Import by name (pyproject puts tests/e2e on the path)::

    from redisserver import RedisServer, redis_server_fixture  # noqa: F401
    def test_x(redis_server: RedisServer): ...
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from waits import wait_for

__all__ = ["RedisServer", "redis_server_fixture"]

HOST = "127.0.0.1"
_START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = _free_port()
        self.log = base / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (scripts/test installs it)")
        argv = [
            exe,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.base),
            "--logfile", str(self.log),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def tail() -> str:
            return self.log.read_text()[-2000:] if self.log.exists() else ""

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start:\n{tail()}")
            return self.ping()

        wait_for("redis-server to answer PING", up, _START_TIMEOUT, 0.02, seen=tail)

    def stop(self) -> None:
        """SIGKILL: as a crash, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
