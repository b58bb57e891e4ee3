"""``fasttrack bench --core-only``: the pure core, timed without broker or database.

Three questions: how long one routing decision takes over the realistic request mix with the
default directory, how long the notifier takes to render one invite (the iCalendar invite, the
iMIP email around it and the email's bytes, as the outbox writes them), and how the booking
slot search (``book()`` on an :class:`InMemoryLedger`) grows with the size of the ledger.
The ledgers are prefilled to each size with meetings spread over every specialist and years of
past business days, plus the same partly booked near future (the first days full, the next one
half full) so that every size asks ``book()`` for the same search and only the ledger's size
differs. The search must grow no faster than log(size).

The ledgers are all built first and then searched in turn, one search on each: the verdict is a
ratio of two medians, and timed one ledger after the other, half a minute apart, it measured the
host's drift as much as the ledger (× 0.82 to × 2.76 between runs of the same code,
docs/performance.md round 11).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from consumers.routing import route
from scheduler.booking import book
from scheduler.business_hours import slots_on
from scheduler.directory import Center, CenterDirectory
from scheduler.invites import build_imip_message, build_invite
from scheduler.ledger import InMemoryLedger
from schemas.events import Meeting, RoutingDecision
from schemas.help_request import HelpRequest, parse_help_request
from services.bootstrap import join_url
from services.sample_requests import sample_requests

#: The fixed decision time of every timed search: a Monday morning, UTC.
SEARCH_FROM = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)
FULL_DAYS_AHEAD = 3  # local days from SEARCH_FROM on which every specialist is at the cap
_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Timing:
    """Per-call times in microseconds."""

    samples: list[float]

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99_us(self) -> float:
        return percentile(self.samples, 0.99)


@dataclass
class CoreReport:
    routing_cold: Timing
    routing_warm: Timing
    booking: dict[int, Timing] = field(default_factory=dict)
    rendering: Timing | None = None
    prefill_seconds: dict[int, float] = field(default_factory=dict)

    def growth(self) -> tuple[float, float] | None:
        return growth(self.booking)

    def logarithmic(self) -> bool | None:
        return grows_logarithmically(self.booking)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "routing_median_us": round(self.routing_warm.median_us, 2),
            "routing_p99_us": round(self.routing_warm.p99_us, 2),
            "routing_cold_median_us": round(self.routing_cold.median_us, 2),
            "routing_per_s": round(1e6 / self.routing_warm.median_us),
            **booking_json(self.booking),
            "invite_render_median_us": None if self.rendering is None else
            round(self.rendering.median_us, 2),
            "invite_render_p99_us": None if self.rendering is None else
            round(self.rendering.p99_us, 2),
            "invites_rendered": 0 if self.rendering is None else len(self.rendering.samples),
        }


def growth(booking: dict[int, Timing]) -> tuple[float, float] | None:
    """(time ratio, log-size ratio) between the largest and the smallest ledger."""
    if len(booking) < 2:
        return None
    small, large = min(booking), max(booking)
    return booking[large].median_us / booking[small].median_us, math.log(large) / math.log(small)


def booking_json(booking: dict[int, Timing]) -> dict[str, Any]:
    """The booking search's times per ledger size and their growth, for ``--json``."""
    ratios = growth(booking)
    return {
        "booking": [
            {"ledger_size": size, "median_us": round(t.median_us, 2),
             "p99_us": round(t.p99_us, 2), "searches": len(t.samples)}
            for size, t in sorted(booking.items())
        ],
        "booking_time_ratio": None if ratios is None else round(ratios[0], 3),
        "log_size_ratio": None if ratios is None else round(ratios[1], 3),
        "grows_logarithmically": grows_logarithmically(booking),
    }


def grows_logarithmically(booking: dict[int, Timing]) -> bool | None:
    """Whether the search time grew no faster than log(ledger size); None below two sizes."""
    ratios = growth(booking)
    return None if ratios is None else ratios[0] <= ratios[1]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in (0, 1])."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def sample_help_requests(count: int, start: datetime, *, seed: int = 7) -> list[HelpRequest]:
    """``count`` validated requests of the realistic mix, submitted from ``start``."""
    return [parse_help_request(r) for r in sample_requests(count, start, seed=seed,
                                                           prefix="core")]


def time_routing(requests: list[HelpRequest], directory: CenterDirectory,
                 now: datetime) -> tuple[Timing, Timing]:
    """(first pass, second pass) per-decision times: caches cold, then warm as in a worker."""
    passes = []
    for _ in range(2):
        samples = []
        for request in requests:
            started = time.perf_counter_ns()
            route(request, directory, now)
            samples.append((time.perf_counter_ns() - started) / 1000)
        passes.append(Timing(samples))
    return passes[0], passes[1]


def time_rendering(requests: list[HelpRequest], directory: CenterDirectory,
                   now: datetime) -> Timing:
    """Per-invite times of what the notifier renders for each booked request: ``build_invite``,
    ``build_imip_message`` and the email's bytes. The requests are booked first (an empty
    in-memory ledger, the bootstrap's join links), so the meetings share slots as they do in
    a worker; the caches start cold, as after a worker starts."""
    ledger = InMemoryLedger()
    booked = []
    for request in requests:
        meeting = book(route(request, directory, now), directory, ledger,
                       join_url=join_url).meeting
        if meeting is not None:
            booked.append((meeting, request, directory.center(meeting.center_id)))
    samples = []
    for meeting, request, center in booked:
        started = time.perf_counter_ns()
        ics = build_invite(meeting, request, center, sequence=0, method="REQUEST", now=now)
        build_imip_message(ics, meeting, request, center, method="REQUEST", now=now).as_bytes()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return Timing(samples)


def prefilled_ledger(directory: CenterDirectory, size: int,
                     search_from: datetime = SEARCH_FROM) -> InMemoryLedger:
    """A ledger of ``size`` meetings: the partly booked near future plus past days, all full."""
    ledger = InMemoryLedger()
    for meeting in ledger_meetings(directory, size, search_from):
        ledger.record(meeting)  # chronological per specialist: each insert is an append
    return ledger


def ledger_meetings(directory: CenterDirectory, size: int,
                    search_from: datetime = SEARCH_FROM) -> list[Meeting]:
    """The meetings of :func:`prefilled_ledger`, oldest first: a larger size adds older days."""
    near = list(_near_future(directory, search_from))
    history = _history(directory, search_from, max(0, size - len(near)))
    return [*reversed(history), *near][-size:]


def booking_decisions(requests: list[HelpRequest], directory: CenterDirectory, searches: int,
                      ) -> tuple[list[RoutingDecision], list[RoutingDecision]]:
    """(warm-up, timed) routing decisions for the booking search, every one with a center."""
    routed = [route(r, directory, SEARCH_FROM) for r in requests[:searches + 50]]
    routed = [d for d in routed if d.center_id is not None]
    return routed[searches:], routed[:searches]


def time_bookings(ledgers: Mapping[int, InMemoryLedger], directory: CenterDirectory,
                  decisions: list[RoutingDecision]) -> dict[int, Timing]:
    """Time ``book()`` per decision on every ledger, taking turns: decision 1 on each ledger,
    then decision 2 on each, ...; the meetings stay booked.

    Every ledger gets the same decisions in the same order over the same near future, so
    search *i* does the same work at every size, and a host that slows down or speeds up
    during the run slows down every size alike. (Releasing each meeting instead would keep
    the start point fixed, but ``InMemoryLedger.release`` scans the specialist's whole list,
    which at a million bookings also flushes the CPU caches before every timed search.)
    """
    samples: dict[int, list[float]] = {size: [] for size in ledgers}
    for decision in decisions:
        for size, ledger in ledgers.items():
            started = time.perf_counter_ns()
            book(decision, directory, ledger)
            samples[size].append((time.perf_counter_ns() - started) / 1000)
    return {size: Timing(times) for size, times in samples.items()}


def run_core_bench(directory: CenterDirectory, *, sizes: tuple[int, ...] = DEFAULT_SIZES,
                   routing_requests: int = 2000, searches: int = 500, invites: int = 1000,
                   progress: Callable[[str], None] | None = None) -> CoreReport:
    """Time routing, invite rendering, and the booking search at each ledger size."""
    say = progress or (lambda text: None)
    requests = sample_help_requests(routing_requests, SEARCH_FROM - timedelta(hours=1))
    say(f"routing {len(requests)} requests twice")
    cold, warm = time_routing(requests, directory, SEARCH_FROM)
    report = CoreReport(cold, warm)
    say(f"rendering the invites of {min(len(requests), invites)} booked requests")
    report.rendering = time_rendering(requests[:invites], directory, SEARCH_FROM)
    warmup, decisions = booking_decisions(requests, directory, searches)
    ledgers: dict[int, InMemoryLedger] = {}
    for size in sorted(sizes):
        started = time.perf_counter()
        ledgers[size] = prefilled_ledger(directory, size)
        report.prefill_seconds[size] = time.perf_counter() - started
        say(f"ledger of {size:,} bookings built in {report.prefill_seconds[size]:.1f} s")
    time_bookings(ledgers, directory, warmup)  # the business-hours caches, as in a worker
    say(f"timing {len(decisions)} searches on each ledger, taking turns")
    report.booking = time_bookings(ledgers, directory, decisions)
    return report


def format_core_report(report: CoreReport) -> str:
    """The human-readable tables and the log-growth verdict."""
    warm, cold = report.routing_warm, report.routing_cold
    lines = [
        "routing decision (default directory, realistic mix)",
        f"  median {warm.median_us:8.1f} µs   p99 {warm.p99_us:8.1f} µs   "
        f"{1e6 / warm.median_us:,.0f} decisions/s   (first pass, caches cold: "
        f"median {cold.median_us:.1f} µs)   target: median < 50 µs "
        f"[{'met' if warm.median_us < 50 else 'MISSED'}]",
    ]
    if report.rendering is not None and report.rendering.samples:
        render = report.rendering
        lines += [
            "",
            f"invite rendering (iCalendar + iMIP email + its bytes, {len(render.samples):,} "
            "booked requests, caches cold at first)",
            f"  median {render.median_us:8.1f} µs   p99 {render.p99_us:8.1f} µs   "
            f"{1e6 / render.median_us:,.0f} invites/s on one core",
        ]
    lines += ["", "booking slot search, book() on InMemoryLedger (near future partly booked)",
              *booking_table(report.booking)]
    return "\n".join(lines)


def booking_table(booking: dict[int, Timing], *, target: bool = True) -> list[str]:
    """The booking search's times per ledger size, its growth against log(size), and (with
    ``target``) the verdict on the 1 ms target at the largest size."""
    lines = [f"  {'ledger size':>12} {'median µs':>10} {'p99 µs':>10} {'× smallest':>11} "
             f"{'log n ×':>8}"]
    smallest = min(booking) if booking else 1
    for size, timing in sorted(booking.items()):
        base = booking[smallest].median_us
        lines.append(f"  {size:>12,} {timing.median_us:>10.1f} {timing.p99_us:>10.1f} "
                     f"{timing.median_us / base:>11.2f} "
                     f"{math.log(size) / math.log(smallest):>8.2f}")
    ratios = growth(booking)
    if ratios is not None:
        verdict = "no faster than logarithmic" if ratios[0] <= ratios[1] else \
            "FASTER than logarithmic"
        lines.append(f"  growth {min(booking):,} → {max(booking):,}: time × {ratios[0]:.2f}"
                     f" vs log(size) × {ratios[1]:.2f}: {verdict}")
    if ratios is not None and target:
        largest = booking[max(booking)]
        lines += [
            f"  target: slot search < 1 ms with {max(booking):,} bookings: "
            f"median {largest.median_us / 1000:.3f} ms, p99 {largest.p99_us / 1000:.3f} ms "
            f"[{'met' if largest.median_us < 1000 else 'MISSED'}]",
        ]
    return lines


def _open_days(center: Center, directory: CenterDirectory, day: date,
               step: timedelta) -> Iterator[tuple[date, tuple[datetime, ...]]]:
    while True:
        slots = slots_on(center, directory.policy, day)
        if slots:
            yield day, slots
        day += step


def _day_meetings(center: Center, day: date, slots: tuple[datetime, ...], tag: str,
                  length: timedelta, fill: Callable[[int], int]) -> Iterator[Meeting]:
    """Meetings one hour apart (``slots[::2]``) for each specialist, ``fill(cap)`` of them."""
    spaced = slots[::2]
    for specialist in center.specialists:
        for start in spaced[:fill(specialist.max_meetings_per_day)]:
            request_id = f"{tag}-{day.isoformat()}-{specialist.id}-{start:%H%M}"
            yield Meeting.model_construct(
                request_id=request_id, center_id=center.id, specialist_id=specialist.id,
                language=specialist.languages[0], start=start, end=start + length, revision=1,
                uid=f"{request_id}@bench.example.com", join_url=None)


def _near_future(directory: CenterDirectory, search_from: datetime) -> Iterator[Meeting]:
    length = timedelta(minutes=directory.policy.meeting_minutes)
    for center in directory.centers:
        first = search_from.astimezone(center.zone).date()
        days = _open_days(center, directory, first, _ONE_DAY)
        for index, (day, slots) in zip(range(FULL_DAYS_AHEAD + 1), days, strict=False):
            half = index == FULL_DAYS_AHEAD
            yield from _day_meetings(center, day, slots, "near", length,
                                     (lambda cap: cap // 2) if half else (lambda cap: cap))


def _history(directory: CenterDirectory, search_from: datetime, count: int) -> list[Meeting]:
    """``count`` meetings on full past days, newest first, spread over every center."""
    length = timedelta(minutes=directory.policy.meeting_minutes)
    walkers = [
        (center, _open_days(center, directory,
                            search_from.astimezone(center.zone).date() - _ONE_DAY, -_ONE_DAY))
        for center in directory.centers
    ]
    meetings: list[Meeting] = []
    while len(meetings) < count:
        for center, days in walkers:
            day, slots = next(days)
            meetings.extend(_day_meetings(center, day, slots, "past", length, lambda cap: cap))
    return meetings[:count]

