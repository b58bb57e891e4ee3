"""iCalendar bytes of one property: icalendar's content line, folded on bytes.

``Component.to_ical()`` folds every content line with a loop over its characters, encoding
each one to count its bytes. An invite's DESCRIPTION runs to hundreds of bytes in every
language, so that loop was a quarter of :func:`scheduler.invites.build_invite`. The same fold
is a few slices of the UTF-8 bytes: :func:`folded` gives icalendar's bytes exactly (the tests
compare the two over arbitrary text), and hands icalendar the lines it would refuse.

:func:`property_line` is one property as ``Component.to_ical()`` writes it: icalendar picks the
value type, escapes the value and writes the parameters (``Component.add`` and
``Component.content_line``, both public), :func:`folded` folds the line. Building the whole
``Calendar`` instead walks it again to sort its properties, find its time zones and encode
every value: most of the cost of an invite whose lines are the same for many invites.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from icalendar import Event
from icalendar.parser.content_line import Contentline

__all__ = ["folded", "property_line", "property_line_and_tzid"]

#: icalendar's limit: a line holds at most 74 octets before its CRLF (a continuation line 75,
#: with its leading space).
_MAX_OCTETS = 74
_FOLD = b"\r\n "
#: icalendar never ends a line on a TEXT backslash escape or an RFC 6868 parameter escape
#: (its issue #1501): the character moves to the next line.
_ESCAPES = b"\\^"


def property_line(name: str, value: Any, parameters: Mapping[str, Any] | None = None) -> bytes:
    """The folded content line of property ``name`` as a component given
    ``add(name, value, parameters)`` writes it in ``to_ical()``."""
    return property_line_and_tzid(name, value, parameters)[0]


def property_line_and_tzid(name: str, value: Any, parameters: Mapping[str, Any] | None = None,
                           ) -> tuple[bytes, str | None]:
    """:func:`property_line`, and the TZID parameter icalendar gave the property (a time in a
    zone other than UTC has one: its VTIMEZONE must be in the calendar)."""
    component = Event()  # any component: the value's type depends on the name, not on it
    component.add(name, value, dict(parameters or {}))
    key = name.upper()
    prop = component[key]
    params = getattr(prop, "params", {})
    return folded(component.content_line(key, prop)), params.get("TZID")


def folded(line: Contentline) -> bytes:
    """``line.to_ical()``: the line in UTF-8, folded before any character that would take it
    past 74 octets, never inside a character, never just after an escape character."""
    if "\n" in line:
        return bytes(line.to_ical())  # icalendar refuses it
    try:
        data = line.encode("utf-8")
    except UnicodeEncodeError:
        return bytes(line.to_ical())  # a lone surrogate: icalendar raises the same error
    if len(data) <= _MAX_OCTETS:
        return data
    pieces = []
    start = 0
    while len(data) - start > _MAX_OCTETS:
        end = start + _MAX_OCTETS
        while data[end] & 0xC0 == 0x80:  # a continuation byte: the character starts earlier
            end -= 1
        if data[end - 1] in _ESCAPES:
            end -= 1
        pieces.append(data[start:end])
        start = end
    pieces.append(data[start:])
    return _FOLD.join(pieces)
