"""Small helpers shared by the stores."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sipfleet.dispatch.destination import StateKey, normalize_uri

__all__ = ["atomic_write", "state_key"]


def state_key(set_id: int, uri: str) -> StateKey:
    """The key a destination's state is kept under; raise ValueError on a bad URI."""
    return (set_id, normalize_uri(uri).lower())


def atomic_write(path: Path, text: str) -> None:
    """Write a file so a reader sees the old or the new content, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
