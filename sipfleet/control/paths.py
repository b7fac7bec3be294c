"""Where the control sockets live: one lookup shared by the server and the CLI.

Order: ``--run-dir``, then ``$SIPFLEET_RUN_DIR``, then ``/run/sipfleet``
when we may write there, then ``$XDG_RUNTIME_DIR/sipfleet``, then
``/tmp/sipfleet-<uid>`` (a stable name, so the CLI finds it again). The
server takes the first directory it can create and write; the CLI takes the
first that holds the socket it wants, so a root server and a root CLI meet
in /run/sipfleet, a user's in their XDG or temp dir.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BINRPC_SOCKET",
    "DGRAM_SOCKET",
    "ENV_RUN_DIR",
    "FIFO_NAME",
    "SYSTEM_RUN_DIR",
    "RunDir",
    "RunDirError",
    "find_run_dir",
    "prepare_run_dir",
    "run_dir_candidates",
]

ENV_RUN_DIR = "SIPFLEET_RUN_DIR"
SYSTEM_RUN_DIR = Path("/run/sipfleet")
BINRPC_SOCKET = "sipfleet_ctl"
FIFO_NAME = "sipfleet_rpc.fifo"
DGRAM_SOCKET = "sipfleet_rpc.sock"


class RunDirError(OSError):
    """No usable run directory; the message says what was tried."""


@dataclass(frozen=True, slots=True)
class RunDir:
    path: Path
    source: str
    """Where the choice came from: "--run-dir", "SIPFLEET_RUN_DIR", "/run",
    "XDG_RUNTIME_DIR" or "temp"."""


def run_dir_candidates(
    explicit: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[RunDir]:
    env = os.environ if env is None else env
    if explicit:
        return [RunDir(Path(explicit), "--run-dir")]
    if env.get(ENV_RUN_DIR):
        return [RunDir(Path(env[ENV_RUN_DIR]), ENV_RUN_DIR)]
    found = [RunDir(SYSTEM_RUN_DIR, "/run")]
    if env.get("XDG_RUNTIME_DIR"):
        found.append(RunDir(Path(env["XDG_RUNTIME_DIR"]) / "sipfleet", "XDG_RUNTIME_DIR"))
    found.append(RunDir(Path(tempfile.gettempdir()) / f"sipfleet-{os.getuid()}", "temp"))
    return found


def _usable(rd: RunDir) -> str | None:
    """Create ``rd`` if needed; None when usable, else why not."""
    shared_tmp = rd.source == "temp"
    # Our own temp dir is private: others must not plant sockets in it.
    mode = 0o700 if shared_tmp or rd.source == "XDG_RUNTIME_DIR" else 0o755
    try:
        rd.path.mkdir(mode=mode, parents=rd.source in ("--run-dir", ENV_RUN_DIR), exist_ok=True)
        st = rd.path.lstat()
    except OSError as e:
        return f"{rd.path}: {e.strerror or e}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{rd.path}: not a directory"
    if shared_tmp and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        return f"{rd.path}: owned by uid {st.st_uid} or writable by others"
    if not os.access(rd.path, os.W_OK | os.X_OK):
        return f"{rd.path}: not writable"
    return None


def prepare_run_dir(
    explicit: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> RunDir:
    """The server's run directory, created if missing."""
    problems: list[str] = []
    for rd in run_dir_candidates(explicit, env):
        problem = _usable(rd)
        if problem is None:
            return rd
        problems.append(problem)
    raise RunDirError("no usable run directory: " + "; ".join(problems))


def find_run_dir(
    socket_name: str = BINRPC_SOCKET,
    explicit: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[RunDir, list[Path]]:
    """The client's run directory: the first holding ``socket_name``.

    Returns it and every socket path looked at; when none exists, the first
    candidate (so the error names where the server would be).
    """
    candidates = run_dir_candidates(explicit, env)
    tried = [rd.path / socket_name for rd in candidates]
    for rd, path in zip(candidates, tried, strict=True):
        if path.exists():
            return rd, tried
    return candidates[0], tried
