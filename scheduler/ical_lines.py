"""iCalendar bytes of a component: icalendar's content lines, folded on bytes.

``Component.to_ical()`` folds every content line with a loop over its characters, encoding
each one to count its bytes. An invite's DESCRIPTION runs to hundreds of bytes in every
language, so that loop was a quarter of :func:`scheduler.invites.build_invite`. The same fold
is a few slices of the UTF-8 bytes: :func:`folded` gives icalendar's bytes exactly (the tests
compare the two over arbitrary text), and hands icalendar the lines it would refuse.
"""

from __future__ import annotations

from icalendar.cal.component import Component
from icalendar.parser.content_line import Contentline

__all__ = ["folded", "ical_bytes"]

#: icalendar's limit: a line holds at most 74 octets before its CRLF (a continuation line 75,
#: with its leading space).
_MAX_OCTETS = 74
_FOLD = b"\r\n "
#: icalendar never ends a line on a TEXT backslash escape or an RFC 6868 parameter escape
#: (its issue #1501): the character moves to the next line.
_ESCAPES = b"\\^"


def ical_bytes(component: Component) -> bytes:
    """``component.to_ical()``: the same content lines, joined and folded the same way."""
    return b"\r\n".join(folded(line) for line in component.content_lines() if line) + b"\r\n"


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
