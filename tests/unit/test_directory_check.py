"""Which booked meetings a changed directory no longer allows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.directory import CenterDirectory, parse_directory
from scheduler.directory_check import Invalidity, InvalidMeeting, invalid_meetings
from schemas.events import Meeting
from tests.unit.conftest import directory_data

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
# Dublin (UTC+0 in winter), open Mon-Fri 09:00-17:00; Wednesday 2026-11-25, 10:00-11:00.
MEETING = Meeting(request_id="r-1", center_id="dublin", specialist_id="dublin-01",
                  language="fr", start=datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
                  end=datetime(2026, 11, 25, 11, 0, tzinfo=UTC), uid="r-1@example.com")


def dublin(change: Callable[[dict[str, Any]], None]) -> CenterDirectory:
    data = directory_data()
    change(next(c for c in data["centers"] if c["id"] == "dublin"))
    return parse_directory(data, "<changed>")


def unchanged(center: dict[str, Any]) -> None:
    pass


def close(center: dict[str, Any]) -> None:
    center["closures"] = ["2026-11-25"]


def shorten(center: dict[str, Any]) -> None:
    center["hours"]["wed"] = ["10:30-17:00"]


def drop_wednesdays(center: dict[str, Any]) -> None:
    del center["hours"]["wed"]


def remove_specialist(center: dict[str, Any]) -> None:
    center["specialists"] = center["specialists"][1:]


def remove_french(center: dict[str, Any]) -> None:
    center["specialists"][0]["languages"] = ["en"]


def rename_center(center: dict[str, Any]) -> None:
    center["id"] = "dublin-2"
    for specialist in center["specialists"]:
        specialist["id"] = specialist["id"].replace("dublin", "dublin-2")


def lengthen(center: dict[str, Any]) -> None:
    center["hours"]["wed"] = ["08:00-12:00", "13:00-19:00"]


@pytest.mark.parametrize(("change", "reason"), [
    pytest.param(unchanged, None, id="still-valid"),
    pytest.param(lengthen, None, id="hours-extended-still-valid"),
    pytest.param(close, Invalidity.CLOSED_THAT_DAY, id="closure-added"),
    pytest.param(drop_wednesdays, Invalidity.CLOSED_THAT_DAY, id="weekday-dropped"),
    pytest.param(shorten, Invalidity.OUTSIDE_HOURS, id="hours-shortened"),
    pytest.param(remove_specialist, Invalidity.SPECIALIST_REMOVED, id="specialist-removed"),
    pytest.param(remove_french, Invalidity.LANGUAGE_REMOVED, id="language-removed"),
    pytest.param(rename_center, Invalidity.CENTER_REMOVED, id="center-removed"),
])
def test_a_changed_directory_invalidates_meetings(change: Callable[[dict[str, Any]], None],
                                                  reason: Invalidity | None) -> None:
    expected = [] if reason is None else [InvalidMeeting(MEETING, reason)]
    assert invalid_meetings(dublin(change), [MEETING], NOW) == expected


def test_a_public_holiday_closes_the_day() -> None:
    christmas = MEETING.model_copy(update={"start": datetime(2026, 12, 25, 10, tzinfo=UTC),
                                           "end": datetime(2026, 12, 25, 11, tzinfo=UTC)})
    assert invalid_meetings(dublin(unchanged), [christmas], NOW) == [
        InvalidMeeting(christmas, Invalidity.CLOSED_THAT_DAY)]


def test_meetings_that_already_started_are_left_alone() -> None:
    later = MEETING.start + timedelta(minutes=1)
    assert invalid_meetings(dublin(close), [MEETING], later) == []


def test_a_meeting_across_the_lunch_break_is_outside_hours() -> None:
    def lunch(center: dict[str, Any]) -> None:
        center["hours"]["wed"] = ["09:00-10:30", "11:00-17:00"]

    assert invalid_meetings(dublin(lunch), [MEETING], NOW) == [
        InvalidMeeting(MEETING, Invalidity.OUTSIDE_HOURS)]
