"""Meeting invites: iCalendar (RFC 5545, iTIP RFC 5546) and the iMIP email around it (RFC 6047).

Pure rendering: every input, the clock included, is passed in. The words are
:mod:`scheduler.invite_wording`'s; escaping and line folding are icalendar's, so no field can start
a property, parameter or component of its own.

What is costly and always the same is remembered, never changing a byte of the output: each
zone's VTIMEZONE per span of years, the content lines many invites share (a slot's times, a
center's ORGANIZER, a specialist's ATTENDEE), and the last invites :func:`build_invite`
rendered (so :func:`build_imip_message`, called right after with the same bytes, need not parse
them or word them again).
"""

from __future__ import annotations

import base64
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.policy import Compat32
from email.utils import format_datetime as rfc5322_date
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, Timezone, vCalAddress
from icalendar.caselessdict import canonsort_keys

from scheduler.directory import Center
from scheduler.ical_lines import property_line, property_line_and_tzid
from scheduler.invite_addressing import address_headers, invite_attendees, message_id
from scheduler.invite_values import InvalidInvite, header_text, mailto, one_line
from scheduler.invite_wording import InviteText, Method, handover_text, invite_text
from schemas.events import Meeting
from schemas.help_request import HelpRequest

__all__ = ["HANDOVER", "PRODID", "InvalidInvite", "Method", "build_imip_message",
           "build_invite"]

PRODID = "-//FastTrack//Scheduling Service//EN"
#: The kind of the CANCEL a specialist gets when their meeting is handed over to another
#: specialist (``only_specialist``): its Message-ID is its own, apart from any CANCEL to all.
HANDOVER = "CANCEL-HANDOVER"


def build_invite(meeting: Meeting, request: HelpRequest, center: Center, *, sequence: int,
                 method: Method, now: datetime, only_specialist: bool = False) -> bytes:
    """Render the iTIP ``REQUEST`` or ``CANCEL`` for a meeting as iCalendar bytes (CRLF, folded).

    ``sequence`` is the RFC 5545 SEQUENCE: 0 for the first invitation, higher for every change.
    ``only_specialist``: the CANCEL that removes the meeting's specialist alone, when the
    meeting was handed over to another specialist (RFC 5546 §3.2.5: the removed attendee is
    sent a CANCEL with the update's SEQUENCE; the others get the REQUEST).

    The bytes are those of an icalendar ``Calendar`` holding one ``Event`` (every property
    added with ``add``) after ``add_missing_timezones`` for the meeting's years, written by
    ``to_ical()``: the same lines in the same order (a property test compares the two). Each
    line is icalendar's (:func:`scheduler.ical_lines.property_line`), and the lines that many
    invites share (the calendar's head, the slot's times, the center's ORGANIZER, a
    specialist's ATTENDEE, a language's SUMMARY, each VTIMEZONE) are written once.
    """
    _check(method, sequence, now, only_specialist)
    text = _words(meeting, request, center, method, sequence, only_specialist)
    language = meeting.language
    dtstart, tzid = _zoned_line("DTSTART", meeting.start, center.zone)
    dtend, end_tzid = _zoned_line("DTEND", meeting.end, center.zone)
    event: dict[str, list[bytes]] = {
        "SUMMARY": [_shared_line("SUMMARY", text.summary, language)],
        "DTSTART": [dtstart],
        "DTEND": [dtend],
        "DTSTAMP": [_stamp_line(now.astimezone(UTC))],
        "UID": [property_line("UID", meeting.uid)],
        "SEQUENCE": [_shared_line("SEQUENCE", sequence)],
        "ATTENDEE": [_address_line("ATTENDEE", who.email, who.field, who.name)
                     for who in invite_attendees(meeting, request, center,
                                                 only_specialist=only_specialist)],
        "DESCRIPTION": [property_line("DESCRIPTION", text.description(),
                                      {"LANGUAGE": language})],
        "ORGANIZER": [_address_line("ORGANIZER", center.mailbox, "center.mailbox",
                                    center.name)],
        "STATUS": [_shared_line("STATUS", "CANCELLED" if method == "CANCEL" else "CONFIRMED")],
        "TRANSP": [_shared_line("TRANSP", "OPAQUE")],
    }
    if text.join_url:
        event["LOCATION"] = [property_line("LOCATION", text.join_url)]
        event["URL"] = [property_line("URL", text.join_url)]
    first_date, last_date = date(meeting.start.year, 1, 1), date(meeting.end.year + 1, 1, 1)
    timezones = [ical for zone in dict.fromkeys((tzid, end_tzid)) if zone and zone != "UTC"
                 and (ical := _vtimezone_ical(zone, first_date, last_date)) is not None]
    ics = b"".join((_calendar_head(method), *timezones, b"BEGIN:VEVENT\r\n",
                    *(line + b"\r\n" for name in _event_order(tuple(event))
                      for line in event[name]),
                    b"END:VEVENT\r\nEND:VCALENDAR\r\n"))
    if _PLAIN_UID.fullmatch(meeting.uid):
        _remember(ics, _Rendered(method, meeting.uid, sequence, (meeting, request, center),
                                 only_specialist, text))
    return ics


def build_imip_message(ics: bytes, meeting: Meeting, request: HelpRequest, center: Center, *,
                       method: Method, now: datetime, only_specialist: bool = False) -> Message:
    """Wrap invite bytes from :func:`build_invite` in an RFC 6047 iMIP email.

    From the center's mailbox (the ORGANIZER) to every ATTENDEE (``only_specialist``: to the
    specialist alone, as :func:`build_invite` was told): ``multipart/mixed`` holding
    ``multipart/alternative`` (text, HTML, ``text/calendar; method=...``) and the same bytes as
    the ``invite.ics`` attachment. The subject says "updated" when the invite's SEQUENCE is > 0.

    Built with the email package's ``email.mime`` classes and its ``compat32`` policy (CRLF):
    every value is set once and written as set, where ``email.policy.SMTP`` parses each
    header into a tree and folds it back (most of what the email cost). The message's
    bytes are what a backend sends; one that needs its parts (EWS, Graph) parses them back
    (:func:`scheduler.delivery.parsed_email`).
    """
    rendered = _recall(ics)
    if rendered is None:
        sequence = _sequence_of(ics, meeting.uid, method)
    else:  # what the bytes say, known without parsing them again
        sequence = _checked_sequence((rendered.method, rendered.uid, rendered.sequence),
                                     meeting.uid, method)
    _check(method, sequence, now, only_specialist)
    if rendered is not None and rendered.inputs_are(meeting, request, center, only_specialist):
        text = rendered.text  # the same (frozen) inputs, method and sequence: the same words
    else:
        text = _words(meeting, request, center, method, sequence, only_specialist)
    mid = message_id(meeting.uid, sequence, HANDOVER if only_specialist else method,
                     center.mailbox)
    # Boundaries from the message id, so a resend is byte-identical. ``=_`` never occurs in
    # base64, which every part is, so any boundary starting with it is safe (RFC 2045 §6.7);
    # 16 hex digits keep each Content-Type within one line, written as is (see _WirePolicy).
    token = mid.strip("<>").partition("@")[0][:16]
    ics_base64 = _base64(ics)  # the calendar part and the attachment carry the same bytes
    alternative = MIMEMultipart("alternative", f"=_alternative_{token}", [
        _text_part(text.plain_body(), "plain"),
        _text_part(text.html_body(meeting.language), "html"),
        _base64_part(f'text/calendar; method="{method}"; charset="UTF-8"', ics_base64),
    ], policy=_POLICY)
    attachment = _base64_part("application/ics", ics_base64,
                              disposition='attachment; filename="invite.ics"')
    message = MIMEMultipart("mixed", f"=_mixed_{token}", [alternative, attachment],
                            policy=_POLICY)
    sender, recipients = address_headers(meeting, request, center, _POLICY,
                                         only_specialist=only_specialist)
    message["From"] = sender
    message["To"] = recipients
    message["Subject"] = header_text(text.subject)  # compat32 encodes it when not ASCII
    message["Date"] = rfc5322_date(now.astimezone(UTC))
    message["Message-ID"] = mid
    message["Content-Language"] = meeting.language
    return message


def _words(meeting: Meeting, request: HelpRequest, center: Center, method: Method,
           sequence: int, only_specialist: bool) -> InviteText:
    if only_specialist:
        return handover_text(meeting, request, center)
    return invite_text(meeting, request, center, method=method, sequence=sequence)


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
    only_specialist: bool
    text: InviteText

    def inputs_are(self, meeting: Meeting, request: HelpRequest, center: Center,
                   only_specialist: bool) -> bool:
        # Identity, not equality: the models are frozen, and the entry holds them, so an id
        # cannot be reused while it is remembered.
        held = self.inputs
        return (held[0] is meeting and held[1] is request and held[2] is center
                and self.only_specialist == only_specialist)


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


# -- content lines, VTIMEZONE components --------------------------------------------------------


@lru_cache(maxsize=8)
def _calendar_head(method: str) -> bytes:
    """``BEGIN:VCALENDAR`` and the calendar's properties, in ``Calendar.canonical_order``."""
    properties = {"PRODID": PRODID, "VERSION": "2.0", "CALSCALE": "GREGORIAN", "METHOD": method}
    lines = [property_line(name, properties[name])
             for name in canonsort_keys(properties, Calendar.canonical_order)]
    return b"".join(line + b"\r\n" for line in (b"BEGIN:VCALENDAR", *lines))


@lru_cache(maxsize=64)
def _event_order(names: tuple[str, ...]) -> list[str]:
    """The order ``to_ical()`` writes an event's properties in: ``Event.canonical_order``
    first, then by name."""
    return canonsort_keys(names, Event.canonical_order)


@lru_cache(maxsize=4096)
def _zoned_line(name: str, moment: datetime, zone: ZoneInfo) -> tuple[bytes, str | None]:
    """A DTSTART or DTEND at ``moment`` in ``zone``, and its TZID: meetings share slots."""
    return property_line_and_tzid(name, moment.astimezone(zone))


@lru_cache(maxsize=256)
def _shared_line(name: str, value: str | int, language: str | None = None) -> bytes:
    """A property line many invites share: a language's SUMMARY, a SEQUENCE, a STATUS."""
    return property_line(name, value, {"LANGUAGE": language} if language else None)


@lru_cache(maxsize=4)
def _stamp_line(now: datetime) -> bytes:
    """The DTSTAMP: one for all the invites a batch renders at the same time."""
    return property_line("DTSTAMP", now)


@lru_cache(maxsize=1024)
def _address_line(name: str, email: str, field: str, display_name: str) -> bytes:
    """An ORGANIZER (the center's) or ATTENDEE line: a specialist's is the same in every
    invite they get. An address that is refused raises every time (errors are not kept)."""
    address = mailto(email, field)
    if name == "ORGANIZER":
        return property_line(name, vCalAddress.new(address, cn=one_line(display_name)))
    return property_line(name, vCalAddress.new(
        address, cn=one_line(display_name), cutype="INDIVIDUAL", role="REQ-PARTICIPANT",
        partstat="NEEDS-ACTION", rsvp=True))


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


# -- the email -------------------------------------------------------------------------------

class _WirePolicy(Compat32):
    """``compat32`` writing a header that needs no folding as it is, and remembering the
    folds it leaves to :class:`email.header.Header`.

    ``compat32`` gives every header to ``Header`` to fold, and that was half the cost of
    writing an invite's email: two dozen headers, nearly all short printable ASCII (the parts'
    ``Content-Type``, ``MIME-Version``, ...), which it gives back unchanged. Those are written
    directly. The others (a center's From, a language's Subject, the To that
    :mod:`scheduler.invite_addressing` folds once to check it and the generator folds again)
    come back often, and a fold is a pure function of the text: the last ones are remembered.
    The bytes are ``compat32``'s either way (a property test compares the two).
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if type(value) is not str:
            return str(super()._fold(name, value, sanitize))  # type: ignore[misc]  # untyped
        if len(name) + len(value) + 2 <= (self.max_line_length or 78) \
                and _PRINTABLE_ASCII.fullmatch(value):
            return f"{name}: {value}{self.linesep}"
        # compat32 reads ``sanitize`` only for text holding surrogates: one entry for both.
        return _header_fold(self, name, value, sanitize and _has_surrogates(value))


@lru_cache(maxsize=2048)
def _header_fold(policy: _WirePolicy, name: str, value: str, sanitize: bool) -> str:
    """``compat32``'s fold of a text header (policies are immutable: their attributes are
    set once, by ``clone``). A fold that raises is not remembered, so it raises again.

    A To is folded when the email is built (to check that it reads back) and again when its
    bytes are written, which for a batch is after every email of the batch was built: room
    for a whole batch's (``max_records``, 500 by default) besides the shared From and
    Subject headers."""
    return str(Compat32._fold(policy, name, value, sanitize))  # type: ignore[attr-defined]


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
#: ``compat32`` with the CRLF line ends of the wire: what :meth:`Message.as_bytes` writes.
_POLICY = _WirePolicy(linesep="\r\n")
_LINE_END = re.compile(r"\r\n|\r|\n")


def _text_part(body: str, subtype: str) -> Message:
    """A UTF-8 ``text/<subtype>`` part, base64 over the canonical form (CRLF line breaks, RFC
    2046 §4.1.1), as ``email.policy.SMTP`` encoded it."""
    return _base64_part(f'text/{subtype}; charset="utf-8"',
                        _base64(_LINE_END.sub("\r\n", body).encode("utf-8")))


def _base64_part(content_type: str, body: str, *, disposition: str | None = None) -> Message:
    """A leaf part with a base64 ``body``, headed as ``email.mime``'s classes head one
    (``MIMEText``, ``MIMEBase`` with ``encode_base64``, ``MIMEApplication``: a test compares
    the bytes). Those set each parameter by parsing the header back, twice for a text part,
    and encode the body again for each part that carries it."""
    part = Message(policy=_POLICY)
    part["Content-Type"] = content_type
    part["MIME-Version"] = "1.0"
    part["Content-Transfer-Encoding"] = "base64"
    if disposition is not None:
        part["Content-Disposition"] = disposition
    part.set_payload(body)
    return part


def _base64(data: bytes) -> str:
    """Base64 in lines of 76 characters, each ending in LF: ``email.encoders.encode_base64``'s
    and the utf-8 charset's body encoding (the generator writes the wire's line ends)."""
    return base64.encodebytes(data).decode("ascii")


def _check(method: str, sequence: int, now: datetime, only_specialist: bool = False) -> None:
    if method not in ("REQUEST", "CANCEL"):
        raise InvalidInvite(f"method: {method!r} is not REQUEST or CANCEL")
    if only_specialist and method != "CANCEL":
        raise InvalidInvite(f"method: {method} cannot go to the specialist alone; only the "
                            "CANCEL of a handed-over meeting does")
    if sequence < 0:
        raise InvalidInvite(f"sequence: {sequence} is negative")
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInvite("now: must be an aware datetime")
