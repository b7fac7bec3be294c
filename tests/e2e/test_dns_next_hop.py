"""Destinations named by DNS: the dispatcher resolves them when it loads, and
the SIP adapter resolves next hops taken from headers (off the loop)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest


def _load(name: str, filename: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(filename))
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


harness = _load("sipfleet_e2e_sipp", "sipp.py")
fleet = _load("sipfleet_e2e_fleet", "fleet.py")
sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def test_destination_named_localhost(sipp_env):
    uas = fleet.uas(sipp_env)
    named = uas.uri.replace("127.0.0.1", "localhost")
    proxy = fleet.proxy(sipp_env, [fleet.Dest(named)])
    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=50, rate=50).wait()
    assert (r.successful, r.failed) == (50, 0), r.summary()
    assert len(uas.invites()) == 50
