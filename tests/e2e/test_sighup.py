"""SIGHUP: the config file is read again ([[route]], [dispatcher], [log] apply at
once) and the destinations are reloaded, without dropping anything."""

from __future__ import annotations

import signal
from pathlib import Path

import fleet
import pytest
import sipp as harness

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def test_sighup_applies_new_routes_and_destinations(sipp_env):
    a, b = fleet.uas(sipp_env), fleet.uas(sipp_env)
    proxy = fleet.proxy(
        sipp_env,
        [fleet.Dest(a, set_id=1), fleet.Dest(b, set_id=2)],
        routes=[{"name": "all", "sets": [1]}],
        dispatcher={"reload_delta": 0},
    )
    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=10, rate=50).wait()
    assert (r.successful, r.failed) == (10, 0) and (len(a.invites()), len(b.invites())) == (10, 0)

    proxy.routes = [{"name": "all", "sets": [2]}]
    proxy.config_path.write_text(proxy.config_text())
    c = fleet.uas(sipp_env)
    proxy.rewrite_list([fleet.Dest(a, set_id=1), fleet.Dest(b, set_id=2), fleet.Dest(c, set_id=2)])
    proxy.popen.send_signal(signal.SIGHUP)
    fleet.wait_for("the new destination", lambda: c.uri in proxy.targets(), 15.0, 0.05)
    # The reload's log line comes once the new list and routes are in use.
    fleet.wait_for(
        "the SIGHUP reload done",
        lambda: b"reloaded by SIGHUP" in Path(proxy.stderr_path).read_bytes(),
        15.0,
        0.05,
    )

    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=10, rate=50).wait()
    assert (r.successful, r.failed) == (10, 0), r.summary()
    assert len(a.invites()) == 10  # set 1 gets nothing now
    assert len(b.invites()) + len(c.invites()) == 10 and len(c.invites()) > 0

    # A broken config is refused with a clear log line; the proxy keeps serving.
    proxy.config_path.write_text(proxy.config_text() + "\n[dispatcher]\nalgorithm = 99\n")
    proxy.popen.send_signal(signal.SIGHUP)
    fleet.wait_for(
        "the refusal",
        lambda: b"config not reloaded" in Path(proxy.stderr_path).read_bytes(),
        15.0,
        0.05,
    )
    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=5, rate=50).wait()
    assert (r.successful, r.failed) == (5, 0), r.summary()
