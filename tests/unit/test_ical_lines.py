"""Folding on bytes gives icalendar's own bytes, for any text and any calendar."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar, Event
from icalendar.parser.content_line import Contentline

from scheduler.ical_lines import folded, ical_bytes

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
def test_a_calendar_is_the_bytes_of_to_ical(summary: str, description: str, name: str) -> None:
    event = Event()
    event.add("uid", "abc@example.com")
    event.add("dtstamp", datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
    event.add("summary", summary, parameters={"LANGUAGE": "ja"})
    event.add("description", description)
    event.add("organizer", "mailto:center@example.com", parameters={"CN": name})
    calendar = Calendar()
    calendar.add("prodid", "-//test//EN")
    calendar.add("version", "2.0")
    calendar.add_component(event)
    assert ical_bytes(calendar) == calendar.to_ical()
