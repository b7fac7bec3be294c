"""``sipfleet demo`` end to end: its caller's calls reach all three built-in back ends,
a drain over RPC during the demo moves new calls off one of them, ``sipfleet top
--once`` against it shows the fleet, and the demo exits 0 after --duration."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest
from sipp import free_port, sipfleet_command

pytestmark = pytest.mark.e2e

LINE = re.compile(r"t=\S+ placed=(\d+) answered=(\d+) failed=(\d+) up=\d+ \| (.*)")


def _rpc(url: str, method: str, *params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        doc = json.loads(resp.read())
    assert "error" not in doc, doc
    return doc["result"]


def _reader(stream: IO[str], out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line.rstrip("\n"))
    out.put(None)


def _counts(rest: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r"(demo-\d) (\d+) \(", rest)}


def test_demo_drain_moves_calls_and_top_once(tmp_path: Path) -> None:
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}/RPC"
    argv = [
        *sipfleet_command(),
        "demo",
        "--duration", "9",
        "--rate", "20",
        "--hold", "0.2-0.8",
        "--interval", "0.5",
        "--plain",
        "--http-port", str(http_port),
        "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    lines: queue.Queue[str | None] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []

    def next_counts(deadline: float) -> dict[str, int]:
        while True:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert line is not None, "the demo ended early:\n" + "\n".join(seen)
            seen.append(line)
            m = LINE.match(line)
            if m:
                return _counts(m[4])

    with proc:
        rest = _drive(proc, lines, seen, url, http_port, next_counts)
    summary = "\n".join(rest[0])
    after = rest[1]
    _check(summary, after)


def _drive(
    proc: subprocess.Popen[str],
    lines: queue.Queue[str | None],
    seen: list[str],
    url: str,
    http_port: int,
    next_counts: Any,
) -> tuple[list[str], dict[str, int]]:
    try:
        deadline = time.monotonic() + 30
        while True:  # every back end takes calls
            counts = next_counts(deadline)
            if len(counts) == 3 and min(counts.values()) >= 3:
                break
        assert "dashboard  http://127.0.0.1:%d/" % http_port in "\n".join(seen)
        assert any("dispatcher drain demo-2" in s for s in seen)

        (row,) = _rpc(url, "dispatcher.drain", "demo-2")
        assert row["STATE"] == "draining"
        next_counts(time.monotonic() + 10)
        after = next_counts(time.monotonic() + 10)  # calls routed before the drain are in

        top = subprocess.run(
            [*sipfleet_command(), "top", "--once", "--interval", "0.5", "--url", url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert top.returncode == 0, top.stderr
        frame = top.stdout
        assert "calls/s" in frame and "recent events" in frame
        demo2 = next(line for line in frame.splitlines() if "demo-2" in line and "sip:" in line)
        assert "draining" in demo2
        for name in ("demo-1", "demo-3"):
            assert re.search(rf"{name}\s+sip:127\.0\.0\.1:\d+\s+active", frame), frame
        assert "state-changed" in frame

        rest: list[str] = []
        while True:
            line = lines.get(timeout=60)
            if line is None:
                break
            rest.append(line)
        code = proc.wait(timeout=30)
        assert code == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rest, after


def _check(summary: str, after: dict[str, int]) -> None:
    final = {m[0]: int(m[1]) for m in re.findall(r"(demo-\d): (\d+) calls", summary)}
    assert set(final) == {"demo-1", "demo-2", "demo-3"}, summary
    # No new call reached demo-2 after the drain; the others kept taking calls.
    assert final["demo-2"] == after["demo-2"], (after, final)
    assert final["demo-1"] > after["demo-1"] and final["demo-3"] > after["demo-3"], (after, final)
    m = re.search(r"(\d+) calls placed, (\d+) answered, (\d+) failed", summary)
    assert m is not None and int(m[2]) == int(m[1]) and int(m[3]) == 0, summary


def test_top_once_unreachable(tmp_path: Path) -> None:
    out = subprocess.run(
        [*sipfleet_command(), "top", "--once", "--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "cannot reach sipfleet" in out.stdout
