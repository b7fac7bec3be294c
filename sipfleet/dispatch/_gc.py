"""Pausing the cyclic garbage collector around bulk builds."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building large acyclic structures.

    A 100k-entry reload allocates some 500k objects that all survive; the
    collector would walk the growing heap again and again, a third of the
    build time. Nothing built here forms cycles and reference counting
    still frees everything, so pausing loses nothing.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
