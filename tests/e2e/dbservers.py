"""Private PostgreSQL and MariaDB servers for the tests that need a database.

Each is started once per test session (pytest fixtures ``pg_server`` and
``mariadb_server``, registered by tests/conftest.py) on a free loopback port
with its own data directory, and stopped at the end. Tests make a database
each (``server.create_db()``) so they do not see each other's rows. A test is
skipped, with the reason, only when the server's binaries are not installed
(``scripts/test`` installs them).

Import by name (pyproject puts tests/e2e on the path)::

    import dbservers
    def test_x(pg_server: dbservers.PgServer):
        url = pg_server.create_db()
        pg_server.sql(url, "SELECT 1")

PostgreSQL refuses to run as root: as root the server runs as the
``postgres`` user (or ``nobody``) through ``runuser``, in a directory it owns.
MariaDB runs as root with ``--user=root``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from waits import wait_for

__all__ = [
    "MariaDbServer",
    "PgServer",
    "Relay",
    "kamailio_schema",
    "mariadb_server_fixture",
    "pg_server_fixture",
]

HOST = "127.0.0.1"
PASSWORD = "s3cret"
_START_TIMEOUT = 60.0
_names = itertools.count(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    def accepts() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return True
        return False

    wait_for(f"the server to listen on {port}", accepts, timeout, seen=lambda: _tail(log))


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def kamailio_schema(engine: str) -> list[Path]:
    """Kamailio's own schema files for ``engine`` ("postgres" or "mysql"):
    standard-create.sql (the version table) and dispatcher-create.sql, as
    kamdbctl runs them; skip if kamailio-{engine}-modules is not installed."""
    base = Path("/usr/share/kamailio") / engine
    files = [base / "standard-create.sql", base / "dispatcher-create.sql"]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        pytest.skip(
            f"Kamailio's schema files are missing ({', '.join(missing)}): "
            f"apt-get install kamailio-{'mysql' if engine == 'mysql' else 'postgres'}-modules"
        )
    return files


class PgServer:
    """A private PostgreSQL: superuser ``postgres`` with a password, on ``port``."""

    def __init__(self, base: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = Path(bins[-1]).parent
        self.base = base
        self.data = base / "data"
        self.log = base / "postgres.log"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = "postgres"
            try:
                pwd.getpwnam(user)
            except KeyError:
                user = "nobody"
            self._as = ["runuser", "-u", user, "--"]
            ent = pwd.getpwnam(user)
            os.chmod(base, 0o755)
            os.chown(base, ent.pw_uid, ent.pw_gid)

    def start(self) -> None:
        pwfile = self.base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            st = self.base.stat()
            os.chown(pwfile, st.st_uid, st.st_gid)
        subprocess.run(
            [*self._as, str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
             "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self._as, str(self.bindir / "postgres"), "-D", str(self.data),
                 "-p", str(self.port), "-k", str(self.base), "-c", f"listen_addresses={HOST}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        _wait_port(self.port, self.proc, self.log, _START_TIMEOUT)
        # Listening is not yet accepting: wait for a query to answer.
        answers: list[str] = []

        def answered() -> bool:
            r = self._psql("postgres", "SELECT 1", check=False)
            answers.append(repr(r.stderr))
            return r.returncode == 0

        wait_for("PostgreSQL to answer a query", answered, _START_TIMEOUT, 0.1,
                 seen=lambda: f"{answers[-1:]}\n{_tail(self.log)}")  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: smart shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def url(self, db: str = "postgres", *, scheme: str = "postgresql") -> str:
        return f"{scheme}://postgres:{PASSWORD}@{HOST}:{self.port}/{db}"

    def create_db(self) -> str:
        """A new empty database; its URL."""
        name = f"t{os.getpid()}_{next(_names)}"
        self._psql("postgres", f"CREATE DATABASE {name}")
        return self.url(name)

    def _psql(
        self, db: str, sql: str | None = None, *, file: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(self.port),
                "-U", "postgres", "-d", db, "-At"]  # fmt: skip
        argv += ["-f", str(file)] if file is not None else ["-c", sql or ""]
        r = subprocess.run(
            argv, capture_output=True, text=True, timeout=30,
            env={**os.environ, "PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "5"},
        )  # fmt: skip
        if check and r.returncode != 0:
            raise RuntimeError(f"psql {sql or file}: {r.stderr}")
        return r

    def sql(self, url: str, statement: str) -> list[list[str]]:
        """Run SQL with psql (as a provisioning tool would); rows as text."""
        out = self._psql(url.rsplit("/", 1)[1], statement).stdout
        return [line.split("|") for line in out.splitlines() if line]

    def run_file(self, url: str, path: Path) -> None:
        self._psql(url.rsplit("/", 1)[1], file=path)

    def kamailio_db(self) -> str:
        """A new database made with Kamailio's own schema files; its URL."""
        url = self.create_db()
        for f in kamailio_schema("postgres"):
            self.run_file(url, f)
        return url


class MariaDbServer:
    """A private MariaDB: user ``sipfleet`` with a password, on ``port``."""

    def __init__(self, base: Path) -> None:
        self.install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        self.daemon = shutil.which("mariadbd") or (
            "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None
        )
        self.client = shutil.which("mariadb") or shutil.which("mysql")
        if not (self.install and self.daemon and self.client):
            pytest.skip("MariaDB is not installed (apt-get install mariadb-server)")
        self.base = base
        self.data = base / "data"
        self.socket = base / "mysqld.sock"
        self.log = base / "mariadb.log"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = "sipfleet"

    def _common(self) -> list[str]:
        user = ["--user=root"] if os.geteuid() == 0 else []
        return ["--no-defaults", f"--datadir={self.data}", *user]

    def start(self) -> None:
        assert self.install and self.daemon
        subprocess.run(
            [self.install, *self._common(), "--auth-root-authentication-method=normal",
             "--skip-test-db", "--skip-name-resolve"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.daemon, *self._common(), f"--socket={self.socket}", f"--port={self.port}",
                 f"--bind-address={HOST}", f"--pid-file={self.base / 'mysqld.pid'}",
                 "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
                 "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin", "--max-connections=200"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        _wait_port(self.port, self.proc, self.log, _START_TIMEOUT)
        self._client(
            None,
            f"CREATE USER '{self.user}'@'%' IDENTIFIED BY '{PASSWORD}'; "
            f"GRANT ALL ON *.* TO '{self.user}'@'%'; FLUSH PRIVILEGES;",
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def url(self, db: str, *, scheme: str = "mysql") -> str:
        return f"{scheme}://{self.user}:{PASSWORD}@{HOST}:{self.port}/{db}"

    def create_db(self) -> str:
        name = f"t{os.getpid()}_{next(_names)}"
        self._client(None, f"CREATE DATABASE {name}")
        return self.url(name)

    def _client(
        self, db: str | None, sql: str, *, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        assert self.client
        argv = [self.client, "--no-defaults", f"--socket={self.socket}", "-u", "root",
                "--batch", "--skip-column-names"]  # fmt: skip
        if db:
            argv.append(db)
        if sql:
            argv += ["-e", sql]
        r = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"mariadb {sql or '<file>'}: {r.stderr}")
        return r

    def sql(self, url: str, statement: str) -> list[list[str]]:
        out = self._client(url.rsplit("/", 1)[1], statement).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def run_file(self, url: str, path: Path) -> None:
        self._client(url.rsplit("/", 1)[1], "", stdin=path.read_text())

    def kamailio_db(self) -> str:
        url = self.create_db()
        for f in kamailio_schema("mysql"):
            self.run_file(url, f)
        return url


class Relay:
    """A TCP relay to ``127.0.0.1:target`` that a test can cut and restore: the server
    unreachable for whoever connects through ``port``, without stopping it (it is
    shared by the session). Threads, so sync tests and event loops can both use it;
    at most ``MAX_CONNECTIONS`` relayed at once."""

    MAX_CONNECTIONS = 64

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server((HOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self.up = True
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def url(self, url: str) -> str:
        """``url`` with the server's port replaced by the relay's."""
        return url.replace(f":{self.target}/", f":{self.port}/")

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                full = len(self._socks) >= 2 * self.MAX_CONNECTIONS
            if not self.up or full:
                down.close()
                continue
            try:
                up = socket.create_connection((HOST, self.target), 5)
            except OSError:
                down.close()
                continue
            with self._lock:
                self._socks.update((down, up))
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._socks.discard(src)
        with contextlib.suppress(OSError):
            src.close()

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones."""
        self.up = False
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


@contextlib.contextmanager
def _running(server: PgServer | MariaDbServer) -> Iterator[None]:
    try:
        server.start()
        yield
    finally:
        server.stop()


@pytest.fixture(scope="session", name="pg_server")
def pg_server_fixture() -> Iterator[PgServer]:
    # Not under pytest's temp dir: that is mode 700 to root, and PostgreSQL runs
    # as another user.
    base = Path(tempfile.mkdtemp(prefix="sipfleet-pg-"))
    try:
        server = PgServer(base)
        with _running(server):
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", name="mariadb_server")
def mariadb_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDbServer]:
    base = tmp_path_factory.mktemp("mariadb")
    server = MariaDbServer(base)
    with _running(server):
        yield server
