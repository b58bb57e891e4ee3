"""The bench's two rates: end to end (what "50 %" is taken of) and the last stage's drain."""

from __future__ import annotations

import pytest

from services.bench import drain_rate, sustained_rate

S = 1_000_000_000  # ns


def test_sustained_rate_is_every_record_over_first_submission_to_last_finish() -> None:
    assert sustained_rate(0, [2 * S, 3 * S, 4 * S, 5 * S]) == pytest.approx(4 / 5)
    assert sustained_rate(10 * S, []) == 0.0
    assert sustained_rate(5 * S, [5 * S]) == 0.0  # no time passed: no rate, not infinity


def test_a_burst_at_the_end_is_a_fast_drain_but_not_a_fast_pipeline() -> None:
    # 1,000 records submitted at 0; the stages before the last take 9 s to feed it, and the
    # last stage then finishes them all within one second.
    finishes = [9 * S + n * 1_000_000 for n in range(1000)]
    assert drain_rate(finishes) == pytest.approx(1000, rel=0.01)
    assert sustained_rate(0, finishes) == pytest.approx(1000 / 9.999, rel=0.01)


def test_evenly_spread_finishes_give_about_the_same_rate_both_ways() -> None:
    finishes = [(n + 1) * S // 100 for n in range(1000)]  # 100/s from the start
    assert sustained_rate(0, finishes) == pytest.approx(100, rel=0.01)
    assert drain_rate(finishes) == pytest.approx(100, rel=0.01)
