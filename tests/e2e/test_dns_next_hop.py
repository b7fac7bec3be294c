"""Destinations named by DNS: the dispatcher resolves them when it loads, and
the SIP adapter resolves next hops taken from headers (off the loop)."""

from __future__ import annotations

import fleet
import pytest
import sipp as harness

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def test_destination_named_localhost(sipp_env):
    uas = fleet.uas(sipp_env)
    named = uas.uri.replace("127.0.0.1", "localhost")
    proxy = fleet.proxy(sipp_env, [fleet.Dest(named)])
    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=50, rate=50).wait()
    assert (r.successful, r.failed) == (50, 0), r.summary()
    assert len(uas.invites()) == 50
