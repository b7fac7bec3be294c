"""``core.version``, ``core.uptime`` and ``core.info`` in Kamailio's shapes.

Kamailio 5.6.3 answers (measured)::

    core.version  "kamailio 5.6.3 (x86_64/linux) "
    core.uptime   {"now": "Fri Nov 27 14:32:18 2026",
                   "up_since": "Fri Nov 27 14:32:14 2026", "uptime": 4}
    core.info     {"version": "kamailio 5.6.3", "id": "unknown ",
                   "compiler": "gcc 12.2.0", "compiled": "", "flags": "USE_TCP, ..."}

The values here are sipfleet's; the clock is injected so tests need no
sleeping and the registry stays free of the event loop. ``compiled`` (in
Kamailio the build time) says which core runs: "compiled with mypyc (30
modules)" or "pure Python".
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sipfleet import __version__, _accel
from sipfleet.control.registry import Registry

__all__ = ["ServerInfo", "package_version", "register_core_methods"]


def package_version() -> str:
    return __version__


@dataclass(frozen=True)
class ServerInfo:
    """What core.* report. ``started_at`` and ``now()`` are wall-clock seconds."""

    started_at: float
    now: Callable[[], float] = time.time
    name: str = "sipfleet"
    version: str = field(default_factory=package_version)
    repo_id: str = "unknown"
    flags: Sequence[str] = ()
    #: Trouble to report in core.info, e.g. {"store": "unreachable: ..."}; empty
    #: when all is well, so core.info keeps Kamailio's shape then.
    alerts: Callable[[], dict[str, object]] = dict

    core: str = field(default_factory=_accel.describe)

    @property
    def compiler(self) -> str:
        return f"{platform.python_implementation()} {platform.python_version()}"

    @property
    def full_version(self) -> str:
        machine = platform.machine() or "unknown"
        system = sys.platform
        return f"{self.name} {self.version} ({machine}/{system})"


def register_core_methods(registry: Registry, info: ServerInfo) -> None:
    def version() -> str:
        return info.full_version

    def uptime() -> dict[str, object]:
        now = info.now()
        return {
            "now": time.ctime(now),
            "up_since": time.ctime(info.started_at),
            "uptime": max(0, int(now - info.started_at)),
        }

    def core_info() -> dict[str, object]:
        return {
            "version": f"{info.name} {info.version}",
            "id": info.repo_id,
            "compiler": info.compiler,
            "compiled": info.core,
            "flags": ", ".join(info.flags),
            **info.alerts(),
        }

    registry.add("core.version", version, doc="Returns the version string of the server.")
    registry.add("core.uptime", uptime, doc="Returns uptime of SIP server.")
    registry.add(
        "core.info",
        core_info,
        doc="Verbose info, including version number, compile flags, compiler,repository hash a.s.o.",
    )
