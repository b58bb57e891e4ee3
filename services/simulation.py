"""Offline what-if runs: route and book a demand file against a fresh in-memory ledger (§7)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from consumers.routing import route
from scheduler.booking import FullDays, book
from scheduler.business_hours import opening_spans
from scheduler.directory import CenterDirectory
from scheduler.ledger import InMemoryLedger
from schemas.events import Meeting, utc_z
from schemas.help_request import HelpRequest


@dataclass
class SimulationSummary:
    """Totals over a run, printed to stderr by ``fasttrack simulate``."""

    booked: int = 0
    escalated: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    duplicates: int = 0  # the same request again: the pipeline books it once
    waits_hours: list[float] = field(default_factory=list)
    meetings: dict[str, list[Meeting]] = field(default_factory=lambda: defaultdict(list))

    def record(self, request: HelpRequest, meeting: Meeting | None, reasons: list[str]) -> None:
        if meeting is None:
            self.escalated[reasons[-1] if reasons else "unknown"] += 1
            return
        self.booked += 1
        self.waits_hours.append((meeting.start - request.submitted_at).total_seconds() / 3600)
        self.meetings[meeting.center_id].append(meeting)

    def utilisation(self, directory: CenterDirectory) -> dict[str, float]:
        """Booked meeting hours ÷ specialist open hours, over the local days that have meetings."""
        result = {}
        for center in directory.centers:
            meetings = self.meetings.get(center.id, [])
            if not meetings:
                result[center.id] = 0.0
                continue
            days = [m.start.astimezone(center.zone).date() for m in meetings]
            open_hours = sum(
                (end - start).total_seconds() / 3600
                for day in _days(min(days), max(days))
                for start, end in opening_spans(center, day)
            ) * len(center.specialists)
            booked = sum((m.end - m.start).total_seconds() / 3600 for m in meetings)
            result[center.id] = round(booked / open_hours, 4) if open_hours else 0.0
        return result

    def as_dict(self, directory: CenterDirectory) -> dict[str, Any]:
        waits = sorted(self.waits_hours)
        return {
            "requests": self.booked + sum(self.escalated.values()) + self.invalid
            + self.duplicates,
            "booked": self.booked,
            "escalated": sum(self.escalated.values()),
            "escalated_by_reason": dict(sorted(self.escalated.items())),
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "median_wait_hours": round(statistics.median(waits), 2) if waits else None,
            "p90_wait_hours": round(waits[int(0.9 * (len(waits) - 1))], 2) if waits else None,
            "meetings_per_center": {c: len(m) for c, m in sorted(self.meetings.items())},
            "utilisation": self.utilisation(directory),
        }


def simulate(requests: Iterator[HelpRequest], directory: CenterDirectory,
             summary: SimulationSummary) -> Iterator[dict[str, Any]]:
    """Route each request at its submission time and book it; yield one contract line each."""
    ledger = InMemoryLedger()
    full_days = FullDays()  # valid: a simulation only ever adds meetings
    for request in requests:
        decision = route(request, directory, request.submitted_at)
        outcome = book(decision, directory, ledger, full_days)
        meeting = outcome.meeting
        summary.record(request, meeting, [*decision.reasons, *outcome.reasons])
        yield {
            "request_id": request.request_id,
            "center_id": meeting.center_id if meeting else None,
            "specialist_id": meeting.specialist_id if meeting else None,
            "start": utc_z(meeting.start) if meeting else None,
            "end": utc_z(meeting.end) if meeting else None,
        }


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)

