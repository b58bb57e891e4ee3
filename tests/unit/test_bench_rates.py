"""The bench's two rates: end to end (what "50 %" is taken of) and the last stage's drain."""

from __future__ import annotations

import pytest

from services.bench import cpu_by_minute, drain_rate, latency_by_minute, sustained_rate

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


def test_soak_latency_by_minute_of_sending() -> None:
    latencies = [(float(s), 100.0) for s in range(60)] + [(61.0, 900.0), (62.0, 120.0)]

    (minute0, p99_0, n0), (minute1, p99_1, n1) = latency_by_minute(latencies)

    assert (minute0, n0, minute1, n1) == (0, 60, 1, 2)
    assert p99_0 == 100.0  # a quiet minute
    assert 880.0 < p99_1 <= 900.0  # the spike of minute 1 is its p99, not the soak's average
    assert latency_by_minute([]) == []


def test_soak_cpu_by_minute_from_cumulative_samples() -> None:
    # workers at half a core throughout; the broker from 20 % to 80 % of a core
    samples = [(0.0, 0.0, 0.0), (30.0, 15.0, 6.0), (60.0, 30.0, 12.0), (90.0, 45.0, 36.0),
               (120.0, 60.0, 60.0)]

    assert cpu_by_minute(samples) == [(0, 50.0, 20.0), (1, 50.0, 80.0)]
    assert cpu_by_minute([(0.0, 0.0, None), (10.0, 2.0, None)]) == [(0, 20.0, None)]
    assert cpu_by_minute([(5.0, 1.0, 1.0)]) == []  # one sample: no rate
