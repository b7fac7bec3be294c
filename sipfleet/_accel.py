"""Which modules mypyc compiles, and whether they are.

These are the modules every SIP message passes through. They stay plain
Python; compiled, Python imports the extension next to each .py instead.
``setup.py`` compiles them whenever the package is built (``pip install``,
``pip wheel``, ``python -m build``, the editable install) and
``scripts/build_accel.py`` rebuilds them in the checkout.
"""

from __future__ import annotations

import importlib
import sys
import sysconfig
from pathlib import Path

__all__ = ["MODULES", "describe", "stale", "status"]

MODULES: tuple[str, ...] = (
    "sipfleet.sip.errors",
    "sipfleet.sip.uri",
    "sipfleet.sip.address",
    "sipfleet.sip.via",
    "sipfleet.sip.message",
    "sipfleet.sip.build",
    "sipfleet.transaction.timers",
    "sipfleet.transaction.server",
    "sipfleet.transaction.client",
    "sipfleet.transaction.table",
    "sipfleet.security.settings",
    "sipfleet.security.trunks",
    "sipfleet.security.bans",
    "sipfleet.security.sources",
    "sipfleet.security.gate",
    "sipfleet.proxy.net",
    "sipfleet.proxy.router",
    "sipfleet.proxy.branch",
    "sipfleet.proxy.routesig",
    "sipfleet.proxy.context",
    "sipfleet.proxy.dialogs",
    "sipfleet.proxy.headers",
    "sipfleet.proxy.core",
    "sipfleet.dispatch.flags",
    "sipfleet.dispatch.hashing",
    "sipfleet.dispatch.state",
    "sipfleet.dispatch.health",
    "sipfleet.dispatch.runtime",
    "sipfleet.dispatch.select",
    "sipfleet.dispatch.errors",
    "sipfleet.dispatch.attrs",
    "sipfleet.dispatch.destination",
    "sipfleet.dispatch.avl",
    "sipfleet.dispatch.listfile",
    "sipfleet.dispatch.snapshot",
    "sipfleet.dispatch.listing",
    "sipfleet.dispatch.generation",
    "sipfleet.dispatch.target",
    "sipfleet.dispatch.admin",
    "sipfleet.dispatch.latency",
    "sipfleet.dispatch.overload",
    "sipfleet.dispatch.probing",
    "sipfleet.dispatch.dispatcher",
    "sipfleet.dispatch.policy",
    "sipfleet.aio.udp",
)


def status() -> dict[str, bool]:
    """Module -> compiled (an extension module was imported)."""
    out = {}
    for name in MODULES:
        mod = sys.modules.get(name) or importlib.import_module(name)
        path = getattr(mod, "__file__", "") or ""
        out[name] = not path.endswith(".py")
    return out


def describe() -> str:
    """Which core runs, for the start log line, ``--version`` and ``core.info``."""
    compiled = sum(status().values())
    if compiled == len(MODULES):
        return f"compiled with mypyc ({compiled} modules)"
    if compiled:
        return f"partly compiled with mypyc ({compiled} of {len(MODULES)} modules)"
    return "pure Python"


def stale() -> list[str]:
    """Compiled modules whose source changed since they were built.

    Paths come from the package directory, not the modules' ``__file__``:
    mypyc sets that from where its shared runtime lives.
    """
    root = Path(__file__).resolve().parent.parent
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    out = []
    for name in MODULES:
        src = root.joinpath(*name.split(".")).with_suffix(".py")
        ext = src.with_name(src.stem + suffix)
        if ext.exists() and src.exists() and src.stat().st_mtime > ext.stat().st_mtime:
            out.append(name)
    return out
