"""Invites: RFC 5545/5546 iCalendar and the RFC 6047 iMIP email, in all twelve languages.

Every rendered invite is read back by two parsers (``vobject`` and ``icalendar``) and checked
line by line (CRLF, <= 75 octets, UTF-8 on every physical line).

Golden files live in ``tests/golden/``: ``<case>.ics`` is the invite, ``<case>.txt`` the plain
text body. After an intended change, regenerate them and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_invites.py -k golden

They depend on the tzdata (VTIMEZONE) and Babel/CLDR (wording of dates) versions.
"""

from __future__ import annotations

import email
import os
import re
from datetime import UTC, date, datetime
from email import policy
from email.encoders import encode_base64
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.text import MIMEText
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import vobject
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from icalendar import Calendar, Event, vCalAddress

import scheduler.invite_addressing as invite_addressing
import scheduler.invite_locales as invite_locales
import scheduler.invite_values as invite_values
import scheduler.invite_wording as invite_wording
import scheduler.invites as invites
from scheduler.delivery import parsed_email
from scheduler.directory import SUPPORTED_LANGUAGES, Center
from scheduler.invites import InvalidInvite, build_imip_message, build_invite
from schemas.events import Meeting
from schemas.help_request import HelpRequest

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
LOCALE_DIR = Path(invites.__file__).parent / "locale"
NOW = datetime(2026, 2, 27, 8, 30, tzinfo=UTC)

# -- builders -----------------------------------------------------------------------------------

CENTERS: dict[str, dict[str, Any]] = {
    "taipei": {"name": "FastTrack Center Taipei", "region": "APAC", "timezone": "Asia/Taipei",
               "country": "TW", "languages": list(SUPPORTED_LANGUAGES),
               "specialist": ("tpe-01", "Lin Mei", "mei.lin@example.com")},
    "redmond": {"name": "FastTrack Center Redmond", "region": "AMER",
                "timezone": "America/Los_Angeles", "country": "US",
                "languages": list(SUPPORTED_LANGUAGES),
                "specialist": ("red-01", "Jordan Avery", "jordan.avery@example.com")},
    "dublin": {"name": "FastTrack Center Dublin", "region": "EMEA", "timezone": "Europe/Dublin",
               "country": "IE", "languages": list(SUPPORTED_LANGUAGES),
               "specialist": ("dub-01", "Aoife Byrne", "aoife.byrne@example.com")},
    "sao-paulo": {"name": "FastTrack Center São Paulo", "region": "AMER",
                  "timezone": "America/Sao_Paulo", "country": "BR",
                  "languages": list(SUPPORTED_LANGUAGES),
                  "specialist": ("gru-01", "Ana Souza", "ana.souza@example.com")},
}


def make_center(center_id: str = "taipei", **changes: Any) -> Center:
    spec = {**CENTERS[center_id], **changes}
    sid, sname, semail = spec.pop("specialist")
    return Center.model_validate({
        "id": center_id, **spec,
        "hours": {"mon": ["09:00-12:00", "13:00-18:00"], "tue": ["09:00-18:00"]},
        "mailbox": spec.get("mailbox", f"fasttrack.{center_id}@example.com"),
        "specialists": [{"id": sid, "name": sname, "email": semail,
                         "languages": spec["languages"]}],
    })


def make_request(language: str = "zh-Hant", *, timezone: str | None = None, country: str = "TW",
                 partner: bool = False, notes: str | None = None,
                 requester_name: str = "陳 小明", tenant_name: str = "Contoso 股份有限公司",
                 partner_name: str = "Fabrikam Partners", topic: str = "core_onboarding",
                 ) -> HelpRequest:
    data: dict[str, Any] = {
        "request_id": "req-0001", "submitted_at": "2026-02-27T08:00:00Z",
        "source": "partner" if partner else "admin_center",
        "tenant": {"id": "tenant-1", "name": tenant_name, "country": country},
        "requester": {"name": requester_name, "email": "requester@contoso.example",
                      "language": language},
        "topic": topic,
    }
    if timezone:
        data["requester"]["timezone"] = timezone
    if partner:
        data["partner"] = {"id": "partner-1", "name": partner_name,
                           "email": "partner@fabrikam.example"}
    if notes is not None:
        data["notes"] = notes
    return HelpRequest.model_validate(data)


def make_meeting(center: Center, *, language: str = "zh-Hant",
                 start: datetime = datetime(2026, 3, 2, 1, 0, tzinfo=UTC), minutes: int = 60,
                 join_url: str | None = "https://teams.example.com/l/meetup-join/req-0001",
                 ) -> Meeting:
    from datetime import timedelta

    return Meeting(request_id="req-0001", center_id=center.id,
                   specialist_id=center.specialists[0].id, language=language, start=start,
                   end=start + timedelta(minutes=minutes), uid="8d1c4d0e@fasttrack.example.com",
                   join_url=join_url)


# -- reading an invite back ---------------------------------------------------------------------


def physical_lines(ics: bytes) -> list[bytes]:
    assert ics.endswith(b"\r\n"), "the last line must end in CRLF"
    lines = ics[:-2].split(b"\r\n")
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, f"bare CR or LF in {line!r}"
        assert len(line) <= 75, f"{len(line)} octets: {line!r}"
        line.decode("utf-8")  # a fold never splits a multi-byte character
    return lines


def content_lines(ics: bytes) -> list[str]:
    """Unfolded content lines, by the RFC 5545 rule alone (independent of both parsers)."""
    unfolded: list[bytes] = []
    for line in physical_lines(ics):
        if line[:1] in (b" ", b"\t"):
            unfolded[-1] += line[1:]
        else:
            unfolded.append(line)
    return [line.decode("utf-8") for line in unfolded]


def property_names(ics: bytes) -> list[str]:
    return [re.split(r"[;:]", line, maxsplit=1)[0] for line in content_lines(ics)]


def assert_valid_invite(ics: bytes, *, method: str, sequence: int, attendees: set[str],
                        organizer: str, tzid: str) -> Calendar:
    names = property_names(ics)
    assert names.count("BEGIN") == names.count("END")
    components = " ".join(line[6:] for line in content_lines(ics) if line.startswith("BEGIN:"))
    assert re.fullmatch(r"VCALENDAR VTIMEZONE( STANDARD| DAYLIGHT)+ VEVENT", components)
    assert names.count("ATTENDEE") == len(attendees)
    assert names.count("ORGANIZER") == 1
    assert set(names) <= ALLOWED_PROPERTIES, set(names) - ALLOWED_PROPERTIES

    parsed = vobject.readOne(ics.decode("utf-8"))
    assert parsed.method.value == method
    assert [c.name for c in parsed.getChildren() if c.name == "VEVENT"] == ["VEVENT"]
    event = parsed.vevent
    assert int(event.sequence.value) == sequence
    assert {a.value.lower() for a in event.attendee_list} == {f"mailto:{a}" for a in attendees}
    for attendee in event.attendee_list:
        assert attendee.params["ROLE"] == ["REQ-PARTICIPANT"]
        assert attendee.params["PARTSTAT"] == ["NEEDS-ACTION"]
        assert attendee.params["RSVP"] == ["TRUE"]
    assert event.organizer.value == f"mailto:{organizer}"
    assert event.dtstart.params["X-VOBJ-ORIGINAL-TZID"] == [tzid]
    assert [tz.tzid.value for tz in parsed.vtimezone_list] == [tzid]
    assert event.status.value == ("CANCELLED" if method == "CANCEL" else "CONFIRMED")

    calendar = Calendar.from_ical(ics)
    assert len(calendar.events) == 1
    assert calendar.get_missing_tzids() == set()
    return calendar


def rfc6868_decode(value: str) -> str:
    replacements = {"^^": "^", "^n": "\n", "^'": '"'}
    return re.sub(r"\^[\^n']", lambda m: replacements[m.group(0)], value)


ALLOWED_PROPERTIES = {
    "BEGIN", "END", "VERSION", "PRODID", "CALSCALE", "METHOD", "TZID", "COMMENT", "DTSTART",
    "TZNAME", "TZOFFSETFROM", "TZOFFSETTO", "RDATE", "SUMMARY", "DTEND", "DTSTAMP", "UID",
    "SEQUENCE", "ATTENDEE", "DESCRIPTION", "LOCATION", "ORGANIZER", "STATUS", "TRANSP", "URL",
}
EVERYONE = {"requester@contoso.example", "mei.lin@example.com"}


def render(center: Center, request: HelpRequest, meeting: Meeting, *,
           method: invites.Method = "REQUEST", sequence: int = 0) -> tuple[bytes, Message]:
    ics = build_invite(meeting, request, center, sequence=sequence, method=method, now=NOW)
    message = build_imip_message(ics, meeting, request, center, method=method, now=NOW)
    return ics, message


def plain_body(message: Message) -> str:
    body = parsed_email(message).get_body(("plain",))
    assert body is not None
    return str(body.get_content())


# -- golden files -------------------------------------------------------------------------------

GOLDEN_CASES = {
    # Taipei, no DST; requester zone from the tenant country (TW -> Asia/Taipei).
    "invite_taipei_zh-Hant": dict(center="taipei", language="zh-Hant", method="REQUEST",
                                  sequence=0, start=datetime(2026, 3, 2, 1, 0, tzinfo=UTC)),
    # First Monday of US daylight time, booked while still on standard time; London is still
    # on GMT, so the gap is 7 h, not the usual 8 h.
    "invite_redmond_en_dst": dict(center="redmond", language="en", method="REQUEST",
                                  sequence=0, start=datetime(2026, 3, 9, 16, 0, tzinfo=UTC),
                                  timezone="Europe/London", country="GB"),
    # Rescheduled across the end of European summer time; Dublin's winter is its "daylight".
    "invite_dublin_de_update": dict(center="dublin", language="de", method="REQUEST",
                                    sequence=2, start=datetime(2026, 10, 26, 9, 0, tzinfo=UTC),
                                    timezone="Europe/Berlin", country="DE", partner=True),
    # A cancellation, with a partner, no join link yet.
    "invite_sao-paulo_pt-BR_cancel": dict(center="sao-paulo", language="pt-BR",
                                          method="CANCEL", sequence=3,
                                          start=datetime(2026, 11, 3, 13, 0, tzinfo=UTC),
                                          country="BR", partner=True, join_url=None),
    # Ends after midnight in the requester's zone (Los Angeles evening = Tokyo next morning).
    "invite_redmond_ja_next_day": dict(center="redmond", language="ja", method="REQUEST",
                                       sequence=0,
                                       start=datetime(2026, 6, 30, 14, 30, tzinfo=UTC),
                                       timezone="Asia/Tokyo", country="JP"),
}


def golden_case(case: dict[str, Any]
                ) -> tuple[Center, HelpRequest, Meeting, invites.Method, int]:
    case = dict(case)
    center = make_center(case.pop("center"))
    language, method, sequence = case.pop("language"), case.pop("method"), case.pop("sequence")
    meeting = make_meeting(center, language=language, start=case.pop("start"),
                           **({"join_url": case.pop("join_url")} if "join_url" in case else {}))
    request = make_request(language, notes="Tenant has 2,500 mailboxes; cut-over window: "
                           "weekends only.\nPlease include the networking team.", **case)
    return center, request, meeting, method, sequence


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_invite(name: str) -> None:
    center, request, meeting, method, sequence = golden_case(GOLDEN_CASES[name])
    ics, message = render(center, request, meeting, method=method, sequence=sequence)
    outputs = {GOLDEN / f"{name}.ics": ics, GOLDEN / f"{name}.txt": plain_body(message).encode()}
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        for path, data in outputs.items():
            path.write_bytes(data)
    for path, data in outputs.items():
        assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 and review it"
        assert data == path.read_bytes(), f"{path.name} changed: UPDATE_GOLDEN=1 to accept"
    attendees = {"requester@contoso.example", center.specialists[0].email}
    if request.partner:
        attendees.add(request.partner.email)
    assert_valid_invite(ics, method=method, sequence=sequence, attendees=attendees,
                        organizer=center.mailbox, tzid=center.timezone)


def test_dst_crossing_times_are_local_to_each_zone() -> None:
    center, request, meeting, method, sequence = golden_case(GOLDEN_CASES["invite_redmond_en_dst"])
    ics, message = render(center, request, meeting, method=method, sequence=sequence)
    assert "DTSTART;TZID=America/Los_Angeles:20260309T090000" in content_lines(ics)
    assert "DTEND;TZID=America/Los_Angeles:20260309T100000" in content_lines(ics)
    body = plain_body(message)
    assert "Your time: Monday, March 9, 2026, 4:00\u2009–\u20095:00\u202fPM " \
           "(Greenwich Mean Time)" in body
    assert "FastTrack Center time: Monday, March 9, 2026, 9:00\u2009–\u200910:00\u202fAM " \
           "(Pacific Daylight Time)" in body


def test_the_time_is_worded_once_per_slot_zone_and_language() -> None:
    center = make_center("redmond")
    zone = center.zone
    utc = make_meeting(center, language="ja", start=datetime(2026, 3, 9, 17, tzinfo=UTC))
    same_instant = utc.model_copy(update={"start": utc.start.astimezone(zone),
                                          "end": utc.end.astimezone(zone)})
    invite_wording._when.cache_clear()
    words = invite_wording.format_when(utc, zone)
    assert invite_wording.format_when(same_instant, zone) == words
    assert invite_wording._when.cache_info()[:2] == (1, 1)  # (hits, misses)
    assert words.startswith("2026年3月9日月曜日")
    assert "太平洋夏時間" in words
    assert invite_wording.format_when(utc.model_copy(update={"language": "en"}), zone) != words
    assert invite_wording.format_when(utc, center.zone) == words
    later = utc.model_copy(update={"start": utc.start.replace(hour=18),
                                   "end": utc.end.replace(hour=19)})
    assert invite_wording.format_when(later, zone) != words


def test_meeting_ending_after_midnight_shows_both_dates() -> None:
    center, request, meeting, _, _ = golden_case(GOLDEN_CASES["invite_redmond_ja_next_day"])
    meeting = meeting.model_copy(update={"end": meeting.start.replace(hour=15, minute=30)})
    request = request.model_copy(update={"requester": request.requester.model_copy(
        update={"timezone": "Asia/Tokyo"})})
    # 14:30-15:30 UTC = 23:30-00:30 in Tokyo
    body = plain_body(render(center, request, meeting)[1])
    assert "2026年6月30日(火)～7月1日(水)" in body
    assert "23時30分～0時30分" in body


@pytest.mark.parametrize("zone,start,expected", [
    ("Europe/Dublin", datetime(2026, 1, 12, 9, tzinfo=UTC), "Greenwich Mean Time"),
    ("Europe/Dublin", datetime(2026, 7, 13, 9, tzinfo=UTC), "Irish Standard Time"),
    ("Australia/Sydney", datetime(2026, 1, 12, 0, tzinfo=UTC), "Australian Eastern Daylight Time"),
    ("Australia/Sydney", datetime(2026, 7, 13, 0, tzinfo=UTC), "Australian Eastern Standard Time"),
    ("America/Los_Angeles", datetime(2026, 3, 6, 17, tzinfo=UTC), "Pacific Standard Time"),
    ("America/Los_Angeles", datetime(2026, 3, 9, 16, tzinfo=UTC), "Pacific Daylight Time"),
], ids=["dublin-winter", "dublin-summer", "sydney-summer", "sydney-winter", "la-before-dst",
        "la-after-dst"])
def test_zone_names_follow_the_season(zone: str, start: datetime, expected: str) -> None:
    """Regression: Babel named Dublin's winter (negative DST in tzdata) Irish summer time."""
    center = make_center()
    request = make_request("en", timezone=zone)
    body = plain_body(render(center, request, make_meeting(center, language="en", start=start))[1])
    assert f"({expected})" in body.splitlines()[4]


@pytest.mark.parametrize("country,zone", [
    ("KR", "Asia/Seoul"), ("TW", "Asia/Taipei"), ("US", "America/New_York"),
    ("BR", "America/Sao_Paulo"), ("AU", "Australia/Sydney"), ("CA", "America/Toronto"),
    ("AQ", "Antarctica/McMurdo"),
])
def test_requester_zone_falls_back_to_the_tenant_country(country: str, zone: str) -> None:
    assert invite_locales.requester_zone(make_request(country=country)).key == zone


def test_requester_zone_prefers_the_requesters_own() -> None:
    assert invite_locales.requester_zone(
        make_request(country="KR", timezone="Europe/Paris")).key == "Europe/Paris"


# -- every language, every method -----------------------------------------------------------


@pytest.mark.parametrize("method,sequence", [("REQUEST", 0), ("REQUEST", 1), ("CANCEL", 2)])
@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_every_language_renders_a_valid_invite_and_email(language: str, method: invites.Method,
                                                         sequence: int) -> None:
    center = make_center("taipei")
    request = make_request(language, timezone="America/New_York", partner=True,
                           notes="Bitte Teams-Raum 🙂 vorbereiten")
    meeting = make_meeting(center, language=language)
    ics, message = render(center, request, meeting, method=method, sequence=sequence)
    attendees = EVERYONE | {"partner@fabrikam.example"}
    calendar = assert_valid_invite(ics, method=method, sequence=sequence, attendees=attendees,
                                   organizer=center.mailbox, tzid="Asia/Taipei")
    event = calendar.events[0]
    summary = str(event["SUMMARY"])
    assert event["SUMMARY"].params["LANGUAGE"] == language
    assert summary.startswith("Microsoft 365 FastTrack")
    translated = invite_locales.catalog(language).gettext("Core onboarding")
    assert translated in summary
    if language != "en":
        assert translated != "Core onboarding"
    back = assert_valid_email(message, ics, method=method, organizer=center.mailbox,
                              recipients=attendees)
    assert summary in str(back["Subject"])  # as a reader decodes it from the wire


# -- the iMIP email -----------------------------------------------------------------------------


def assert_valid_email(message: Message, ics: bytes, *, method: str, organizer: str,
                       recipients: set[str]) -> EmailMessage:
    raw = message.as_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF, as on the wire
    back = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(back, EmailMessage)
    assert back.keys() == ["Content-Type", "MIME-Version", "From", "To", "Subject", "Date",
                           "Message-ID", "Content-Language"]
    for header in back:
        assert "\r" not in str(back[header]) and "\n" not in str(back[header])
    assert back["From"].addresses[0].addr_spec == organizer
    assert {a.addr_spec for a in back["To"].addresses} == recipients
    assert back.get_content_type() == "multipart/mixed"
    alternative, attachment = back.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    parts = list(alternative.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html", "text/calendar"]
    calendar_part = parts[2]
    assert calendar_part.get_param("method") == method
    assert str(calendar_part.get_param("charset")).upper() == "UTF-8"
    assert calendar_part.get_payload(decode=True) == ics
    assert attachment.get_content_type() == "application/ics"
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_payload(decode=True) == ics
    organizer_line = next(line for line in content_lines(ics) if line.startswith("ORGANIZER"))
    assert organizer_line.endswith(f":mailto:{organizer}")
    return back


def test_a_resend_is_byte_identical() -> None:
    center = make_center()
    request, meeting = make_request(), make_meeting(center)
    first, second = render(center, request, meeting), render(center, request, meeting)
    assert first[0] == second[0]
    assert first[1].as_bytes() == second[1].as_bytes()


def test_message_ids_differ_by_sequence_and_method() -> None:
    center = make_center()
    request, meeting = make_request(), make_meeting(center)
    versions: list[tuple[invites.Method, int]] = [("REQUEST", 0), ("REQUEST", 1), ("CANCEL", 1)]
    ids = {str(render(center, request, meeting, method=m, sequence=s)[1]["Message-ID"])
           for m, s in versions}
    assert len(ids) == 3


def test_the_email_must_carry_the_invite_it_describes() -> None:
    center = make_center()
    request, meeting = make_request(), make_meeting(center)
    ics = build_invite(meeting, request, center, sequence=0, method="REQUEST", now=NOW)
    with pytest.raises(InvalidInvite, match="METHOD REQUEST"):
        build_imip_message(ics, meeting, request, center, method="CANCEL", now=NOW)
    other = meeting.model_copy(update={"uid": "someone-else@fasttrack.example.com"})
    with pytest.raises(InvalidInvite, match="someone-else"):
        build_imip_message(ics, other, request, center, method="REQUEST", now=NOW)


# -- what is remembered between invites ---------------------------------------------------------


def icalendar_invite(meeting: Meeting, request: HelpRequest, center: Center, *, sequence: int,
                     method: invites.Method, now: datetime, only_specialist: bool = False
                     ) -> bytes:
    """The invite as icalendar writes it when given the whole calendar: what build_invite did
    before it wrote its lines itself, and what its lines must add up to."""
    text = invites._words(meeting, request, center, method, sequence, only_specialist)
    event = Event()
    event.add("uid", meeting.uid)
    event.add("dtstamp", now.astimezone(UTC))
    event.add("sequence", sequence)
    event.add("dtstart", meeting.start.astimezone(center.zone))
    event.add("dtend", meeting.end.astimezone(center.zone))
    event.add("summary", text.summary, parameters={"LANGUAGE": meeting.language})
    event.add("description", text.description(), parameters={"LANGUAGE": meeting.language})
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    event.add("transp", "OPAQUE")
    event.add("organizer", vCalAddress.new(invite_values.mailto(center.mailbox, "center.mailbox"),
                                           cn=invite_values.one_line(center.name)))
    for who in invite_addressing.invite_attendees(meeting, request, center,
                                                  only_specialist=only_specialist):
        event.add("attendee", vCalAddress.new(
            invite_values.mailto(who.email, who.field), cn=invite_values.one_line(who.name),
            cutype="INDIVIDUAL", role="REQ-PARTICIPANT", partstat="NEEDS-ACTION", rsvp=True))
    if text.join_url:
        event.add("location", text.join_url)
        event.add("url", text.join_url)
    calendar = Calendar()
    calendar.add("prodid", invites.PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", method)
    calendar.add_component(event)
    calendar.add_missing_timezones(first_date=date(meeting.start.year, 1, 1),
                                   last_date=date(meeting.end.year + 1, 1, 1))
    return bytes(calendar.to_ical())


@pytest.mark.parametrize("zone", [
    "Asia/Taipei", "Europe/Dublin", "America/Sao_Paulo", "America/Los_Angeles",
    "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Chatham", "America/St_Johns",
    "Africa/Casablanca", "Etc/GMT-14", "UTC",
])
@pytest.mark.parametrize("start", [datetime(2026, 7, 13, 9, tzinfo=UTC),
                                   datetime(2026, 12, 31, 23, 30, tzinfo=UTC)],
                         ids=["summer", "over-new-year"])
def test_an_invite_is_the_bytes_icalendar_writes(zone: str, start: datetime) -> None:
    center = make_center("taipei", timezone=zone)
    meeting, request = make_meeting(center, language="en", start=start), make_request("en")

    def render_ics() -> bytes:
        return build_invite(meeting, request, center, sequence=1, method="REQUEST", now=NOW)

    first, again = render_ics(), render_ics()  # the second from the caches
    reference = icalendar_invite(meeting, request, center, sequence=1, method="REQUEST",
                                 now=NOW)
    assert first == again == reference
    assert (b"BEGIN:VTIMEZONE" in first) == (zone != "UTC")


def test_a_timezone_is_built_once_per_zone_and_years() -> None:
    center = make_center("dublin")
    request = make_request("en")
    invites._vtimezone_ical.cache_clear()
    for day in (2, 3, 4):
        meeting = make_meeting(center, language="en",
                               start=datetime(2026, 3, day, 9, tzinfo=UTC))
        build_invite(meeting, request, center, sequence=0, method="REQUEST", now=NOW)
    assert invites._vtimezone_ical.cache_info()[:2] == (2, 1)  # (hits, misses)
    assert invites._vtimezone_ical("Not/A_Zone", datetime(2026, 1, 1).date(),
                                   datetime(2027, 1, 1).date()) is None


def messages_without_memory(center: Center, request: HelpRequest, meeting: Meeting,
                            method: invites.Method, sequence: int) -> tuple[bytes, bytes]:
    """The invite and its email as the code did before anything was remembered."""
    ics = build_invite(meeting, request, center, sequence=sequence, method=method, now=NOW)
    invites._rendered.clear()  # the email parses the invite again and words it again,
    invite_values._validated.cache_clear()  # and validates every address again
    message = build_imip_message(ics, meeting, request, center, method=method, now=NOW)
    return ics, message.as_bytes()


def email_of_mime_classes(message: Message, ics: bytes, method: str) -> bytes:
    """``message`` with its leaf parts built as ``email.mime``'s classes build them (what
    build_imip_message did before it headed its parts itself), from the same text."""
    alternative, _ = message.get_payload()
    plain, html, _calendar = alternative.get_payload()
    calendar = MIMEBase("text", "calendar", policy=invites._POLICY, method=method,
                        charset="UTF-8")
    calendar.set_payload(ics)
    encode_base64(calendar)
    alternative.set_payload([
        MIMEText(part.get_payload(decode=True).decode("utf-8"), subtype, "utf-8",
                 policy=invites._POLICY)
        for part, subtype in ((plain, "plain"), (html, "html"))] + [calendar])
    classic = MIMEApplication(ics, "ics", policy=invites._POLICY)
    classic.add_header("Content-Disposition", "attachment", filename="invite.ics")
    message.set_payload([alternative, classic])
    return message.as_bytes()


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_an_email_is_the_bytes_of_the_mime_classes(name: str) -> None:
    center, request, meeting, method, sequence = golden_case(GOLDEN_CASES[name])
    ics, message = render(center, request, meeting, method=method, sequence=sequence)
    written = message.as_bytes()
    assert written == email_of_mime_classes(message, ics, method)


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_remembering_changes_no_byte_of_the_email(name: str) -> None:
    center, request, meeting, method, sequence = golden_case(GOLDEN_CASES[name])
    ics, message = render(center, request, meeting, method=method, sequence=sequence)
    assert (ics, message.as_bytes()) == messages_without_memory(center, request, meeting, method,
                                                                sequence)


def test_an_invite_with_an_unusual_uid_is_read_back_from_its_bytes() -> None:
    center = make_center()
    request = make_request("en")
    meeting = make_meeting(center, language="en").model_copy(
        update={"uid": "a,b;c d@fasttrack.example.com"})
    ics, message = render(center, request, meeting, sequence=2)
    assert ics not in invites._rendered  # not remembered: UID escaped in the .ics
    assert message.as_bytes() == messages_without_memory(center, request, meeting, "REQUEST",
                                                         2)[1]
    assert "Updated" in str(message["Subject"])


def test_the_email_is_worded_for_the_inputs_it_is_given() -> None:
    """The words build_invite found are reused only for the very same inputs."""
    center = make_center()
    request, meeting = make_request("en"), make_meeting(center, language="en")
    ics = build_invite(meeting, request, center, sequence=0, method="REQUEST", now=NOW)
    renamed = make_request("en", requester_name="Someone Else")
    body = plain_body(build_imip_message(ics, meeting, renamed, center, method="REQUEST",
                                         now=NOW))
    assert body.startswith("Hello Someone Else,")


@pytest.mark.parametrize("forget", [False, True], ids=["remembered", "parsed"])
def test_the_email_must_carry_the_invite_it_describes_either_way(forget: bool) -> None:
    center = make_center()
    request, meeting = make_request(), make_meeting(center)
    ics = build_invite(meeting, request, center, sequence=0, method="REQUEST", now=NOW)
    if forget:
        invites._rendered.clear()
    with pytest.raises(InvalidInvite, match="METHOD REQUEST"):
        build_imip_message(ics, meeting, request, center, method="CANCEL", now=NOW)
    other = meeting.model_copy(update={"uid": "someone-else@fasttrack.example.com"})
    with pytest.raises(InvalidInvite, match="someone-else"):
        build_imip_message(ics, other, request, center, method="REQUEST", now=NOW)
    with pytest.raises(InvalidInvite, match="not an invite"):
        build_imip_message(b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", meeting, request, center,
                           method="REQUEST", now=NOW)


def test_a_refused_address_is_refused_every_time_with_its_field() -> None:
    for field in ("requester.email", "partner.email"):
        with pytest.raises(InvalidInvite, match=rf"^{re.escape(field)}: "):
            invite_values.valid_email("not-an-address", field)
    assert invite_values.valid_email("user@bücher.example", "x") == "user@xn--bcher-kva.example"
    assert invite_values.valid_email("user@bücher.example", "y") == "user@xn--bcher-kva.example"


def test_a_name_too_long_for_one_encoded_word_is_left_out() -> None:
    """RFC 2047 words are at most 75 characters, and readers differ on a name split into
    several: that one address goes without its name, the others keep theirs."""
    center = make_center()
    request = make_request("en", partner=True, requester_name="é" * 80, partner_name="João")
    message = render(center, request, make_meeting(center, language="en"))[1]
    raw = message.as_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    back = parsed_email(message)
    assert [a.display_name for a in back["To"].addresses] == [
        "", "João", center.specialists[0].name]
    assert back["From"].addresses[0].display_name == center.name
    short = render(center, make_request("en", requester_name="陳美玲"), make_meeting(center))[1]
    assert "陳美玲" in [a.display_name for a in parsed_email(short)["To"].addresses]


def test_a_header_that_would_not_read_back_goes_without_names() -> None:
    people = [invite_addressing._address("Mei Lin", "mei@contoso.example", "requester.email"),
              invite_addressing._address("J. Smith", "js@contoso.example", "partner.email")]
    legacy = invites._POLICY
    assert invite_addressing._legacy_header("To", people, legacy) == \
        'Mei Lin <mei@contoso.example>, "J. Smith" <js@contoso.example>'
    # A name the email package would write unquoted around its comma reads back as two
    # addresses: such a header is refused, and the addresses go alone.
    assert not invite_addressing._reads_back_legacy(
        "To", "Doe, Jane <jane@contoso.example>",
        [Address("Doe, Jane", "jane", "contoso.example")], legacy)
    assert invite_addressing._reads_back_legacy(
        "To", '"Doe, Jane" <jane@contoso.example>',
        [Address("Doe, Jane", "jane", "contoso.example")], legacy)


def test_html_body_escapes_fields_and_links_the_meeting() -> None:
    center = make_center()
    request = make_request("en", requester_name="<script>alert(1)</script>",
                           notes='<img src=x onerror="alert(1)">')
    message = render(center, request, make_meeting(center, language="en"))[1]
    html_part = parsed_email(message).get_body(("html",))
    assert html_part is not None
    html_body = str(html_part.get_content())
    assert "<script>" not in html_body and "<img" not in html_body
    assert "&lt;script&gt;" in html_body
    assert ('<a href="https://teams.example.com/l/meetup-join/req-0001">' in html_body)


# -- injection ----------------------------------------------------------------------------------

NASTY = [
    "\r\n", "\n", "\r", ";", ",", "\\", ":", '"', "^", "END:VEVENT", "BEGIN:VEVENT",
    "ATTENDEE:mailto:evil@attacker.example", "\r\nATTENDEE:mailto:evil@attacker.example",
    "\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:evil", ";ROLE=CHAIR", '";X-EVIL=1:', "\\n", "\\,",
    "=?utf-8?q?x=0D=0ABcc:_evil@attacker.example?=", "\r\nBcc: evil@attacker.example",
    "\x00", "\x0b", "\x1c", "\x85", "\u2028", "\u2029", "\ufeff", "會議", "🙂", "é", "\t",
    "mailto:evil@attacker.example", "CN=evil",
]
nasty_text = st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=8)),
                      min_size=1, max_size=12).map("".join)
name_text = nasty_text.map(lambda s: ("x" + s)[:200])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requester=name_text, partner=name_text, tenant=name_text, center_name=name_text,
       specialist=name_text, notes=nasty_text.map(lambda s: s[:2000]),
       language=st.sampled_from(SUPPORTED_LANGUAGES), method=st.sampled_from(["REQUEST", "CANCEL"]))
def test_no_field_can_inject_into_the_invite_or_the_email(
        requester: str, partner: str, tenant: str, center_name: str, specialist: str, notes: str,
        language: str, method: invites.Method) -> None:
    center = make_center("redmond", name=center_name,
                         specialist=("red-01", specialist, "mei.lin@example.com"))
    request = make_request(language, partner=True, notes=notes, requester_name=requester,
                           tenant_name=tenant, partner_name=partner, timezone="Asia/Taipei")
    meeting = make_meeting(center, language=language)
    ics, message = render(center, request, meeting, method=method, sequence=1)
    attendees = EVERYONE | {"partner@fabrikam.example"}
    calendar = assert_valid_invite(ics, method=method, sequence=1, attendees=attendees,
                                   organizer=center.mailbox, tzid="America/Los_Angeles")
    assert str(calendar.events[0]["UID"]) == meeting.uid
    # Field values come back intact (read with vobject: icalendar's parser unescapes "\," in
    # parameters, which RFC 5545 does not define).
    event = vobject.readOne(ics.decode()).vevent
    cns = [rfc6868_decode(a.params["CN"][0]) for a in event.attendee_list]
    assert cns == [invite_values.one_line(n) for n in (requester, partner, specialist)]
    assert rfc6868_decode(event.organizer.params["CN"][0]) == invite_values.one_line(center_name)
    description = event.description.value
    # icalendar's TEXT writer reads a literal "\N" in its input as an intended line break.
    assert invite_values.multiline(notes).strip().replace("\\N", "\n") in description
    assert invite_values.one_line(tenant).replace("\\N", "\n") in description
    assert_valid_email(message, ics, method=method, organizer=center.mailbox,
                       recipients=attendees)
    assert message.as_bytes() == email_of_mime_classes(message, ics, method)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requester=name_text, partner=st.none() | name_text, tenant=name_text,
       center_name=name_text, specialist=name_text,
       notes=st.none() | nasty_text.map(lambda s: s[:2000]),
       language=st.sampled_from(SUPPORTED_LANGUAGES),
       kind=st.sampled_from([("REQUEST", False), ("CANCEL", False), ("CANCEL", True)]),
       sequence=st.integers(0, 3), zone=st.sampled_from(["Asia/Taipei", "Europe/Dublin",
                                                         "America/Sao_Paulo", "UTC"]),
       start=st.datetimes(datetime(2026, 1, 1), datetime(2028, 12, 31),
                          timezones=st.just(UTC)),
       now=st.datetimes(datetime(2026, 1, 1), datetime(2028, 12, 31), timezones=st.just(UTC)),
       join_url=st.none() | st.sampled_from(["https://teams.example.com/l/meetup-join/x,y;z",
                                             "https://example.com/" + "long/" * 30]),
       uid=st.sampled_from(["8d1c4d0e@fasttrack.example.com", "a,b;c d@fasttrack.example.com"]))
def test_every_invite_is_the_bytes_icalendar_writes(
        requester: str, partner: str | None, tenant: str, center_name: str, specialist: str,
        notes: str | None, language: str, kind: tuple[invites.Method, bool], sequence: int,
        zone: str, start: datetime, now: datetime, join_url: str | None, uid: str) -> None:
    method, only_specialist = kind
    center = make_center("redmond", name=center_name, timezone=zone,
                         specialist=("red-01", specialist, "mei.lin@example.com"))
    request = make_request(language, partner=partner is not None, notes=notes,
                           requester_name=requester, tenant_name=tenant,
                           partner_name=partner or "", timezone="Asia/Taipei")
    meeting = make_meeting(center, language=language, start=start, join_url=join_url
                           ).model_copy(update={"uid": uid})
    arguments: dict[str, Any] = {"sequence": sequence, "method": method, "now": now,
                                 "only_specialist": only_specialist}
    assert build_invite(meeting, request, center, **arguments) == icalendar_invite(
        meeting, request, center, **arguments)


@pytest.mark.parametrize("requester,partner", [
    ("=?utf-8?q?x=0D=0ABcc:_evil@attacker.example?=", "Partner"),
    ("Doe, Jane: mailto:evil@attacker.example, another@attacker.example" * 2, "Partner"),
    ("x=?utf-8?q?x=0D=0ABcc:_evil@attacker.example?=", "x\ufeff"),
    ("Requester\r\nBcc: evil@attacker.example", "\"Partner\" <evil@attacker.example>"),
], ids=["encoded-word-crlf", "long-name-loses-quotes", "encoded-comma", "crlf-and-angle"])
def test_regression_python_header_folding_cannot_change_the_recipients(requester: str,
                                                                     partner: str) -> None:
    """Python 3.11.7 decodes encoded words in display names, drops quotes when folding long
    ones, and can encode the comma between two addresses: none may add, drop or alter one."""
    center = make_center()
    request = make_request("en", partner=True, requester_name=requester, partner_name=partner)
    ics, message = render(center, request, make_meeting(center, language="en"))
    back = assert_valid_email(message, ics, method="REQUEST", organizer=center.mailbox,
                              recipients=EVERYONE | {"partner@fabrikam.example"})
    assert len(back["To"].addresses) == 3
    assert "attacker" not in "".join(a.addr_spec for a in back["To"].addresses)


def header_before_the_fast_path(name: str, addresses: list[Address]) -> bytes:
    """An address header as it was written before :func:`invite_addressing._reads_back` could
    skip the parser: set from the addresses, folded, always parsed back, names dropped when
    they did not survive."""
    message = EmailMessage(policy=policy.SMTP)
    message[name] = addresses
    folded = policy.SMTP.fold_binary(name, message[name])
    back = BytesParser(policy=policy.default).parsebytes(folded)[name]
    if [(a.display_name, a.addr_spec) for a in back.addresses] != \
            [(a.display_name, a.addr_spec) for a in addresses]:
        del message[name]
        message[name] = [Address(username=a.username, domain=a.domain) for a in addresses]
    return policy.SMTP.fold_binary(name, message[name])


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.one_of(name_text, st.sampled_from([
    "Mei Lin", "J. R. Smith", "O'Brien", "João Pedro Almeida", "陳美玲", "x" * 90,
    "Doe, Jane: mailto:evil@attacker.example, another@attacker.example" * 2])),
    min_size=1, max_size=3))
def test_address_headers_are_the_bytes_they_were_before_the_fast_path(names: list[str]) -> None:
    """Skipping the parser when the fold only broke lines at spaces changes no byte: the
    same header, names kept or dropped alike, for awkward names of every kind."""
    addresses = [invite_addressing._address(name, f"person{i}@contoso.example", "requester.email")
                 for i, name in enumerate(names)]
    for name in ("To", "From"):
        message = EmailMessage(policy=policy.SMTP)  # as reminders are addressed
        invite_addressing._set_addresses(message, name, addresses)
        written = policy.SMTP.fold_binary(name, message[name])
        assert written == header_before_the_fast_path(name, addresses)


def test_the_parser_reads_back_only_what_the_folder_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reminders are addressed with ``email.policy.SMTP``: its folder's output is parsed back
    only when it did more than break lines at spaces."""
    parsed: list[bytes] = []
    original = invite_addressing.BytesHeaderParser

    class CountingParser(original):  # type: ignore[misc, valid-type]
        def parsebytes(self, text: bytes, headersonly: bool = True) -> Any:
            parsed.append(text)
            return super().parsebytes(text, headersonly)

    monkeypatch.setattr(invite_addressing, "BytesHeaderParser", CountingParser)
    center = make_center()
    meeting = make_meeting(center, language="en")

    def addressed(request: HelpRequest) -> EmailMessage:
        message = EmailMessage(policy=policy.SMTP)
        invite_addressing.address_message(message, meeting, request, center)
        return message

    plain = make_request("en", partner=True, requester_name="Mei Lin", partner_name="J. Smith")
    message = addressed(plain)
    assert parsed == []  # ASCII names, folded between addresses: nothing to read back
    assert [a.display_name for a in message["To"].addresses][:2] == ["Mei Lin", "J. Smith"]
    encoded = make_request("en", partner=True, requester_name="陳美玲", partner_name="João")
    message = addressed(encoded)
    assert len(parsed) == 1 and b"=?utf-8?" in parsed[0]  # encoded words: read back
    assert [a.display_name for a in message["To"].addresses][:2] == ["陳美玲", "João"]


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(["Content-Type", "MIME-Version", "Content-Transfer-Encoding",
                             "Subject", "To", "X-Long-Header-Name-For-Folding"]),
       value=st.one_of(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                               max_size=90),
                       st.text(max_size=90), st.sampled_from(NASTY)))
@example(name="Subject", value="word " * 13 + "word")  # 78 with "Subject: ": left as is
@example(name="Subject", value="word " * 13 + "words")  # 79: folded
@example(name="To", value="Name <user@contoso.example>, " * 3)
def test_the_wire_policy_folds_as_compat32_does(name: str, value: str) -> None:
    """Headers written directly are the bytes ``email.header`` would have folded them to."""
    plain = policy.compat32.clone(linesep="\r\n")
    try:
        expected: str | type[Exception] = plain.fold(name, value)
    except Exception as exc:  # email.header refuses what looks like an embedded header
        expected = type(exc)
    try:
        written: str | type[Exception] = invites._POLICY.fold(name, value)
    except Exception as exc:
        written = type(exc)
    assert written == expected


def test_a_remembered_fold_is_compat32s_every_time() -> None:
    """The folds ``email.header`` does are remembered; each is still exactly compat32's, and
    one that raises is not remembered, so it raises again."""
    plain = policy.compat32.clone(linesep="\r\n")
    subject = "Microsoft 365 FastTrack：核心上線 (已更新) " * 2
    assert invites._POLICY.fold("Subject", subject) == plain.fold("Subject", subject)
    assert invites._POLICY.fold("Subject", subject) == plain.fold("Subject", subject)
    assert invites._POLICY.fold_binary("Subject", subject) == \
        plain.fold_binary("Subject", subject)
    embedded = "a" * 80 + "\r\nBcc: evil@attacker.example"
    for _ in range(2):
        with pytest.raises(Exception) as raised:
            invites._POLICY.fold("Subject", embedded)
        with pytest.raises(type(raised.value)):
            plain.fold("Subject", embedded)


def test_every_multipart_content_type_is_one_line() -> None:
    """The boundaries are short enough that neither multipart's Content-Type needs folding,
    start with ``=_`` (never in base64), and are the same on a resend."""
    center = make_center()
    request = make_request("th", partner=True)
    meeting = make_meeting(center, language="th")
    raw = render(center, request, meeting)[1].as_bytes()
    lines = raw.split(b"\r\n")
    kinds = {}
    for line in lines:
        found = re.fullmatch(rb'Content-Type: multipart/(\w+); boundary="(=_[^"]+)"', line)
        if found:
            kinds[found[1]] = found[2]
    assert set(kinds) == {b"mixed", b"alternative"}
    assert all(b"--" + boundary in lines for boundary in kinds.values())
    assert max(len(line) for line in lines) <= 78
    assert render(center, request, meeting)[1].as_bytes() == raw
    back = parsed_email(render(center, request, meeting)[1])
    assert [part.get_content_type() for part in back.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html",
        "text/calendar", "application/ics"]


def test_a_centers_from_header_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether an address header reads back is remembered for the same addresses: every
    invite a center sends has the same From, and each new To is checked."""
    invite_addressing._checked_legacy_header.cache_clear()
    checked: list[str] = []
    real = invite_addressing._reads_back_legacy

    def counting(name: str, *args: Any) -> bool:
        checked.append(name)
        return real(name, *args)

    monkeypatch.setattr(invite_addressing, "_reads_back_legacy", counting)
    center = make_center()
    for name in ("陳 小明", "Mei Lin", "陳 小明"):
        message = render(center, make_request("en", requester_name=name),
                         make_meeting(center, language="en"))[1]
        assert parsed_email(message)["To"].addresses[0].display_name == name
    assert checked == ["From", "To", "To"]


BAD_EMAILS = [
    "requester@contoso.example\r\nATTENDEE:mailto:evil@attacker.example",
    "requester@contoso.example;ROLE=CHAIR",
    "requester@contoso.example:mailto:evil@attacker.example",
    '"a;b:c"@contoso.example',
    "a,b@contoso.example",
    "requester@contoso.example\r\nBcc: evil@attacker.example",
    "not-an-address",
]


@pytest.mark.parametrize("address", BAD_EMAILS, ids=range(len(BAD_EMAILS)))
def test_an_unsafe_email_address_is_refused(address: str) -> None:
    center = make_center()
    request = make_request()
    # model_construct: as if the validated model had been bypassed upstream
    sneaky = request.model_copy(update={"requester": request.requester.model_construct(
        **{**request.requester.model_dump(), "email": address})})
    with pytest.raises(InvalidInvite, match=r"requester\.email"):
        build_invite(make_meeting(center), sneaky, center, sequence=0, method="REQUEST", now=NOW)


@pytest.mark.parametrize("address,mailto", [
    ("o'brien+fasttrack@contoso.example", "mailto:o'brien+fasttrack@contoso.example"),
    ("user@bücher.example", "mailto:user@xn--bcher-kva.example"),
], ids=["apostrophe-and-plus", "idn-domain"])
def test_unusual_but_valid_addresses_survive(address: str, mailto: str) -> None:
    center = make_center()
    request = make_request()
    request = request.model_copy(update={"requester": request.requester.model_copy(
        update={"email": address})})
    ics, message = render(center, request, make_meeting(center))
    assert any(line.endswith(f":{mailto}") for line in content_lines(ics)
               if line.startswith("ATTENDEE"))
    assert mailto.removeprefix("mailto:") in {a.addr_spec
                                              for a in parsed_email(message)["To"].addresses}


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "https://teams.example.com/x\r\nATTENDEE:mailto:evil@x.example",
    'https://teams.example.com/"onmouseover="x', "teams.example.com/no-scheme",
], ids=["javascript", "crlf", "quote", "no-scheme"])
def test_a_join_url_must_be_a_plain_http_url(url: str) -> None:
    center = make_center()
    with pytest.raises(InvalidInvite, match="join_url"):
        build_invite(make_meeting(center, join_url=url), make_request(), center, sequence=0,
                     method="REQUEST", now=NOW)


@pytest.mark.parametrize("changes,field", [
    ({"now": datetime(2026, 2, 27, 8, 30)}, "now"),
    ({"sequence": -1}, "sequence"),
    ({"method": "PUBLISH"}, "method"),
], ids=["naive-now", "negative-sequence", "unknown-method"])
def test_bad_arguments_are_refused(changes: dict[str, Any], field: str) -> None:
    center = make_center()
    arguments: dict[str, Any] = {"sequence": 0, "method": "REQUEST", "now": NOW, **changes}
    with pytest.raises(InvalidInvite, match=field):
        build_invite(make_meeting(center), make_request(), center, **arguments)


def test_a_specialist_from_another_center_is_refused() -> None:
    center = make_center()
    meeting = make_meeting(center).model_copy(update={"specialist_id": "red-01"})
    with pytest.raises(InvalidInvite, match="specialist_id"):
        build_invite(meeting, make_request(), center, sequence=0, method="REQUEST", now=NOW)


def test_an_unsupported_language_is_refused() -> None:
    center = make_center()
    with pytest.raises(InvalidInvite, match=r"meeting\.language"):
        build_invite(make_meeting(center, language="nl"), make_request(), center, sequence=0,
                     method="REQUEST", now=NOW)


# -- the CANCEL to a handed-over specialist --------------------------------------------------------


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_a_handover_cancel_is_for_the_specialist_alone_in_their_words(language: str) -> None:
    center = make_center()
    meeting = make_meeting(center, language=language)
    request = make_request(language, partner=True)
    ics = build_invite(meeting, request, center, sequence=1, method="CANCEL", now=NOW,
                       only_specialist=True)
    message = build_imip_message(ics, meeting, request, center, method="CANCEL", now=NOW,
                                 only_specialist=True)
    everyone = build_imip_message(
        build_invite(meeting, request, center, sequence=1, method="CANCEL", now=NOW),
        meeting, request, center, method="CANCEL", now=NOW)

    (event,) = Calendar.from_ical(ics).events
    specialist = center.specialists[0]
    assert [str(a) for a in [event["ATTENDEE"]]] == [f"mailto:{specialist.email}"]
    assert (event["STATUS"], event.sequence) == ("CANCELLED", 1)
    read = parsed_email(message)
    assert [a.addr_spec for a in read["To"].addresses] == [specialist.email]
    assert read["Message-ID"] != everyone["Message-ID"]  # not the CANCEL to everyone
    body = read.get_body(preferencelist=("plain",)).get_content()
    greeting = invite_wording.Translator(language)("Hello %(name)s,", name=specialist.name)
    assert body.startswith(greeting) and "req-0001" in body
    assert request.requester.name not in body


def test_only_a_cancel_goes_to_the_specialist_alone() -> None:
    center = make_center()
    with pytest.raises(InvalidInvite, match="method: REQUEST cannot go to the specialist alone"):
        build_invite(make_meeting(center), make_request(), center, sequence=1,
                     method="REQUEST", now=NOW, only_specialist=True)


# -- catalogs -------------------------------------------------------------------------------------


def source_messages() -> set[str]:
    return {str(message) for _, message, _, _ in
            extract_from_file("python", str(Path(invite_wording.__file__)))}


def read_catalog(language: str) -> Catalog:
    path = LOCALE_DIR / invite_locales.CATALOG_DIRS[language] / "LC_MESSAGES" / "invites.po"
    with path.open("rb") as po:
        return read_po(po, locale=invite_locales.BABEL_LOCALES[language])


def test_the_source_has_messages() -> None:
    assert len(source_messages()) >= 20


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_every_language_has_every_message(language: str) -> None:
    catalog = read_catalog(language)
    ids = {str(m.id) for m in catalog if m.id}
    assert ids == source_messages(), (
        f"missing: {source_messages() - ids}; not in the source: {ids - source_messages()}")
    for message in catalog:
        if message.id:
            assert message.string, f"{language}: {message.id!r} is untranslated"
            assert not message.fuzzy, f"{language}: {message.id!r} is fuzzy"
    problems = [(m.id, [str(e) for e in errors]) for m, errors in catalog.check()]
    assert problems == [], problems


def test_a_catalog_is_found_for_every_supported_language() -> None:
    assert set(invite_locales.BABEL_LOCALES) == set(SUPPORTED_LANGUAGES)
    assert {p.name for p in LOCALE_DIR.iterdir() if p.is_dir()} == set(
        invite_locales.CATALOG_DIRS.values())
