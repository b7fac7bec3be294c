"""Dispatcher.preview: the pick a real selection would make, leaving every
cursor, weight table and the random generator as they were."""

from __future__ import annotations

import pytest
from conftest import Build

from sipfleet.dispatch import Keys, Selection

WEIGHTED = (
    "1 sip:a.example 0 0 weight=70\n1 sip:b.example 0 0 weight=20\n1 sip:c.example 0 0 weight=10\n"
)
RWEIGHTED = "1 sip:a.example 0 0 rweight=50\n1 sip:b.example 0 0 rweight=30\n1 sip:c.example 0 0 rweight=20\n"
OC = "".join(f"1 sip:o{i}.example 0 0 ocrate=50\n" for i in range(3))


def _first(sel: object) -> str:
    # Overload control can skip every entry of a pick: that is a prediction too.
    return sel.candidates[0].uri if isinstance(sel, Selection) else "no destination"


@pytest.mark.parametrize(
    ("text", "alg"), [(WEIGHTED, 4), (WEIGHTED, 6), (WEIGHTED, 9), (RWEIGHTED, 11), (OC, 64)]
)
def test_preview_predicts_and_moves_nothing(build: Build, text: str, alg: int) -> None:
    real = build(text, seed=7)
    twin = build(text, seed=7)  # never previewed: the reference sequence
    if alg == 64:  # overload control on: each pick moves its skip slots
        for d in (real, twin):
            for dest in list(d.destinations()):
                assert d.oc_set_attrs(1, dest.uri, 50, 60_000, 1, now=0.0)
    keys = Keys(call_id="c")
    for _ in range(40):
        predicted = _first(real.preview([(1, alg)], keys, now=1.0))
        assert _first(real.preview([(1, alg)], keys, now=1.0)) == predicted  # asking twice: same
        got = _first(real.select(1, keys, now=1.0, algorithm=alg))
        assert got == predicted
        assert _first(twin.select(1, keys, now=1.0, algorithm=alg)) == got
