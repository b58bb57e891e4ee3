"""Folding on bytes gives icalendar's own bytes, for any text and any calendar."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar, Event
from icalendar.parser.content_line import Contentline

from scheduler.ical_lines import folded, property_line, property_line_and_tzid

#: Characters that move the folds: escapes icalendar keeps whole, and 1- to 4-byte UTF-8.
_AWKWARD = "\\^;,:\"aé€中한ไ𝄞 "
lines = st.text(alphabet=st.one_of(st.sampled_from(_AWKWARD), st.characters(
    exclude_categories=["Cs"], exclude_characters="\n")), max_size=400)


@settings(max_examples=400, deadline=None)
@given(lines)
def test_a_line_folds_as_icalendar_folds_it(text: str) -> None:
    line = Contentline(text)
    assert folded(line) == line.to_ical()


@pytest.mark.parametrize("text", [
    pytest.param("x" * 73 + "\\" + "n" * 80, id="escape-on-the-last-octet"),
    pytest.param("x" * 72 + "\\\\" + "y" * 80, id="escaped-backslash-at-the-edge"),
    pytest.param("x" * 73 + "^" + "'" * 80, id="parameter-escape-at-the-edge"),
    pytest.param("x" * 73 + "é" * 60, id="two-byte-character-across-the-edge"),
    pytest.param("x" * 72 + "中" * 60, id="three-byte-character-across-the-edge"),
    pytest.param("x" * 71 + "𝄞" * 40, id="four-byte-character-across-the-edge"),
    pytest.param("x" * 74, id="exactly-74-octets"),
    pytest.param("x" * 75, id="exactly-75-octets"),
    pytest.param("\\" * 200, id="only-escapes"),
])
def test_lines_at_the_fold_edge(text: str) -> None:
    line = Contentline(text)
    assert folded(line) == line.to_ical()
    assert all(len(piece) <= 75 for piece in folded(line).split(b"\r\n"))


def test_a_line_icalendar_refuses_is_refused_the_same_way() -> None:
    with pytest.raises(UnicodeEncodeError):
        Contentline("DESCRIPTION:\udc80").to_ical()
    with pytest.raises(UnicodeEncodeError):
        folded(Contentline("DESCRIPTION:\udc80"))
    with pytest.raises(AssertionError):  # icalendar asserts a content line has no newline
        folded(Contentline("DESCRIPTION:one\ntwo"))


@settings(max_examples=100, deadline=None)
@given(summary=lines, description=lines,
       name=st.text(min_size=1, max_size=60).filter(lambda s: "\n" not in s))
def test_a_property_line_is_the_line_to_ical_writes(summary: str, description: str,
                                                     name: str) -> None:
    properties: list[tuple[str, Any, dict[str, str] | None]] = [
        ("uid", "abc@example.com", None),
        ("dtstamp", datetime(2026, 11, 24, 9, 0, tzinfo=UTC), None),
        ("summary", summary, {"LANGUAGE": "ja"}),
        ("description", description, None),
        ("organizer", "mailto:center@example.com", {"CN": name}),
        ("sequence", 3, None),
    ]
    for prop, value, parameters in properties:
        event = Event()
        event.add(prop, value, parameters=parameters)
        line = property_line(prop, value, parameters)
        assert b"BEGIN:VEVENT\r\n" + line + b"\r\nEND:VEVENT\r\n" == event.to_ical(), prop


@pytest.mark.parametrize("zone,tzid", [("Europe/Dublin", "Europe/Dublin"),
                                       ("Etc/GMT-14", "Etc/GMT-14"), ("UTC", None)])
def test_a_time_says_which_zone_it_needs(zone: str, tzid: str | None) -> None:
    moment = datetime(2026, 11, 24, 9, 0, tzinfo=ZoneInfo(zone))
    event = Event()
    event.add("dtstart", moment)
    line, found = property_line_and_tzid("DTSTART", moment)
    assert line == event.content_line("DTSTART", event["DTSTART"]).to_ical()
    assert found == tzid
    assert Calendar.from_ical(b"BEGIN:VEVENT\r\n" + line + b"\r\nEND:VEVENT\r\n"
                              ).get("DTSTART").dt == moment
