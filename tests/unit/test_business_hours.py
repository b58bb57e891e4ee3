"""Business hours and the slot grid (scheduler.business_hours): holidays, closures, DST, horizons.

Expected instants were worked out by hand from the hours, the `holidays` calendars and the tz
database. The DST rules under test:

* a slot whose local start does not exist (spring-forward gap) is skipped; an interval boundary in
  the gap moves to the first real instant after it;
* a wall time that occurs twice (fall-back) is read as its first occurrence (fold=0), for slot
  starts and boundaries alike; a slot is kept when its real meeting length ends by the
  interval's real end.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.business_hours import (
    daily_slots,
    earliest_start,
    is_open_at,
    is_working_day,
    next_opening,
    opening_spans,
    slot_starts,
)
from scheduler.directory import Center, CenterDirectory, Policy, Weekday, default_directory

DIRECTORY: CenterDirectory = default_directory()
POLICY = Policy()


def utc(text: str) -> datetime:
    """``"2027-02-11 01:00"`` as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(zone: str, text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def make_center(zone: str, hours: dict[str, list[str]], *, country: str = "US",
                subdivision: str | None = None, closures: tuple[date, ...] = (),
                center_id: str = "lab") -> Center:
    return Center.model_validate({
        "id": center_id, "name": f"Test {center_id}", "region": "AMER", "timezone": zone,
        "country": country, "subdivision": subdivision, "languages": ["en"], "hours": hours,
        "closures": list(closures), "mailbox": f"{center_id}@example.com", "specialists": [],
    })


def every_day(*intervals: str) -> dict[str, list[str]]:
    return {day.value: list(intervals) for day in Weekday}


def center(center_id: str) -> Center:
    return DIRECTORY.center(center_id)


# ------------------------------------------------------------------------------ holiday weeks

HOLIDAY_DAYS = [
    pytest.param("taipei", date(2027, 2, 3), True, id="taipei-2027-02-03-wed-before-lny-open"),
    pytest.param("taipei", date(2027, 2, 4), False, id="taipei-2027-02-04-lny-eve-eve"),
    pytest.param("taipei", date(2027, 2, 5), False, id="taipei-2027-02-05-lny-eve"),
    pytest.param("taipei", date(2027, 2, 10), False, id="taipei-2027-02-10-lny-observed"),
    pytest.param("taipei", date(2027, 2, 11), True, id="taipei-2027-02-11-back-to-work"),
    pytest.param("shanghai", date(2027, 2, 4), True, id="shanghai-2027-02-04-open"),
    pytest.param("shanghai", date(2027, 2, 5), False, id="shanghai-2027-02-05-spring-festival-eve"),
    pytest.param("shanghai", date(2027, 2, 9), False, id="shanghai-2027-02-09-spring-festival"),
    pytest.param("seoul", date(2027, 2, 5), True, id="seoul-2027-02-05-fri-open"),
    pytest.param("seoul", date(2027, 2, 8), False, id="seoul-2027-02-08-seollal-day-2"),
    pytest.param("seoul", date(2027, 2, 9), False, id="seoul-2027-02-09-seollal-substitute"),
    pytest.param("seoul", date(2027, 2, 10), True, id="seoul-2027-02-10-open"),
    pytest.param("ho-chi-minh", date(2027, 2, 4), False, id="hcmc-2027-02-04-tet-29th"),
    pytest.param("ho-chi-minh", date(2027, 2, 10), False, id="hcmc-2027-02-10-tet-5th-day"),
    pytest.param("ho-chi-minh", date(2027, 2, 11), True, id="hcmc-2027-02-11-open"),
    pytest.param("tokyo", date(2027, 4, 29), False, id="tokyo-2027-04-29-showa-day"),
    pytest.param("tokyo", date(2027, 4, 30), True, id="tokyo-2027-04-30-golden-week-bridge-open"),
    pytest.param("tokyo", date(2027, 5, 3), False, id="tokyo-2027-05-03-constitution-day"),
    pytest.param("tokyo", date(2027, 5, 5), False, id="tokyo-2027-05-05-childrens-day"),
    pytest.param("tokyo", date(2027, 5, 6), True, id="tokyo-2027-05-06-open"),
    pytest.param("dublin", date(2026, 12, 23), True, id="dublin-2026-12-23-open"),
    pytest.param("dublin", date(2026, 12, 24), False, id="dublin-2026-12-24-closure"),
    pytest.param("dublin", date(2026, 12, 25), False, id="dublin-2026-12-25-christmas"),
    pytest.param("dublin", date(2027, 1, 1), False, id="dublin-2027-01-01-new-year"),
    pytest.param("sydney", date(2026, 12, 25), False, id="sydney-2026-12-25-christmas"),
    pytest.param("sydney", date(2026, 12, 28), False, id="sydney-2026-12-28-boxing-day-observed"),
    pytest.param("sydney", date(2026, 12, 29), True, id="sydney-2026-12-29-open"),
    pytest.param("redmond", date(2027, 11, 25), False, id="redmond-2027-11-25-thanksgiving"),
    pytest.param("redmond", date(2027, 11, 26), False, id="redmond-2027-11-26-wa-heritage-day"),
    pytest.param("milan", date(2026, 12, 7), False, id="milan-2026-12-07-sant-ambrogio"),
    pytest.param("madrid", date(2027, 5, 3), False, id="madrid-2027-05-03-comunidad-de-madrid"),
    pytest.param("taipei", date(2027, 2, 6), False, id="taipei-saturday-closed"),
]


@pytest.mark.parametrize(("center_id", "day", "open_"), HOLIDAY_DAYS)
def test_holiday_weeks(center_id: str, day: date, open_: bool) -> None:
    assert bool(opening_spans(center(center_id), day)) is open_
    assert is_working_day(center(center_id), day) is open_


@pytest.mark.parametrize(("subdivision", "day", "open_"), [
    pytest.param(None, date(2027, 1, 6), True, id="de-national-epiphany-is-a-workday"),
    pytest.param("BY", date(2027, 1, 6), False, id="de-by-epiphany"),
    pytest.param("BY", date(2027, 5, 27), False, id="de-by-corpus-christi"),
    pytest.param(None, date(2027, 5, 27), True, id="de-national-corpus-christi-is-a-workday"),
    pytest.param("BY", date(2027, 11, 1), False, id="de-by-all-saints"),
    pytest.param("BE", date(2027, 11, 1), True, id="de-be-all-saints-is-a-workday"),
    pytest.param("BE", date(2027, 3, 8), False, id="de-be-womens-day"),
    pytest.param("BY", date(2027, 3, 8), True, id="de-by-womens-day-is-a-workday"),
    pytest.param(None, date(2027, 5, 17), False, id="de-national-whit-monday"),
])
def test_german_holidays_follow_the_subdivision(subdivision: str | None, day: date,
                                                open_: bool) -> None:
    lab = make_center("Europe/Berlin", every_day("09:00-17:00"), country="DE",
                      subdivision=subdivision)
    assert bool(opening_spans(lab, day)) is open_


@pytest.mark.parametrize(("center_id", "not_before", "expected"), [
    pytest.param("taipei", local("Asia/Taipei", "2027-02-03 18:00"), utc("2027-02-11 01:00"),
                 id="taipei-lunar-new-year-week"),
    pytest.param("shanghai", local("Asia/Shanghai", "2027-02-04 18:00"), utc("2027-02-11 01:00"),
                 id="shanghai-spring-festival-week"),
    pytest.param("seoul", local("Asia/Seoul", "2027-02-05 18:00"), utc("2027-02-10 00:00"),
                 id="seoul-seollal-long-weekend"),
    pytest.param("ho-chi-minh", local("Asia/Ho_Chi_Minh", "2027-02-03 17:30"),
                 utc("2027-02-11 01:00"), id="hcmc-tet-week"),
    pytest.param("tokyo", local("Asia/Tokyo", "2027-04-28 18:00"), utc("2027-04-30 00:00"),
                 id="tokyo-showa-day-skipped"),
    pytest.param("tokyo", local("Asia/Tokyo", "2027-04-30 18:00"), utc("2027-05-06 00:00"),
                 id="tokyo-golden-week"),
    pytest.param("dublin", local("Europe/Dublin", "2026-12-23 17:30"), utc("2027-01-04 09:00"),
                 id="dublin-christmas-shutdown"),
    pytest.param("sydney", local("Australia/Sydney", "2026-12-24 09:00"),
                 utc("2026-12-28 22:00"), id="sydney-christmas-and-boxing-day-observed"),
    pytest.param("taipei", local("Asia/Taipei", "2026-12-30 18:00"), utc("2027-01-04 01:00"),
                 id="taipei-closure-then-founding-day"),
])
def test_earliest_start_across_holidays(center_id: str, not_before: datetime,
                                        expected: datetime) -> None:
    assert earliest_start(center(center_id), POLICY, not_before) == expected


# ------------------------------------------------------------------------------ DST weeks

@pytest.mark.parametrize(("center_id", "day", "first_open"), [
    pytest.param("redmond", date(2027, 3, 12), utc("2027-03-12 16:00"),
                 id="redmond-fri-before-pdt"),
    pytest.param("redmond", date(2027, 3, 15), utc("2027-03-15 15:00"), id="redmond-mon-after-pdt"),
    pytest.param("redmond", date(2027, 11, 5), utc("2027-11-05 15:00"),
                 id="redmond-fri-before-pst"),
    pytest.param("redmond", date(2027, 11, 8), utc("2027-11-08 16:00"), id="redmond-mon-after-pst"),
    pytest.param("munich", date(2027, 3, 25), utc("2027-03-25 07:30"), id="munich-thu-before-cest"),
    pytest.param("munich", date(2027, 3, 26), None, id="munich-good-friday"),
    pytest.param("munich", date(2027, 3, 29), None, id="munich-easter-monday"),
    pytest.param("munich", date(2027, 3, 30), utc("2027-03-30 06:30"), id="munich-tue-after-cest"),
    pytest.param("munich", date(2027, 10, 29), utc("2027-10-29 06:30"), id="munich-fri-before-cet"),
    pytest.param("munich", date(2027, 11, 2), utc("2027-11-02 07:30"), id="munich-tue-after-cet"),
    pytest.param("sydney", date(2027, 4, 2), utc("2027-04-01 22:00"), id="sydney-fri-before-aest"),
    pytest.param("sydney", date(2027, 4, 5), utc("2027-04-04 23:00"), id="sydney-mon-after-aest"),
    pytest.param("sydney", date(2027, 10, 1), utc("2027-09-30 23:00"), id="sydney-fri-before-aedt"),
    pytest.param("sydney", date(2027, 10, 5), utc("2027-10-04 22:00"), id="sydney-tue-after-aedt"),
    pytest.param("sao-paulo", date(2027, 1, 15), utc("2027-01-15 12:00"), id="sao-paulo-january"),
    pytest.param("sao-paulo", date(2027, 7, 15), utc("2027-07-15 12:00"), id="sao-paulo-july"),
    pytest.param("sao-paulo", date(2027, 11, 16), utc("2027-11-16 12:00"),
                 id="sao-paulo-november-no-dst-since-2019"),
])
def test_dst_weeks_move_the_utc_opening(center_id: str, day: date,
                                        first_open: datetime | None) -> None:
    spans = opening_spans(center(center_id), day)
    assert (spans[0][0] if spans else None) == first_open


@pytest.mark.parametrize(("center_id", "not_before", "expected"), [
    pytest.param("redmond", local("America/Los_Angeles", "2027-03-12 17:00"),
                 utc("2027-03-15 15:00"), id="redmond-friday-evening-into-pdt"),
    pytest.param("redmond", local("America/Los_Angeles", "2027-11-05 17:00"),
                 utc("2027-11-08 16:00"), id="redmond-friday-evening-into-pst"),
    pytest.param("munich", local("Europe/Berlin", "2027-10-29 14:00"), utc("2027-11-02 07:30"),
                 id="munich-into-cet-past-all-saints"),
    pytest.param("sydney", local("Australia/Sydney", "2027-10-01 17:00"),
                 utc("2027-10-04 22:00"), id="sydney-into-aedt-past-labour-day"),
])
def test_earliest_start_across_dst_weekends(center_id: str, not_before: datetime,
                                            expected: datetime) -> None:
    assert earliest_start(center(center_id), POLICY, not_before) == expected


def test_sao_paulo_has_had_no_dst_since_2019() -> None:
    sao_paulo = center("sao-paulo")
    offsets = {sao_paulo.zone.utcoffset(datetime(2027, month, 15)) for month in range(1, 13)}
    assert offsets == {timedelta(hours=-3)}
    assert sao_paulo.zone.utcoffset(datetime(2018, 12, 15)) == timedelta(hours=-2)


def dst_case(name: str, zone: str, day: date, interval: str, span: tuple[str, str] | None,
             slots: list[str], meeting: int = 60, step: int = 30, country: str = "US") -> Any:
    return pytest.param(zone, country, day, interval, span, slots, meeting, step, id=name)


DST_NIGHTS = [
    dst_case("la-spring-interval-across-gap", "America/Los_Angeles", date(2027, 3, 14),
             "01:00-04:00", ("2027-03-14 09:00", "2027-03-14 11:00"),
             ["2027-03-14 09:00", "2027-03-14 09:30", "2027-03-14 10:00"]),
    dst_case("la-spring-opening-in-gap-moves-to-03:00", "America/Los_Angeles", date(2027, 3, 14),
             "02:30-05:00", ("2027-03-14 10:00", "2027-03-14 12:00"),
             ["2027-03-14 10:00", "2027-03-14 10:30", "2027-03-14 11:00"]),
    dst_case("la-spring-grid-stays-anchored-to-wall-opening", "America/Los_Angeles",
             date(2027, 3, 14), "02:15-04:00", ("2027-03-14 10:00", "2027-03-14 11:00"),
             ["2027-03-14 10:15"], meeting=30),
    dst_case("la-spring-closing-in-gap-moves-to-03:00", "America/Los_Angeles", date(2027, 3, 14),
             "00:30-02:30", ("2027-03-14 08:30", "2027-03-14 10:00"),
             ["2027-03-14 08:30", "2027-03-14 09:00"]),
    dst_case("la-spring-interval-wholly-in-gap", "America/Los_Angeles", date(2027, 3, 14),
             "02:00-02:45", None, []),
    dst_case("la-fall-repeated-hour-read-once", "America/Los_Angeles", date(2027, 11, 7),
             "00:00-03:00", ("2027-11-07 07:00", "2027-11-07 11:00"),
             ["2027-11-07 07:00", "2027-11-07 07:30", "2027-11-07 08:00", "2027-11-07 08:30",
              "2027-11-07 10:00"]),
    dst_case("la-fall-interval-inside-repeated-hour-uses-first", "America/Los_Angeles",
             date(2027, 11, 7), "01:00-01:45", ("2027-11-07 08:00", "2027-11-07 08:45"),
             ["2027-11-07 08:00", "2027-11-07 08:15", "2027-11-07 08:30"], meeting=15, step=15),
    dst_case("la-fall-real-meeting-fits-in-short-wall-interval", "America/Los_Angeles",
             date(2027, 11, 7), "01:30-02:00", ("2027-11-07 08:30", "2027-11-07 10:00"),
             ["2027-11-07 08:30"]),
    dst_case("berlin-spring", "Europe/Berlin", date(2027, 3, 28), "01:00-04:00",
             ("2027-03-28 00:00", "2027-03-28 02:00"),
             ["2027-03-28 00:00", "2027-03-28 00:30", "2027-03-28 01:00"], country="DE"),
    dst_case("berlin-fall", "Europe/Berlin", date(2027, 10, 31), "01:00-04:00",
             ("2027-10-30 23:00", "2027-10-31 03:00"),
             ["2027-10-30 23:00", "2027-10-30 23:30", "2027-10-31 00:00", "2027-10-31 00:30",
              "2027-10-31 02:00"], country="DE"),
    dst_case("sydney-spring-october", "Australia/Sydney", date(2027, 10, 3), "01:00-04:00",
             ("2027-10-02 15:00", "2027-10-02 17:00"),
             ["2027-10-02 15:00", "2027-10-02 15:30", "2027-10-02 16:00"], country="AU"),
    dst_case("sydney-fall-april", "Australia/Sydney", date(2027, 4, 4), "02:00-04:00",
             ("2027-04-03 15:00", "2027-04-03 18:00"),
             ["2027-04-03 15:00", "2027-04-03 15:30", "2027-04-03 17:00"], country="AU"),
    dst_case("sao-paulo-2018-midnight-gap-moves-opening", "America/Sao_Paulo", date(2018, 11, 4),
             "00:00-02:00", ("2018-11-04 03:00", "2018-11-04 04:00"), ["2018-11-04 03:00"],
             country="BR"),
    dst_case("beirut-midnight-gap-moves-opening", "Asia/Beirut", date(2027, 3, 28),
             "00:00-02:00", ("2027-03-27 22:00", "2027-03-27 23:00"), ["2027-03-27 22:00"]),
    dst_case("beirut-repeated-hour-before-midnight-closes-at-first-23:59", "Asia/Beirut",
             date(2027, 10, 30), "22:00-23:59", ("2027-10-30 19:00", "2027-10-30 20:59"),
             ["2027-10-30 19:00", "2027-10-30 19:30"]),
    dst_case("santiago-midnight-gap-moves-opening", "America/Santiago", date(2027, 9, 5),
             "00:00-02:00", ("2027-09-05 04:00", "2027-09-05 05:00"), ["2027-09-05 04:00"]),
]


@pytest.mark.parametrize(("zone", "country", "day", "interval", "span", "slots", "meeting",
                          "step"), DST_NIGHTS)
def test_dst_night_intervals(zone: str, country: str, day: date, interval: str,
                             span: tuple[str, str] | None, slots: list[str], meeting: int,
                             step: int) -> None:
    lab = make_center(zone, every_day(interval), country=country)
    policy = Policy(meeting_minutes=meeting, slot_step_minutes=step)
    expected_spans = () if span is None else ((utc(span[0]), utc(span[1])),)
    assert opening_spans(lab, day) == expected_spans
    midnight = utc(f"{day} 00:00")
    around = slot_starts(lab, policy, midnight - timedelta(days=1), midnight + timedelta(days=2))
    found = [s for s in around if s.astimezone(lab.zone).date() == day]
    assert found == [utc(s) for s in slots]


@pytest.mark.parametrize(("zone", "country", "day", "hours"), [
    pytest.param("America/Los_Angeles", "US", date(2027, 3, 14), 22.5, id="la-23-hour-day"),
    pytest.param("America/Los_Angeles", "US", date(2027, 11, 7), 24.5, id="la-25-hour-day"),
    pytest.param("America/Los_Angeles", "US", date(2027, 11, 8), 23.5, id="la-ordinary-day"),
    pytest.param("Europe/Berlin", "DE", date(2027, 3, 28), 22.5, id="berlin-23-hour-day"),
    pytest.param("Europe/Berlin", "DE", date(2027, 10, 31), 24.5, id="berlin-25-hour-day"),
    pytest.param("Australia/Sydney", "AU", date(2027, 10, 3), 22.5, id="sydney-23-hour-day"),
    pytest.param("Australia/Sydney", "AU", date(2027, 4, 4), 24.5, id="sydney-25-hour-day"),
    pytest.param("America/Sao_Paulo", "BR", date(2027, 11, 7), 23.5, id="sao-paulo-no-dst"),
])
def test_23_and_25_hour_days(zone: str, country: str, day: date, hours: float) -> None:
    lab = make_center(zone, every_day("00:00-23:30"), country=country)
    ((start, end),) = opening_spans(lab, day)
    assert end - start == timedelta(hours=hours)
    slots = [s for s in slot_starts(lab, POLICY, start, end)]
    assert all(s + timedelta(hours=1) <= end for s in slots)
    assert len(slots) == len(set(slots))


# ------------------------------------------------------------------------------ weekday grid

def test_taipei_tuesday_grid_skips_lunch() -> None:
    taipei = center("taipei")
    day = (local("Asia/Taipei", "2027-03-02 00:00"), local("Asia/Taipei", "2027-03-03 00:00"))
    walls = [s.astimezone(taipei.zone).strftime("%H:%M") for s in slot_starts(taipei, POLICY, *day)]
    assert walls == ["09:00", "09:30", "10:00", "10:30", "11:00",
                     "13:00", "13:30", "14:00", "14:30", "15:00", "15:30", "16:00", "16:30",
                     "17:00"]


@pytest.mark.parametrize(("center_id", "not_before", "expected"), [
    pytest.param("taipei", local("Asia/Taipei", "2027-03-05 18:30"), utc("2027-03-08 01:00"),
                 id="taipei-friday-evening-to-monday"),
    pytest.param("taipei", local("Asia/Taipei", "2027-03-06 11:00"), utc("2027-03-08 01:00"),
                 id="taipei-saturday-to-monday"),
    pytest.param("taipei", local("Asia/Taipei", "2027-03-07 23:59"), utc("2027-03-08 01:00"),
                 id="taipei-sunday-night-to-monday"),
    pytest.param("taipei", local("Asia/Taipei", "2027-03-03 11:30"), utc("2027-03-03 05:00"),
                 id="taipei-meeting-cannot-cross-lunch"),
    pytest.param("taipei", local("Asia/Taipei", "2027-03-03 17:00"), utc("2027-03-03 09:00"),
                 id="taipei-last-slot-ends-at-closing"),
    pytest.param("taipei", local("Asia/Taipei", "2027-03-03 17:00:00.000001"),
                 utc("2027-03-04 01:00"), id="taipei-just-after-last-slot"),
    pytest.param("taipei", local("Asia/Taipei", "2027-03-03 09:10"), utc("2027-03-03 01:30"),
                 id="taipei-rounds-up-to-grid"),
    pytest.param("taipei", utc("2027-03-03 01:30"), utc("2027-03-03 01:30"),
                 id="taipei-exactly-on-grid"),
    pytest.param("munich", local("Europe/Berlin", "2027-03-05 13:30"), utc("2027-03-08 07:30"),
                 id="munich-friday-closes-at-14"),
    pytest.param("munich", local("Europe/Berlin", "2027-03-05 12:45"), utc("2027-03-05 12:00"),
                 id="munich-friday-last-slot-13:00"),
    pytest.param("madrid", local("Europe/Madrid", "2027-03-04 14:00"), utc("2027-03-04 15:00"),
                 id="madrid-long-lunch"),
    pytest.param("redmond", local("America/Los_Angeles", "2027-03-06 10:00"),
                 utc("2027-03-08 16:00"), id="redmond-saturday-to-monday"),
])
def test_earliest_start_weekdays_and_weekends(center_id: str, not_before: datetime,
                                              expected: datetime) -> None:
    found = earliest_start(center(center_id), POLICY, not_before)
    assert found == expected
    assert found is not None and found.tzinfo is UTC


def test_offset_of_not_before_does_not_matter() -> None:
    taipei = center("taipei")
    instant = utc("2027-03-05 10:30")
    answers = {earliest_start(taipei, POLICY, instant.astimezone(ZoneInfo(zone)))
               for zone in ("UTC", "Asia/Taipei", "America/Los_Angeles", "Pacific/Kiritimati")}
    assert answers == {utc("2027-03-08 01:00")}


def test_closures_close_the_day() -> None:
    lab = make_center("Asia/Tokyo", every_day("09:00-17:00"), country="JP",
                      closures=(date(2027, 3, 3),))
    assert opening_spans(lab, date(2027, 3, 3)) == ()
    assert earliest_start(lab, POLICY, local("Asia/Tokyo", "2027-03-02 17:00")) == utc(
        "2027-03-04 00:00")


# ------------------------------------------------------------------------------ horizon, not_after

MONDAYS_ONLY = make_center("UTC", {"mon": ["09:00-10:00"]})


@pytest.mark.parametrize(("not_before", "horizon", "not_after", "expected"), [
    pytest.param(utc("2027-03-02 09:00"), 7, None, utc("2027-03-08 09:00"), id="next-monday"),
    pytest.param(utc("2027-03-02 09:00"), 6, None, None,
                 id="slot-exactly-at-horizon-is-excluded"),
    pytest.param(utc("2027-03-02 09:00"), 5, None, None, id="closed-within-horizon"),
    pytest.param(utc("2027-03-01 09:00"), 1, None, utc("2027-03-01 09:00"), id="at-not-before"),
    pytest.param(utc("2027-03-02 09:00"), 21, utc("2027-03-08 09:00"), utc("2027-03-08 09:00"),
                 id="not-after-is-inclusive"),
    pytest.param(utc("2027-03-02 09:00"), 21, utc("2027-03-08 08:59"), None,
                 id="not-after-before-first-slot"),
    pytest.param(utc("2027-03-02 09:00"), 21, utc("2027-05-01 00:00"), utc("2027-03-08 09:00"),
                 id="not-after-beyond-horizon"),
])
def test_horizon_and_not_after(not_before: datetime, horizon: int, not_after: datetime | None,
                               expected: datetime | None) -> None:
    policy = Policy(horizon_days=horizon)
    assert earliest_start(MONDAYS_ONLY, policy, not_before, not_after) == expected


def test_center_without_hours_never_opens() -> None:
    closed = make_center("UTC", {})
    assert earliest_start(closed, POLICY, utc("2027-03-01 00:00")) is None
    assert next_opening(closed, utc("2027-03-01 00:00")) is None
    assert not is_open_at(closed, utc("2027-03-01 12:00"))


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="not_before must be a timezone-aware"):
        earliest_start(center("taipei"), POLICY, datetime(2027, 3, 1, 9, 0))
    with pytest.raises(ValueError, match="until must be a timezone-aware"):
        list(slot_starts(center("taipei"), POLICY, utc("2027-03-01 00:00"),
                         datetime(2027, 3, 2)))


def test_a_changed_center_with_the_same_id_is_not_served_stale_spans() -> None:
    early = make_center("UTC", every_day("08:00-09:00"), center_id="same")
    late = make_center("UTC", every_day("15:00-16:00"), center_id="same")
    day = date(2027, 3, 1)
    assert opening_spans(early, day) == ((utc("2027-03-01 08:00"), utc("2027-03-01 09:00")),)
    assert opening_spans(late, day) == ((utc("2027-03-01 15:00"), utc("2027-03-01 16:00")),)
    assert earliest_start(late, POLICY, utc("2027-03-01 00:00")) == utc("2027-03-01 15:00")


# ------------------------------------------------------------------------------ dashboard queries

@pytest.mark.parametrize(("instant", "open_", "next_"), [
    pytest.param(local("Asia/Taipei", "2027-03-02 10:00"), True, utc("2027-03-02 05:00"),
                 id="open-morning-next-is-after-lunch"),
    pytest.param(local("Asia/Taipei", "2027-03-02 09:00"), True, utc("2027-03-02 01:00"),
                 id="at-opening"),
    pytest.param(local("Asia/Taipei", "2027-03-02 12:30"), False, utc("2027-03-02 05:00"),
                 id="lunch"),
    pytest.param(local("Asia/Taipei", "2027-03-02 18:00"), False, utc("2027-03-03 01:00"),
                 id="closing-time-is-closed"),
    pytest.param(local("Asia/Taipei", "2027-03-05 18:30"), False, utc("2027-03-08 01:00"),
                 id="friday-evening"),
    pytest.param(local("Asia/Taipei", "2027-02-04 10:00"), False, utc("2027-02-11 01:00"),
                 id="lunar-new-year"),
    pytest.param(local("Asia/Taipei", "2027-02-26 18:00"), False, utc("2027-03-02 01:00"),
                 id="peace-memorial-day-observed-on-monday"),
])
def test_is_open_at_and_next_opening(instant: datetime, open_: bool, next_: datetime) -> None:
    assert is_open_at(center("taipei"), instant) is open_
    assert next_opening(center("taipei"), instant) == next_


# ------------------------------------------------------------------------------ properties

NIGHT_CENTERS = (
    make_center("America/Los_Angeles", every_day("00:00-03:00", "03:30-23:30"), center_id="la"),
    make_center("Europe/Berlin", every_day("01:15-02:45", "02:45-04:00"), country="DE",
                center_id="berlin"),
    make_center("Australia/Sydney", every_day("01:00-04:00"), country="AU", subdivision="NSW",
                center_id="sydney-night"),
    make_center("Asia/Beirut", every_day("00:00-01:30", "22:30-23:59"), center_id="beirut"),
    make_center("America/Santiago", every_day("00:00-00:45", "23:00-23:59"), center_id="santiago"),
)
TRANSITIONS = [utc(text) for text in (
    "2027-03-14 10:00", "2027-11-07 09:00", "2027-03-28 01:00", "2027-10-31 01:00",
    "2027-04-03 16:00", "2027-10-02 16:00", "2027-03-27 22:00", "2027-10-30 21:00",
    "2027-04-04 03:00", "2027-09-05 04:00",
)]
CENTERS = st.sampled_from(DIRECTORY.centers + NIGHT_CENTERS)
POLICIES = st.sampled_from([POLICY, Policy(meeting_minutes=45, slot_step_minutes=15),
                            Policy(meeting_minutes=90, slot_step_minutes=20, horizon_days=3)])
NEAR = st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=3))
INSTANTS = st.one_of(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31),
                 timezones=st.just(UTC)),
    st.builds(lambda at, offset: at + offset, st.sampled_from(TRANSITIONS), NEAR),
)
WINDOWS = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9))
_CALENDARS: dict[tuple[str, str | None], Any] = {}


def holiday(lab: Center, day: date) -> bool:
    key = (lab.country, lab.subdivision)
    calendar = _CALENDARS.setdefault(key, holidays.country_holidays(*key))
    return day in calendar


@settings(max_examples=300, deadline=None)
@given(CENTERS, POLICIES, INSTANTS, WINDOWS)
def test_every_slot_is_inside_business_hours(lab: Center, policy: Policy, not_before: datetime,
                                             window: timedelta) -> None:
    meeting = timedelta(minutes=policy.meeting_minutes)
    slots = list(slot_starts(lab, policy, not_before, not_before + window))
    assert slots == sorted(set(slots))
    for start in slots:
        assert start.tzinfo is UTC
        assert not_before <= start < not_before + window
        wall = start.astimezone(lab.zone)
        day = wall.date()
        assert wall.fold == 0
        assert day not in lab.closures
        assert not holiday(lab, day)
        intervals = lab.hours.get(list(Weekday)[day.weekday()], ())
        on_grid = [i for i in intervals if i.start <= wall.time() < i.end
                   and (wall.hour * 60 + wall.minute - i.start.hour * 60 - i.start.minute)
                   % policy.slot_step_minutes == 0]
        assert on_grid, f"{wall} is not on the grid of {lab.id}"
        assert any(s <= start and start + meeting <= e for s, e in opening_spans(lab, day))
        assert is_open_at(lab, start)
        assert is_open_at(lab, start + meeting - timedelta.resolution)


@settings(max_examples=300, deadline=None)
@given(CENTERS, POLICIES, INSTANTS)
def test_earliest_start_is_the_first_slot(lab: Center, policy: Policy,
                                          not_before: datetime) -> None:
    horizon = not_before + timedelta(days=policy.horizon_days)
    first = next(slot_starts(lab, policy, not_before, horizon), None)
    assert earliest_start(lab, policy, not_before) == first
    assert earliest_start(lab, policy, not_before) == first
    if first is not None:
        assert earliest_start(lab, policy, not_before, not_after=first) == first
        assert earliest_start(lab, policy, not_before,
                              not_after=first - timedelta.resolution) is None
        assert next_opening(lab, not_before) is not None


@settings(max_examples=200, deadline=None)
@given(CENTERS, POLICIES, INSTANTS, WINDOWS, WINDOWS)
def test_slot_search_is_deterministic_and_splits_cleanly(lab: Center, policy: Policy,
                                                         not_before: datetime, first: timedelta,
                                                         second: timedelta) -> None:
    middle, until = not_before + first, not_before + first + second
    whole = list(slot_starts(lab, policy, not_before, until))
    assert whole == list(slot_starts(lab, policy, not_before, until))
    assert whole == [*slot_starts(lab, policy, not_before, middle),
                     *slot_starts(lab, policy, middle, until)]
    twin = lab.model_copy()
    assert whole == list(slot_starts(twin, policy, not_before, until))
    wider = slot_starts(lab, policy, not_before - timedelta(days=3), until + timedelta(days=3))
    assert whole == [s for s in wider if not_before <= s < until], "a slot was missed"


@settings(max_examples=200, deadline=None)
@given(CENTERS, INSTANTS)
def test_next_opening_is_an_opening(lab: Center, instant: datetime) -> None:
    opening = next_opening(lab, instant)
    assert opening is not None
    assert opening >= instant
    assert is_open_at(lab, opening)
    assert not is_open_at(lab, opening - timedelta.resolution) or any(
        e == opening for day in _days_around(lab, opening) for _, e in opening_spans(lab, day))


def _days_around(lab: Center, instant: datetime) -> list[date]:
    day = instant.astimezone(lab.zone).date()
    return [day - timedelta(days=1), day]


@settings(max_examples=200, deadline=None)
@given(CENTERS, POLICIES, INSTANTS, WINDOWS)
def test_daily_slots_group_slot_starts_by_local_date(lab: Center, policy: Policy,
                                                    not_before: datetime,
                                                    window: timedelta) -> None:
    days = list(daily_slots(lab, policy, not_before, not_before + window))
    assert [s for _, slots in days for s in slots] == list(
        slot_starts(lab, policy, not_before, not_before + window))
    assert all(slots and {s.astimezone(lab.zone).date() for s in slots} == {day}
               for day, slots in days)
    assert [day for day, _ in days] == sorted({day for day, _ in days})
