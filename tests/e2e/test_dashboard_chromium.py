"""Issue 13's dashboard acceptance: Chromium (Debian's, driven by Playwright through its
executable path: no browser download) opens the dashboard of a ``sipfleet run`` while a
SIPp UAC places calls over three SIPp UAS, drains one by clicking, sees its state change
on the page, and the UAS's own log shows that no new call reached it afterwards.

Each run saves a screenshot in the test's tmp dir; with SIPFLEET_SCREENSHOT=PATH it is
also written there, after a longer run so the chart has history (the README's image)::

    SIPFLEET_SCREENSHOT=docs/dashboard.png .venv/bin/pytest tests/e2e/test_dashboard_chromium.py
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fleet
import pytest
import sipp as harness

sipp_env = harness.sipp_env
Dest = fleet.Dest
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TIMEOUT_MS = 15_000


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("chromium is not installed (Debian package chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def _open(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.errors = errors  # checked at the end: the page's script must not throw
    return page


def test_drain_by_click_stops_new_calls(sipp_env, browser, tmp_path: Path):
    uas = [fleet.uas(sipp_env, probe=True, extra=["-recv_timeout", "30000"]) for _ in range(3)]
    a, b, c = uas
    dests = [Dest(u, flags=8, attrs=f"duid={n}") for n, u in zip("abc", uas, strict=True)]
    probing = {"ping_interval": 1, "probing_mode": 1}  # the latency column fills in
    proxy = fleet.proxy(sipp_env, dests, dispatcher={"algorithm": 4, **probing})
    uac = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=2000, rate=30, duration_ms=1000)
    before = 200 if os.environ.get("SIPFLEET_SCREENSHOT") else 5  # chart history
    fleet.wait_for("calls on every UAS", lambda: all(len(u.invites()) >= before for u in uas), 30)

    page = _open(browser, f"http://127.0.0.1:{proxy.http_port}/")
    row = page.locator(f'tr[data-uri="{b.uri}"]')
    row.locator("span.st", has_text="active").wait_for()
    # Live: the stream moves the counters without a reload.
    first = int(row.locator("td.routed").inner_text())
    page.wait_for_function(
        '([uri, n]) => +document.querySelector(`tr[data-uri="${uri}"] td.routed`).textContent > n',
        arg=[b.uri, first],
    )
    assert page.locator("#conn").inner_text() == "live"

    row.locator("button.act-drain").click()
    dialog = page.locator("#confirm")
    assert dialog.is_visible()
    assert "Drain " + b.uri in page.locator("#confirm-text").inner_text()
    page.locator("#confirm-ok").click()
    page.locator("#result.ok").wait_for()
    assert "dispatcher.drain" in page.locator("#result").inner_text()
    row.locator("span.st", has_text="draining").wait_for()
    assert row.get_attribute("data-state") == "draining"
    assert row.locator("button.act-undrain").is_visible()
    assert not row.locator("button.act-drain").is_visible()
    page.locator("#events li", has_text="state-changed").first.wait_for()
    assert (
        "by=http 127.0.0.1"
        in page.locator("#events li", has_text="state-changed").first.inner_text()
    )

    # What the UAS saw: nothing new on b once the page showed it draining, while a and
    # c keep getting calls; the drain ends (calls of 1 s) and the page says so.
    on_b = len(b.invites())
    others = len(a.invites()) + len(c.invites())
    fleet.wait_for(
        "40 more calls on a and c",
        lambda: len(a.invites()) + len(c.invites()) >= others + 40,
        15,
    )
    assert len(b.invites()) == on_b
    assert proxy.rpc("dispatcher.drain_status", 1, b.uri)[0]["STATE"] == "draining"
    page.locator("#events li", has_text="drained").first.wait_for()
    page.wait_for_function(
        "uri => document.querySelector(`tr[data-uri=\"${uri}\"] td.active`).textContent === '0'",
        arg=b.uri,
    )
    target = os.environ.get("SIPFLEET_SCREENSHOT")
    # One more tick (the chart shows b's line at 0); for the README's picture, enough
    # for two minutes of chart history on each side of the drain.
    # sleep-ok: what the screenshot shows (chart history), nothing the test awaits
    time.sleep(20.0 if target else 1.2)
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target)

    # Undrain by clicking: b takes calls again.
    row.locator("button.act-undrain").click()
    page.locator("#confirm-ok").click()
    row.locator("span.st", has_text="active").wait_for()
    fleet.wait_for("calls on b again", lambda: len(b.invites()) > on_b, 10)

    # Disable and enable c; a cancelled confirmation changes nothing; reload.
    row_c = page.locator(f'tr[data-uri="{c.uri}"]')
    row_c.locator("button.act-disable").click()
    page.locator("#confirm-cancel").click()
    assert not dialog.is_visible()
    assert proxy.flags()[c.uri] == "AP"
    row_c.locator("button.act-disable").click()
    page.locator("#confirm-ok").click()
    row_c.locator("span.st", has_text="disabled").wait_for()
    assert proxy.flags()[c.uri] == "DX"
    row_c.locator("button.act-enable").click()
    page.locator("#confirm-ok").click()
    row_c.locator("span.st", has_text="active").wait_for()
    assert proxy.flags()[c.uri] == "AP"
    page.locator("#reload").click()
    page.locator("#confirm-ok").click()
    page.locator("#result.ok", has_text="dispatcher.reload").wait_for()
    assert "Dispatcher successfully reloaded" in page.locator("#result").inner_text()
    assert page.errors == []
    uac.terminate(harness.signal.SIGKILL, grace=0)


def test_with_a_token_the_page_asks_for_it_and_keeps_it_in_the_tab(sipp_env, browser):
    """[control.http] token set: the page loads, its data does not; a wrong token is
    refused, the right one connects, is kept for the tab (a reload needs no login) and
    goes with each action; /metrics wants it too."""
    a, b = fleet.uas(sipp_env), fleet.uas(sipp_env)
    proxy = fleet.Fleet(
        sipp_env._dir("sipfleet"),
        [Dest(a, attrs="duid=a"), Dest(b, attrs="duid=b")],
        {"first_response_timeout": 1.0},
        {},
    )
    proxy.sections["control.http"]["token"] = proxy.token = "s3cret-token-0123456789"
    sipp_env.procs.append(proxy)
    proxy.start()
    base = f"http://127.0.0.1:{proxy.http_port}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + "/metrics", timeout=5)
    assert refused.value.code == 401
    refused.value.close()
    req = urllib.request.Request(
        base + "/metrics", headers={"Authorization": "Bearer s3cret-token-0123456789"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert b"sipfleet_destination_up{" in resp.read()

    page = _open(browser, base + "/")
    page.locator("#login").wait_for()
    assert page.locator("#conn").inner_text() == "token needed"
    assert page.locator("#sets tr").count() == 0
    page.locator("#token").fill("wrong")
    page.locator("#login-go").click()
    page.wait_for_function("document.getElementById('conn').textContent === 'token needed'")
    page.locator("#token").fill("s3cret-token-0123456789")
    page.locator("#token").press("Enter")
    row = page.locator(f'tr[data-uri="{a.uri}"]')
    row.locator("span.st", has_text="active").wait_for()
    assert page.locator("#login").is_hidden()
    assert page.evaluate("sessionStorage.getItem('sipfleet-token')") == "s3cret-token-0123456789"

    page.reload()
    row.locator("span.st", has_text="active").wait_for()
    assert page.locator("#login").is_hidden()
    row.locator("button.act-disable").click()
    page.locator("#confirm-ok").click()
    row.locator("span.st", has_text="disabled").wait_for()
    assert proxy.flags()[a.uri].startswith("D")
    assert page.errors == []
