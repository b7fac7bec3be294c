"""Rules for the tests themselves, checked on the source with ``ast``.

- No fixed waits: a ``time.sleep`` or ``asyncio.sleep`` anywhere in the tests must carry ``# sleep-ok: <why>`` on its line (or in the comment right above),
  saying why it is not a wait for something to happen: a pause that is the behaviour
  under test ("nothing arrives within 0.5 s"), the pacing of a sender, a time window
  that must pass by the clock (reload_delta), the poll interval of a bounded wait. Everything
  else waits on its condition with ``waits.wait_for`` / ``wait_for_async`` and a
  generous deadline: a sleep that is long enough on an idle machine is too short on a
  loaded one.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
#: Where the rule holds: every test (the pure core's tests run on a fake clock and
#: have no reason to sleep at all).
CHECKED = (".",)
MARK = re.compile(r"#\s*sleep-ok:\s*\S")
SLEEP_MODULES = frozenset({"time", "asyncio"})


def _files() -> list[Path]:
    return sorted(p for d in CHECKED if (TESTS / d).is_dir() for p in (TESTS / d).rglob("*.py"))


def _sleeps(tree: ast.AST) -> Iterator[ast.Call]:
    """Calls of time.sleep / asyncio.sleep, however imported (``import time as t``,
    ``from asyncio import sleep as nap``)."""
    modules: set[str] = set()  # local names of the time and asyncio modules
    functions: set[str] = set()  # local names of their sleep functions
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name in SLEEP_MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module in SLEEP_MODULES:
            functions |= {a.asname or a.name for a in node.names if a.name == "sleep"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (
            isinstance(f, ast.Attribute)
            and f.attr == "sleep"
            and isinstance(f.value, ast.Name)
            and f.value.id in modules
        ) or (isinstance(f, ast.Name) and f.id in functions):
            yield node


def _marked(lines: list[str], call: ast.Call) -> bool:
    """The mark on one of the call's lines or in the comment block right above it."""
    first = call.lineno - 1
    last = (call.end_lineno or call.lineno) - 1
    around = lines[first : last + 1]
    above = first - 1
    while above >= 0 and lines[above].lstrip().startswith("#"):
        around.append(lines[above])
        above -= 1
    return any(MARK.search(line) for line in around)


def unmarked_sleeps(source: str) -> list[int]:
    """Line numbers of the sleeps in ``source`` without a ``# sleep-ok:`` reason."""
    lines = source.splitlines()
    return sorted(c.lineno for c in _sleeps(ast.parse(source)) if not _marked(lines, c))


def test_the_rule_sees_every_spelling_of_a_sleep() -> None:
    source = (
        "import time, asyncio as aio\n"
        "from time import sleep as nap\n"
        "time.sleep(1)\n"
        "aio.sleep(1)\n"
        "nap(1)\n"
        "time.sleep(1)  # sleep-ok: pacing the sender\n"
        "# sleep-ok: nothing may arrive in this window,\n"
        "# a comment of two lines\n"
        "time.sleep(0.5)\n"
        "# a comment without the mark\n"
        "time.sleep(0.5)\n"
        "time.sleep(1)  # sleep-ok:\n"  # a mark without a reason is no mark
        "other.sleep(1)\n"  # not time's or asyncio's
    )
    assert unmarked_sleeps(source) == [3, 4, 5, 11, 12]


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(TESTS)))
def test_no_fixed_wait(path: Path) -> None:
    bad = unmarked_sleeps(path.read_text())
    assert not bad, (
        f"{path.relative_to(TESTS)}: a sleep at line(s) {bad} without '# sleep-ok: <why>'. "
        "Wait for the condition itself (waits.wait_for / wait_for_async, with a generous "
        "deadline and a message saying what is awaited); if the pause IS the behaviour "
        "under test, say why on its line."
    )
