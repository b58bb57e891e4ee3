"""Business hours and the slot grid of a center (DESIGN §6.3, §7): pure functions, UTC out.

A center is open on a local date when that weekday has hours, the date is not a public holiday of
its country/subdivision (``holidays``) and not one of its closures. Each hours interval is local
wall-clock time, converted to real instants with ``zoneinfo``:

* A wall time that does not exist (spring-forward gap): a slot starting there is skipped; an
  interval boundary there moves to the first real instant after the gap.
* A wall time that occurs twice (fall-back): always its first occurrence (``fold=0``), for slot
  starts and interval boundaries alike, so the UTC spans keep the wall-clock order and never
  overlap. A slot is kept only when its real elapsed meeting length ends by the interval's end.

Grid slots start every ``slot_step_minutes`` of local wall-clock time from each interval's opening.
Every slot and every non-empty span of a local date lies in real instants that read as that date
(intervals cannot cross midnight and slot starts are never moved), so searches begin at the local
date of their first instant.
Spans and slots are cached per (center, local date); the cache key is the :class:`Center` itself,
whose equality compares every field, so a changed directory reusing an id is never served stale.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from zoneinfo import ZoneInfo

import holidays

from scheduler.directory import Center, OpeningInterval, Policy, Weekday

Span = tuple[datetime, datetime]

_ONE_DAY = timedelta(days=1)
_WEEKDAYS = tuple(Weekday)
#: (center, local date) keys kept. A booking searches from its request's day to the horizon (21
#: days by default), so the days in use are about centers x horizon: hundreds. An entry holds
#: about 1.6 KB (spans, slots and the day's bounds). The days in use slide with the calendar,
#: so a cache fills to its bound whatever that is: 32,768 kept up to 52 MB per worker (round
#: 6), and 4,096 (8 MB) filled through a 30-minute soak, which sweeps 286 days of demand
#: (docs/performance.md, round 9). 1,024 hold 15 centers' next 68 days, three bookings' worth.
_CACHE_SIZE = 1 << 10
NEXT_OPENING_DAYS = 366


def opening_spans(center: Center, local_date: date) -> tuple[Span, ...]:
    """The UTC ``[start, end)`` spans the center is open on ``local_date``, ascending.

    Empty when the weekday has no hours, the date is a public holiday or a closure. An interval
    that falls wholly in a spring-forward gap yields no span.
    """
    return _spans(center, local_date)


def slot_starts(center: Center, policy: Policy, not_before: datetime,
                until: datetime) -> Iterator[datetime]:
    """Every grid slot start S with ``not_before <= S < until``, ascending, in UTC.

    S is on the grid of one hours interval and ``[S, S + meeting_minutes)`` lies inside it.
    """
    for _, slots in daily_slots(center, policy, not_before, until):
        yield from slots


def slots_on(center: Center, policy: Policy, local_date: date) -> tuple[datetime, ...]:
    """All grid slot starts of one local date (UTC, ascending); cached."""
    return _slots(center, policy.slot_step_minutes, policy.meeting_minutes, local_date)


def daily_slots(center: Center, policy: Policy, not_before: datetime,
                until: datetime) -> Iterator[tuple[date, tuple[datetime, ...]]]:
    """The slots of :func:`slot_starts` grouped by the center's local date; empty days left out.

    For callers with per-day limits (``max_meetings_per_day``) that can then skip a whole day.
    """
    low, high = _utc(not_before, "not_before"), _utc(until, "until")
    zone = center.zone
    day, last = low.astimezone(zone).date(), high.astimezone(zone).date()
    step, meeting = policy.slot_step_minutes, policy.meeting_minutes
    while day <= last:
        slots = _slots(center, step, meeting, day)
        inside = slots[bisect_left(slots, low):bisect_left(slots, high)]
        if inside:
            yield day, inside
        day += _ONE_DAY


def earliest_start(center: Center, policy: Policy, not_before: datetime,
                   not_after: datetime | None = None) -> datetime | None:
    """The first slot start S >= ``not_before`` within ``horizon_days`` of it, or None.

    S is also at most ``not_after`` when that is given.
    """
    low = _utc(not_before, "not_before")
    high = low + timedelta(days=policy.horizon_days)
    if not_after is not None:
        high = min(high, _utc(not_after, "not_after") + timedelta.resolution)
    zone = center.zone
    day, last = low.astimezone(zone).date(), high.astimezone(zone).date()
    step, meeting = policy.slot_step_minutes, policy.meeting_minutes
    while day <= last:
        slots = _slots(center, step, meeting, day)
        i = bisect_left(slots, low)
        if i < len(slots):
            return slots[i] if slots[i] < high else None
        day += _ONE_DAY
    return None


def is_open_at(center: Center, instant: datetime) -> bool:
    """Whether ``instant`` lies inside one of the center's opening spans."""
    moment = _utc(instant, "instant")
    return any(start <= moment < end
               for start, end in _spans(center, moment.astimezone(center.zone).date()))


def next_opening(center: Center, instant: datetime) -> datetime | None:
    """The first span start at or after ``instant`` (UTC), looking 366 days ahead; else None.

    While the center is open this is the start of its next span (e.g. after lunch), not ``instant``.
    """
    moment = _utc(instant, "instant")
    limit = moment + timedelta(days=NEXT_OPENING_DAYS)
    day, last = moment.astimezone(center.zone).date(), limit.astimezone(center.zone).date()
    while day <= last:
        for start, _ in _spans(center, day):
            if start >= moment:
                return start if start <= limit else None
        day += _ONE_DAY
    return None


def is_working_day(center: Center, local_date: date) -> bool:
    """Whether the center has hours that weekday and the date is neither a holiday nor a closure."""
    return (bool(center.hours.get(_WEEKDAYS[local_date.weekday()]))
            and local_date not in center.closures
            and local_date not in _holiday_calendar(center.country, center.subdivision))


@cache
def _holiday_calendar(country: str, subdivision: str | None) -> holidays.HolidayBase:
    return holidays.country_holidays(country, subdiv=subdivision)


@lru_cache(maxsize=_CACHE_SIZE)
def _spans(center: Center, local_date: date) -> tuple[Span, ...]:
    return tuple(span for span in (_interval_span(center.zone, local_date, interval)
                                   for interval in _intervals(center, local_date))
                 if span[0] < span[1])


@lru_cache(maxsize=_CACHE_SIZE)
def _slots(center: Center, step_minutes: int, meeting_minutes: int,
           local_date: date) -> tuple[datetime, ...]:
    zone = center.zone
    step, meeting = timedelta(minutes=step_minutes), timedelta(minutes=meeting_minutes)
    found: list[datetime] = []
    for interval in _intervals(center, local_date):
        opens, closes = _interval_span(zone, local_date, interval)
        wall, end_wall = _wall(local_date, interval.start), _wall(local_date, interval.end)
        while wall < end_wall:
            start = _existing(wall, zone)
            if start is not None and start >= opens and start + meeting <= closes:
                found.append(start)
            wall += step
    return tuple(found)


def _intervals(center: Center, local_date: date) -> tuple[OpeningInterval, ...]:
    if not is_working_day(center, local_date):
        return ()
    return tuple(sorted(center.hours[_WEEKDAYS[local_date.weekday()]], key=lambda i: i.start))


def _interval_span(zone: ZoneInfo, local_date: date, interval: OpeningInterval) -> Span:
    return (_boundary(_wall(local_date, interval.start), zone),
            _boundary(_wall(local_date, interval.end), zone))


def _wall(local_date: date, wall_time: time) -> datetime:
    return datetime.combine(local_date, wall_time)


def _existing(wall: datetime, zone: ZoneInfo) -> datetime | None:
    """The first real instant showing ``wall`` (``fold=0``), or None when it falls in a gap."""
    instant = wall.replace(tzinfo=zone).astimezone(UTC)
    return instant if instant.astimezone(zone).replace(tzinfo=None) == wall else None


def _boundary(wall: datetime, zone: ZoneInfo) -> datetime:
    """``wall`` as a real instant; inside a gap, the first real instant after the gap."""
    instant = _existing(wall, zone)
    if instant is not None:
        return instant
    # In a gap, fold=1 applies the post-transition offset (giving an instant before the
    # transition) and fold=0 the pre-transition one (after it); bisect the seconds between.
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    offset_before = before.astimezone(zone).utcoffset()
    low, high = 0, int((after - before).total_seconds())
    while low < high:
        middle = (low + high) // 2
        if (before + timedelta(seconds=middle)).astimezone(zone).utcoffset() == offset_before:
            low = middle + 1
        else:
            high = middle
    return before + timedelta(seconds=low)


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value.isoformat()}")
    return value.astimezone(UTC)
