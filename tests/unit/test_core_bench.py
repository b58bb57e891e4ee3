"""The core micro-benchmark measures what it says and reports it well-formed (no timing claims)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import services.core_bench
from scheduler.booking import book
from scheduler.directory import CenterDirectory, default_directory
from scheduler.ledger import InMemoryLedger
from schemas.events import RoutingDecision
from services.core_bench import (
    SEARCH_FROM,
    CoreReport,
    Timing,
    booking_decisions,
    format_core_report,
    percentile,
    prefilled_ledger,
    run_core_bench,
    sample_help_requests,
    time_bookings,
)


@pytest.fixture(scope="module")
def shipped_directory() -> CenterDirectory:
    return default_directory()


@pytest.mark.parametrize(("values", "fraction", "expected"), [
    pytest.param([5.0], 0.99, 5.0, id="one-value"),
    pytest.param([float(n) for n in range(1, 101)], 0.5, 50.0, id="median-of-100"),
    pytest.param([float(n) for n in range(1, 101)], 0.99, 99.0, id="p99-of-100"),
    pytest.param([3.0, 1.0, 2.0], 1.0, 3.0, id="unsorted-max"),
])
def test_percentile_is_nearest_rank(values: list[float], fraction: float,
                                    expected: float) -> None:
    assert percentile(values, fraction) == expected


@pytest.mark.parametrize("size", [1, 500, 3000])
def test_prefilled_ledger_has_the_size_asked_and_no_double_booking(
        shipped_directory: CenterDirectory, size: int) -> None:
    ledger = prefilled_ledger(shipped_directory, size)  # record() refuses overlaps

    assert len(ledger) == size


def test_the_near_future_is_partly_booked_and_history_lies_before_it(
        shipped_directory: CenterDirectory) -> None:
    ledger = prefilled_ledger(shipped_directory, 5000)
    ids = [s.id for c in shipped_directory.centers for s in c.specialists]
    spans = ledger.schedules(ids, SEARCH_FROM, SEARCH_FROM + timedelta(days=30))
    ahead = sum(1 for sid in ids for start, _ in spans[sid] if start >= SEARCH_FROM)
    behind = sum(1 for sid in ids for start, _ in spans[sid] if start < SEARCH_FROM)

    capacity_per_day = sum(s.max_meetings_per_day for c in shipped_directory.centers
                           for s in c.specialists)
    assert capacity_per_day * 3 <= ahead < capacity_per_day * 4
    assert behind == 5000 - ahead


def test_a_tiny_run_reports_every_size_and_a_verdict(shipped_directory: CenterDirectory) -> None:
    report = run_core_bench(shipped_directory, sizes=(1000, 4000), routing_requests=60,
                            searches=20, invites=30)
    result = report.to_json_dict()

    assert json.loads(json.dumps(result)) == result
    assert [row["ledger_size"] for row in result["booking"]] == [1000, 4000]
    assert all(row["searches"] == 20 and row["median_us"] > 0 for row in result["booking"])
    assert result["routing_median_us"] > 0 and result["routing_per_s"] > 0
    assert result["log_size_ratio"] == pytest.approx(1.2007, abs=1e-3)
    assert isinstance(result["grows_logarithmically"], bool)
    assert 20 <= result["invites_rendered"] <= 30  # the booked ones of the first 30
    assert 0 < result["invite_render_median_us"] <= result["invite_render_p99_us"]
    text = format_core_report(report)
    assert "routing decision" in text and "4,000" in text and "log(size)" in text
    assert f"{result['invites_rendered']} booked requests" in text


def test_the_ledgers_take_turns_so_a_drifting_host_slows_every_size_alike(
        shipped_directory: CenterDirectory, monkeypatch: pytest.MonkeyPatch) -> None:
    small = prefilled_ledger(shipped_directory, 100)
    large = prefilled_ledger(shipped_directory, 800)
    requests = sample_help_requests(60, SEARCH_FROM - timedelta(hours=1))
    _, decisions = booking_decisions(requests, shipped_directory, 3)
    calls: list[tuple[int, str]] = []

    def recording_book(decision: RoutingDecision, directory: CenterDirectory,
                       ledger: InMemoryLedger) -> object:
        calls.append((len(ledger), decision.request_id))
        return book(decision, directory, ledger)

    monkeypatch.setattr(services.core_bench, "book", recording_book)
    timings = time_bookings({100: small, 800: large}, shipped_directory, decisions)

    first, second, third = (d.request_id for d in decisions)
    # each ledger grows by one booking a search; the order is what matters
    assert [rid for _, rid in calls] == [first, first, second, second, third, third]
    assert [size for size, _ in calls] == [100, 800, 101, 801, 102, 802]
    assert sorted(timings) == [100, 800]
    assert all(len(t.samples) == 3 and min(t.samples) > 0 for t in timings.values())


@pytest.mark.parametrize(("small_us", "large_us", "verdict"), [
    pytest.param(40.0, 70.0, True, id="under-the-log-ratio"),
    pytest.param(40.0, 90.0, False, id="over-the-log-ratio"),
])
def test_the_verdict_compares_time_growth_with_log_size_growth(
        small_us: float, large_us: float, verdict: bool) -> None:
    report = CoreReport(Timing([1.0]), Timing([1.0]),
                        {1000: Timing([small_us]), 1_000_000: Timing([large_us])})

    assert report.logarithmic() is verdict
    assert ("no faster than logarithmic" in format_core_report(report)) is verdict
