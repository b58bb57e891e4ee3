"""Read models for ops from the database: requests, stage latencies, center load, escalations,
dead letters. Pure reads; every function takes the engine and, where time matters, ``now``.

Region and language are not columns of ``requests``: they come from the stored body (the tenant's
region, else its country's; the requester's tag resolved to one of the twelve languages), so
labels stay low-cardinality (3 regions, 12 languages, ``other``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from scheduler.business_hours import is_open_at, is_working_day, next_opening
from scheduler.db import (
    deadletters,
    held_commands,
    meetings,
    read_connection,
    request_events,
    requests,
)
from scheduler.directory import Center, CenterDirectory
from scheduler.languages import resolve_language
from scheduler.regions import region_of_country
from schemas.events import utc_z

UNKNOWN = "other"
LATENCY_STAGES = ("booked", "invited")
PERCENTILES = (0.5, 0.95, 0.99)
HEATMAP_WEEKS = 4
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --- requests -----------------------------------------------------------------------------------


def origin_labels(body_json: str) -> tuple[str, str]:
    """(region, language) of a stored request body; ``other`` for what cannot be told."""
    try:
        body = json.loads(body_json)
        tenant, requester = body.get("tenant") or {}, body.get("requester") or {}
    except (ValueError, AttributeError):
        return UNKNOWN, UNKNOWN
    region = tenant.get("region")
    if not region:
        try:
            region = str(region_of_country(str(tenant.get("country", ""))))
        except LookupError:
            region = UNKNOWN
    language = resolve_language(str(requester.get("language", ""))).tag or UNKNOWN
    return str(region), language


def request_counts(engine: Engine) -> Counter[tuple[str, str, str]]:
    """How many stored requests there are per (status, region, language)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    with read_connection(engine) as conn:
        for row in conn.execute(select(requests.c.status, requests.c.body)):
            counts[(row.status, *origin_labels(row.body))] += 1
    return counts


def stage_durations(engine: Engine) -> dict[str, list[float]]:
    """Seconds from acceptance to the first ``booked`` and to the first ``invited``, per request."""
    query = (select(request_events.c.request_id, request_events.c.status,
                    func.min(request_events.c.at).label("first_at"))
             .where(request_events.c.status.in_(("accepted", *LATENCY_STAGES)))
             .group_by(request_events.c.request_id, request_events.c.status))
    firsts: dict[str, dict[str, datetime]] = {}
    with read_connection(engine) as conn:
        for row in conn.execute(query):
            firsts.setdefault(row.request_id, {})[row.status] = row.first_at
    durations: dict[str, list[float]] = {stage: [] for stage in LATENCY_STAGES}
    for stages in firsts.values():
        accepted = stages.get("accepted")
        for stage in LATENCY_STAGES:
            if accepted is not None and stage in stages:
                durations[stage].append(max(0.0, (stages[stage] - accepted).total_seconds()))
    return durations


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of ascending values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def requests_summary(engine: Engine) -> dict[str, Any]:
    """Counts by status, region and language; p50/p95/p99 seconds to booked and to invited."""
    counts = request_counts(engine)
    by: list[Counter[str]] = [Counter(), Counter(), Counter()]
    for labels, n in counts.items():
        for position, label in enumerate(labels):
            by[position][label] += n
    latency = {}
    for stage, values in stage_durations(engine).items():
        ordered = sorted(values)
        latency[stage] = {"count": len(ordered)} | {
            f"p{round(p * 100)}": percentile(ordered, p) for p in PERCENTILES}
    return {"total": sum(counts.values()), "by_status": dict(by[0]),
            "by_region": dict(by[1]), "by_language": dict(by[2]),
            "latency_seconds": latency}


def recent_requests(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    """The requests that moved last, newest first, each with its compact timeline."""
    query = (select(requests.c.request_id, requests.c.status, requests.c.center_id,
                    requests.c.body, requests.c.accepted_at, requests.c.updated_at)
             .order_by(requests.c.updated_at.desc(), requests.c.request_id).limit(limit))
    with read_connection(engine) as conn:
        rows = conn.execute(query).all()
        ids = [row.request_id for row in rows]
        events = conn.execute(
            select(request_events.c.request_id, request_events.c.status, request_events.c.at)
            .where(request_events.c.request_id.in_(ids))
            .order_by(request_events.c.at, request_events.c.id)).all()
    timelines: dict[str, list[dict[str, str]]] = {i: [] for i in ids}
    for event in events:
        timelines[event.request_id].append({"status": event.status, "at": utc_z(event.at)})
    recent = []
    for row in rows:
        region, language = origin_labels(row.body)
        recent.append({"request_id": row.request_id, "status": row.status,
                       "center_id": row.center_id, "region": region, "language": language,
                       "accepted_at": utc_z(row.accepted_at), "updated_at": utc_z(row.updated_at),
                       "timeline": timelines[row.request_id]})
    return recent


def routing_explanation(timeline: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """From a status timeline: the routing decision's reasons, rejected centers and candidates,
    the booking reasons, and why it was escalated or dead-lettered."""
    explained: dict[str, Any] = {"reasons": [], "rejected": [], "candidates": [],
                                 "language": None, "booking_reasons": [], "escalation": None,
                                 "deadletter": None}
    for entry in timeline:
        detail = entry.get("detail") or {}
        if entry["status"] == "routed" and "decision" in detail:
            decision = detail["decision"]
            explained |= {key: decision.get(key) or explained[key]
                          for key in ("reasons", "rejected", "candidates", "language")}
        elif entry["status"] == "booked":
            explained["booking_reasons"] = detail.get("reasons", [])
        elif entry["status"] == "escalated":
            explained["escalation"] = detail
        elif entry["status"] in ("deadlettered", "rejected"):
            explained["deadletter"] = detail
    return explained


# --- escalations and dead letters ---------------------------------------------------------------


def escalations_by_reason(engine: Engine) -> Counter[tuple[str, str]]:
    """Escalation events per (stage, reason); a request escalated for two reasons counts twice."""
    counts: Counter[tuple[str, str]] = Counter()
    query = select(request_events.c.detail).where(request_events.c.status == "escalated")
    with read_connection(engine) as conn:
        for (detail,) in conn.execute(query):
            data = json.loads(detail) if detail else {}
            stage = str(data.get("stage", UNKNOWN))
            for reason in data.get("reasons") or [UNKNOWN]:
                counts[(stage, str(reason))] += 1
    return counts


def deadletter_counts(engine: Engine) -> dict[tuple[str, str], int]:
    """Dead letters per (error_class, state)."""
    query = (select(deadletters.c.error_class, deadletters.c.state, func.count())
             .group_by(deadletters.c.error_class, deadletters.c.state))
    with read_connection(engine) as conn:
        return {(row[0], row[1]): int(row[2]) for row in conn.execute(query)}


def oldest_open_deadletter(engine: Engine) -> datetime | None:
    """When the oldest still-open dead letter was recorded."""
    query = select(func.min(deadletters.c.at)).where(deadletters.c.state == "open")
    with read_connection(engine) as conn:
        found = conn.execute(query).scalar_one_or_none()
    return None if found is None else found



def held_commands_summary(engine: Engine) -> tuple[int, datetime | None]:
    """How many commands wait for their request to be accepted, and since when the oldest
    (scheduler.held_commands)."""
    query = select(func.count(), func.min(held_commands.c.held_at))
    with read_connection(engine) as conn:
        count, oldest = conn.execute(query).one()
    return int(count), oldest

def deadletters_summary(engine: Engine, now: datetime) -> dict[str, Any]:
    """Open dead letters by error class, every state's count, and the oldest open one's age."""
    counts = deadletter_counts(engine)
    oldest = oldest_open_deadletter(engine)
    by_state: Counter[str] = Counter()
    for (_, state), n in counts.items():
        by_state[state] += n
    return {"open_by_class": {cls: n for (cls, state), n in counts.items() if state == "open"},
            "by_state": dict(by_state),
            "oldest_open_at": None if oldest is None else utc_z(oldest),
            "oldest_open_age_seconds": None if oldest is None
            else max(0.0, (now - oldest).total_seconds())}


# --- centers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Booked:
    center_id: str
    specialist_id: str
    start: datetime
    end: datetime


def center_load(engine: Engine, directory: CenterDirectory, now: datetime) -> list[dict[str, Any]]:
    """Per center: open now in its local time, next opening, per-specialist utilisation today
    and this week (meetings / max_meetings_per_day × working days), and a weekday × hour heat
    map of booked hours over the weeks around ``now``."""
    window = timedelta(weeks=HEATMAP_WEEKS)
    query = (select(meetings.c.center_id, meetings.c.specialist_id, meetings.c.start_utc,
                    meetings.c.end_utc)
             .where(meetings.c.status == "active", meetings.c.start_utc >= now - window,
                    meetings.c.start_utc < now + window))
    by_center: dict[str, list[_Booked]] = {}
    with read_connection(engine) as conn:
        for row in conn.execute(query):
            by_center.setdefault(row.center_id, []).append(
                _Booked(row.center_id, row.specialist_id, row.start_utc,
                        row.end_utc))
    return [_center_view(center, by_center.get(center.id, []), now)
            for center in directory.centers]


def _center_view(center: Center, booked: list[_Booked], now: datetime) -> dict[str, Any]:
    zone = center.zone
    local_now = now.astimezone(zone)
    today = local_now.date()
    week = [today - timedelta(days=today.weekday()) + timedelta(days=n) for n in range(7)]
    working_days = sum(1 for day in week if is_working_day(center, day))
    heatmap = [[0.0] * 24 for _ in WEEKDAYS]
    per_specialist: dict[str, Counter[str]] = {s.id: Counter() for s in center.specialists}
    for meeting in booked:
        local_start = meeting.start.astimezone(zone)
        heatmap[local_start.weekday()][local_start.hour] += (
            (meeting.end - meeting.start).total_seconds() / 3600)
        counts = per_specialist.setdefault(meeting.specialist_id, Counter())
        if local_start.date() == today:
            counts["today"] += 1
        if local_start.date() in week:
            counts["week"] += 1
    opening = next_opening(center, now)
    return {
        "center_id": center.id, "name": center.name, "region": center.region,
        "timezone": center.timezone, "local_time": local_now.isoformat(timespec="minutes"),
        "open_now": is_open_at(center, now),
        "next_opening": None if opening is None else utc_z(opening),
        "next_opening_local": None if opening is None
        else opening.astimezone(zone).isoformat(timespec="minutes"),
        "specialists": [_utilisation(s.id, s.name, s.max_meetings_per_day,
                                     per_specialist[s.id], is_working_day(center, today),
                                     working_days)
                        for s in center.specialists],
        "heatmap_hours": [[round(h, 2) for h in row] for row in heatmap],
        "meetings_in_window": len(booked),
    }


def _utilisation(specialist_id: str, name: str, per_day: int, counts: Counter[str],
                 works_today: bool, working_days: int) -> dict[str, Any]:
    today_capacity = per_day if works_today else 0
    week_capacity = per_day * working_days
    return {"specialist_id": specialist_id, "name": name,
            "meetings_today": counts["today"], "capacity_today": today_capacity,
            "utilisation_today": _ratio(counts["today"], today_capacity),
            "meetings_week": counts["week"], "capacity_week": week_capacity,
            "utilisation_week": _ratio(counts["week"], week_capacity)}


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 3)
