"""Unix socket and FIFO files for the control transports.

Files are created with their final mode before anyone can connect (a stream
socket is chmod-ed between bind and listen), a stale file of the same kind
is replaced as Kamailio does, anything else in the way is an error, and at
stop only the file we made is removed (not a successor's).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from sipfleet.config.control import SocketConfig

__all__ = ["OwnedPath", "Perms", "bind_unix", "make_fifo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Perms:
    mode: int = 0o600
    uid: int = -1
    gid: int = -1

    @classmethod
    def from_config(cls, cfg: SocketConfig) -> Perms:
        uid = gid = -1
        if isinstance(cfg.owner, int) or (isinstance(cfg.owner, str) and cfg.owner.isdigit()):
            uid = int(cfg.owner)
        elif cfg.owner:
            try:
                uid = pwd.getpwnam(cfg.owner).pw_uid
            except KeyError:
                raise ValueError(f"control.socket.owner: no user {cfg.owner!r}") from None
        if isinstance(cfg.group, int) or (isinstance(cfg.group, str) and cfg.group.isdigit()):
            gid = int(cfg.group)
        elif cfg.group:
            try:
                gid = grp.getgrnam(cfg.group).gr_gid
            except KeyError:
                raise ValueError(f"control.socket.group: no group {cfg.group!r}") from None
        return cls(cfg.mode, uid, gid)

    def apply(self, path: Path) -> None:
        os.chmod(path, self.mode)
        if self.uid != -1 or self.gid != -1:
            os.chown(path, self.uid, self.gid)


@dataclass(frozen=True, slots=True)
class OwnedPath:
    """A file we created; removed at stop only if it is still that file."""

    path: Path
    ino: int
    dev: int

    @classmethod
    def of(cls, path: Path) -> OwnedPath:
        st = path.lstat()
        return cls(path, st.st_ino, st.st_dev)

    def remove(self) -> None:
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if (st.st_ino, st.st_dev) == (self.ino, self.dev):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _clear_stale(path: Path, want: int, *, probe: bool) -> None:
    """Remove a leftover socket/FIFO at ``path``; refuse anything else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_IFMT(st.st_mode) != want:
        raise FileExistsError(
            f"{path} exists and is not a {'FIFO' if want == stat.S_IFIFO else 'socket'}; not replacing it"
        )
    if probe:
        # A live server answers connect(): do not steal its socket.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect(str(path))
            except OSError:
                pass
            else:
                raise FileExistsError(f"{path} is in use by a running server (another sipfleet?)")
    log.info("control: removing stale %s", path)
    path.unlink()


def bind_unix(
    path: Path, kind: socket.SocketKind, perms: Perms, *, backlog: int = 64
) -> tuple[socket.socket, OwnedPath]:
    """A bound (and for streams, listening) unix socket with ``perms`` applied."""
    _clear_stale(path, stat.S_IFSOCK, probe=kind == socket.SOCK_STREAM)
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(str(path))
        owned = OwnedPath.of(path)
        perms.apply(path)
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return sock, owned


def make_fifo(path: Path, perms: Perms) -> OwnedPath:
    _clear_stale(path, stat.S_IFIFO, probe=False)
    os.mkfifo(path, perms.mode)
    owned = OwnedPath.of(path)
    perms.apply(path)  # mkfifo's mode is filtered by the umask
    return owned
