"""Dialog ids survive a restart (issue 10): four held calls, SIGKILL, restart,
four more held calls; ``dlg.list`` shows eight dialogs with eight distinct
``(h_entry, h_id)``, the restored ones keep their ids, and ``dlg.end_dlg`` on a
restored one ends that call only."""

from __future__ import annotations

from typing import Any

import fleet
import pytest
import sipp as harness

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def _ids(proxy: Any) -> dict[str, tuple[int, int]]:
    return {d["call-id"]: (d["h_entry"], d["h_id"]) for d in proxy.rpc("dlg.list")}


def _confirmed(proxy: Any, n: int) -> dict[str, tuple[int, int]] | None:
    dialogs = proxy.rpc("dlg.list")
    if len(dialogs) == n and all(d["state"] == 4 for d in dialogs):
        return {d["call-id"]: (d["h_entry"], d["h_id"]) for d in dialogs}
    return None


def test_dialog_ids_survive_a_restart_and_end_dlg_ends_only_that_call(sipp_env: Any) -> None:
    uas = sipp_env.uas("uas_rr.xml")
    proxy = fleet.proxy(sipp_env, [fleet.Dest(uas)])
    # The caller waits for the callee's BYE, the callee for the caller's: the calls
    # stay up until dlg.end_dlg sends both.
    first = sipp_env.start_uac("uac_callee_bye.xml", proxy, calls=4, rate=20)
    before = fleet.wait_for("four confirmed dialogs", lambda: _confirmed(proxy, 4), 15)
    proxy.wait_stored(set(before))  # past the dialog store's write-behind batch (200 ms)
    proxy.restart()
    assert _ids(proxy) == before  # restored, same ids
    second = sipp_env.start_uac("uac_callee_bye.xml", proxy, calls=4, rate=20)
    after = fleet.wait_for("eight dialogs", lambda: _confirmed(proxy, 8), 15)
    assert {k: after[k] for k in before} == before
    assert len(set(after.values())) == 8
    # End one restored call: only that one goes.
    victim = sorted(before)[0]
    h_entry, h_id = before[victim]
    proxy.rpc("dlg.end_dlg", h_entry, h_id)
    left = fleet.wait_for("seven dialogs", lambda: _confirmed(proxy, 7), 10)
    assert victim not in left and set(left) == set(after) - {victim}
    # Hang up the rest the same way; every SIPp call then completes.
    for h_entry, h_id in left.values():
        proxy.rpc("dlg.end_dlg", h_entry, h_id)
    r1, r2 = first.wait(), second.wait()
    assert (r1.successful, r1.failed, r2.successful, r2.failed) == (4, 0, 4, 0), sipp_env.report()
    assert proxy.rpc("dlg.list") == []
