"""Meeting invites: iCalendar (RFC 5545, iTIP RFC 5546) and the iMIP email around it (RFC 6047).

Pure rendering: every input, the clock included, is passed in. The words are
:mod:`scheduler.invite_wording`'s; escaping and line folding are icalendar's, so no field can start
a property, parameter or component of its own.

What is costly and always the same is remembered, never changing a byte of the output: each
zone's VTIMEZONE per span of years, the last invites :func:`build_invite` rendered (so
:func:`build_imip_message`, called right after with the same bytes, need not parse them or word
them again), and one class per email header name.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP, Policy
from email.utils import format_datetime as rfc5322_date
from functools import lru_cache

from icalendar import Calendar, Event, Timezone, vCalAddress

from scheduler.directory import Center
from scheduler.ical_lines import ical_bytes
from scheduler.invite_addressing import (
    address_message,
    attendees,
    meeting_specialist,
    message_id,
    per_policy,
)
from scheduler.invite_values import InvalidInvite, header_text, mailto, one_line
from scheduler.invite_wording import InviteText, Method, invite_text
from schemas.events import Meeting
from schemas.help_request import HelpRequest

__all__ = ["PRODID", "InvalidInvite", "Method", "build_imip_message", "build_invite"]

PRODID = "-//FastTrack//Scheduling Service//EN"


def build_invite(meeting: Meeting, request: HelpRequest, center: Center, *, sequence: int,
                 method: Method, now: datetime) -> bytes:
    """Render the iTIP ``REQUEST`` or ``CANCEL`` for a meeting as iCalendar bytes (CRLF, folded).

    ``sequence`` is the RFC 5545 SEQUENCE: 0 for the first invitation, higher for every change.
    """
    _check(method, sequence, now)
    text = invite_text(meeting, request, center, method=method, sequence=sequence)
    zone = center.zone
    event = Event()
    event.add("uid", meeting.uid)
    event.add("dtstamp", now.astimezone(UTC))
    event.add("sequence", sequence)
    event.add("dtstart", meeting.start.astimezone(zone))
    event.add("dtend", meeting.end.astimezone(zone))
    event.add("summary", text.summary, parameters={"LANGUAGE": meeting.language})
    event.add("description", text.description(), parameters={"LANGUAGE": meeting.language})
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    event.add("transp", "OPAQUE")
    event.add("organizer", vCalAddress.new(mailto(center.mailbox, "center.mailbox"),
                                           cn=one_line(center.name)))
    for who in attendees(request, meeting_specialist(meeting, center)):
        event.add("attendee", vCalAddress.new(
            mailto(who.email, who.field), cn=one_line(who.name), cutype="INDIVIDUAL",
            role="REQ-PARTICIPANT", partstat="NEEDS-ACTION", rsvp=True))
    if text.join_url:
        event.add("location", text.join_url)
        event.add("url", text.join_url)
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", method)
    calendar.add_component(event)
    ics = _to_ical_with_timezones(calendar, first_date=date(meeting.start.year, 1, 1),
                                  last_date=date(meeting.end.year + 1, 1, 1))
    if _PLAIN_UID.fullmatch(meeting.uid):
        _remember(ics, _Rendered(method, meeting.uid, sequence, (meeting, request, center), text))
    return ics


def build_imip_message(ics: bytes, meeting: Meeting, request: HelpRequest, center: Center, *,
                       method: Method, now: datetime) -> EmailMessage:
    """Wrap invite bytes from :func:`build_invite` in an RFC 6047 iMIP email.

    From the center's mailbox (the ORGANIZER) to every ATTENDEE: ``multipart/mixed`` holding
    ``multipart/alternative`` (text, HTML, ``text/calendar; method=...``) and the same bytes as
    the ``invite.ics`` attachment. The subject says "updated" when the invite's SEQUENCE is > 0.
    """
    rendered = _recall(ics)
    if rendered is None:
        sequence = _sequence_of(ics, meeting.uid, method)
    else:  # what the bytes say, known without parsing them again
        sequence = _checked_sequence((rendered.method, rendered.uid, rendered.sequence),
                                     meeting.uid, method)
    _check(method, sequence, now)
    if rendered is not None and rendered.inputs_are(meeting, request, center):
        text = rendered.text  # the same (frozen) inputs, method and sequence: the same words
    else:
        text = invite_text(meeting, request, center, method=method, sequence=sequence)
    message = EmailMessage(policy=_POLICY)
    address_message(message, meeting, request, center)
    message["Subject"] = header_text(text.subject)
    message["Date"] = rfc5322_date(now.astimezone(UTC))
    message["Message-ID"] = message_id(meeting.uid, sequence, method, center.mailbox)
    message.set_content(text.plain_body(), charset="utf-8")
    message.add_alternative(text.html_body(meeting.language), subtype="html", charset="utf-8")
    message.add_alternative(ics, maintype="text", subtype="calendar", cte="base64",
                            params={"method": method, "charset": "UTF-8"})
    message.add_attachment(ics, maintype="application", subtype="ics", filename="invite.ics")
    message["Content-Language"] = meeting.language  # after set_content, which drops Content-*
    _stable_boundaries(message)
    return message


def _sequence_of(ics: bytes, uid: str, method: str) -> int:
    """The invite's SEQUENCE, after checking it is the invite for this meeting and method."""
    try:
        calendar = Calendar.from_ical(ics)
        (event,) = calendar.events
        found = (str(calendar["METHOD"]), str(event["UID"]), event.sequence)
    except (ValueError, KeyError) as exc:
        raise InvalidInvite(f"ics: not an invite from build_invite: {exc}") from exc
    return _checked_sequence(found, uid, method)


def _checked_sequence(found: tuple[str, str, int], uid: str, method: str) -> int:
    """SEQUENCE of an invite whose (METHOD, UID, SEQUENCE) is ``found``, if it is the invite for
    this meeting and method."""
    if found[:2] != (method, uid):
        raise InvalidInvite(f"ics: is METHOD {found[0]} for UID {found[1]!r}, "
                            f"not {method} for {uid!r}")
    return found[2]


# -- what build_invite just rendered ------------------------------------------------------------


@dataclass(frozen=True)
class _Rendered:
    """What :func:`build_invite` put into one ``.ics``, and the words it used."""

    method: str
    uid: str
    sequence: int
    inputs: tuple[Meeting, HelpRequest, Center]
    text: InviteText

    def inputs_are(self, meeting: Meeting, request: HelpRequest, center: Center) -> bool:
        # Identity, not equality: the models are frozen, and the entry holds them, so an id
        # cannot be reused while it is remembered.
        held = self.inputs
        return held[0] is meeting and held[1] is request and held[2] is center


_RENDERED_MAX = 64
#: UIDs that read back from the ``.ics`` unchanged: nothing icalendar escapes, folds into a
#: parameter or strips. Invites with any other UID are not remembered, so always parsed.
_PLAIN_UID = re.compile(r"[A-Za-z0-9@._+:=-]{1,255}")
_rendered: OrderedDict[bytes, _Rendered] = OrderedDict()
_rendered_lock = threading.Lock()


def _remember(ics: bytes, rendered: _Rendered) -> None:
    """Keep the last few invites, keyed by their exact bytes: :func:`build_imip_message` then
    knows their METHOD, UID and SEQUENCE without parsing them. The bytes decide all three, and
    only plain UIDs are kept, so a hit is exactly what parsing the bytes would find."""
    with _rendered_lock:
        _rendered[ics] = rendered
        _rendered.move_to_end(ics)
        while len(_rendered) > _RENDERED_MAX:
            _rendered.popitem(last=False)


def _recall(ics: bytes) -> _Rendered | None:
    with _rendered_lock:
        return _rendered.get(ics)


# -- VTIMEZONE components -----------------------------------------------------------------------


def _to_ical_with_timezones(calendar: Calendar, first_date: date, last_date: date) -> bytes:
    """``calendar.add_missing_timezones(first_date, last_date)`` then ``calendar.to_ical()``
    (icalendar 7.x), for a calendar without VTIMEZONEs, with every VTIMEZONE from a cache and
    the lines folded by :func:`scheduler.ical_lines.ical_bytes`.

    Building a VTIMEZONE walks the zone's offsets over the whole span and was most of the cost
    of an invite (icalendar's own advice: "Please cache the results"). The same TZIDs (those
    used, UTC excepted; unknown ones left out), in the same order, in the same place: before
    every other component. A component serializes as its own lines wherever it is, so its
    bytes go in front of the first ``BEGIN:`` line after ``BEGIN:VCALENDAR`` (a folded line
    starts with a space, and no calendar property is named BEGIN). Cached as bytes: nothing an
    invite does can change them.
    """
    if calendar.timezones:
        raise ValueError("the calendar already has VTIMEZONE components")
    missing = calendar.get_missing_tzids()
    ics = ical_bytes(calendar)
    timezones = [ical for tzid in missing
                 if (ical := _vtimezone_ical(tzid, first_date, last_date)) is not None]
    if not timezones:
        return ics
    at = ics.index(b"\r\nBEGIN:", len(b"BEGIN:VCALENDAR")) + len(b"\r\n")
    return b"".join((ics[:at], *timezones, ics[at:]))


@lru_cache(maxsize=256)
def _vtimezone_ical(tzid: str, first_date: date, last_date: date) -> bytes | None:
    """The VTIMEZONE for ``tzid`` from ``first_date`` to ``last_date`` as iCalendar bytes; None
    when icalendar does not know the zone (``add_missing_timezones`` skips those too).

    :func:`build_invite` gives 1 January for both dates: one entry per (zone, first year, last
    year).
    """
    try:
        timezone = Timezone.from_tzid(tzid, first_date=first_date, last_date=last_date)
    except ValueError:
        return None
    return bytes(timezone.to_ical())


# -- email headers ------------------------------------------------------------------------------


class _SharedHeader(BaseHeader):
    """A header that may appear in many messages (see :class:`_HeaderClasses`), folding once
    per policy: a header never changes once built, and folding it (the generator does, for
    every message that holds it) costs about as much as parsing it."""

    def fold(self, *, policy: Policy) -> str:
        return per_policy(self, "_folds", policy, lambda: BaseHeader.fold(self, policy=policy))


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, building each header class once and each header from a
    given string once.

    ``HeaderRegistry[name]`` creates a new class (``type(...)``) for every header it parses,
    which in Python 3.11 costs about as much as parsing a short header and leaves garbage for
    the cyclic collector. The classes have no state of their own, so one per header name serves
    all. Only the invite's own headers pass through here (a fixed few names).

    A header is immutable once parsed (a ``str`` with its parse tree), and most of an invite's
    headers are the same in every invite: the MIME structure's ``Content-Type``,
    ``Content-Transfer-Encoding`` and ``Content-Disposition`` (set, then read and set again by
    ``set_param``), ``MIME-Version``, the center's ``From``. Parsing them was a quarter of a
    worker's time, so a header built from a string is kept, by its exact name and value, and
    given to every message that sets the same; headers built from objects are not, nor the
    headers whose value is new in every invite (:data:`_NEVER_SHARED`). The rest are
    kept least recently used first out, :data:`_PARSED_MAX` at most: the shared ones are used
    by every invite and stay, the few other unique values (the boundaries' ``Content-Type``)
    pass through soon.
    """

    def __init__(self) -> None:
        super().__init__(base_class=_SharedHeader)
        self._classes: dict[str, type[BaseHeader]] = {}
        self._parsed: OrderedDict[tuple[str, str], BaseHeader] = OrderedDict()
        self._parsed_lock = threading.Lock()

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls

    def __call__(self, name: str, value: object) -> BaseHeader:
        if not isinstance(value, str) or name.lower() in _NEVER_SHARED:
            return super().__call__(name, value)
        key = (name, value)
        with self._parsed_lock:
            header = self._parsed.get(key)
            if header is not None:
                self._parsed.move_to_end(key)
                return header
        header = super().__call__(name, value)
        with self._parsed_lock:
            self._parsed[key] = header
            if len(self._parsed) > _PARSED_MAX:
                self._parsed.popitem(last=False)
        return header


#: Headers kept by :class:`_HeaderClasses`. An invite shares about a dozen and brings two
#: of its own (the boundaries); a small cache keeps allocations short-lived (a 4,096-entry
#: cache emptied when full held thousands of dead parse trees at a time).
_PARSED_MAX = 256
#: Header names whose value is new in every invite: never worth keeping (``To`` names the
#: requester).
_NEVER_SHARED = frozenset({"subject", "date", "message-id", "to"})

#: ``email.policy.SMTP`` in every respect but the header factory above.
_POLICY = SMTP.clone(header_factory=_HeaderClasses())


def _check(method: str, sequence: int, now: datetime) -> None:
    if method not in ("REQUEST", "CANCEL"):
        raise InvalidInvite(f"method: {method!r} is not REQUEST or CANCEL")
    if sequence < 0:
        raise InvalidInvite(f"sequence: {sequence} is negative")
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInvite("now: must be an aware datetime")


def _stable_boundaries(message: EmailMessage) -> None:
    """Boundaries from the message id, so a resend is byte-identical (``=_`` is never base64)."""
    token = str(message["Message-ID"]).strip("<>").partition("@")[0]
    message.set_boundary(f"=_mixed_{token}")
    for part in message.iter_parts():
        if part.get_content_type() == "multipart/alternative":
            part.set_boundary(f"=_alternative_{token}")

