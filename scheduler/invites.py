"""Meeting invites: iCalendar (RFC 5545, iTIP RFC 5546) and the iMIP email around it (RFC 6047).

Pure rendering: every input, the clock included, is passed in. The words are
:mod:`scheduler.invite_wording`'s; escaping and line folding are icalendar's, so no field can start
a property, parameter or component of its own.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime as rfc5322_date

from icalendar import Calendar, Event, vCalAddress

from scheduler.directory import Center
from scheduler.invite_addressing import address_message, attendees, meeting_specialist, message_id
from scheduler.invite_values import InvalidInvite, header_text, mailto, one_line
from scheduler.invite_wording import Method, invite_text
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
    calendar.add_missing_timezones(first_date=date(meeting.start.year, 1, 1),
                                   last_date=date(meeting.end.year + 1, 1, 1))
    return bytes(calendar.to_ical())


def build_imip_message(ics: bytes, meeting: Meeting, request: HelpRequest, center: Center, *,
                       method: Method, now: datetime) -> EmailMessage:
    """Wrap invite bytes from :func:`build_invite` in an RFC 6047 iMIP email.

    From the center's mailbox (the ORGANIZER) to every ATTENDEE: ``multipart/mixed`` holding
    ``multipart/alternative`` (text, HTML, ``text/calendar; method=...``) and the same bytes as
    the ``invite.ics`` attachment. The subject says "updated" when the invite's SEQUENCE is > 0.
    """
    sequence = _sequence_of(ics, meeting.uid, method)
    _check(method, sequence, now)
    text = invite_text(meeting, request, center, method=method, sequence=sequence)
    message = EmailMessage(policy=SMTP)
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
    if found[:2] != (method, uid):
        raise InvalidInvite(f"ics: is METHOD {found[0]} for UID {found[1]!r}, "
                            f"not {method} for {uid!r}")
    return found[2]


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

