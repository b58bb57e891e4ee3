"""Meeting invites: iCalendar (RFC 5545, iTIP RFC 5546) and the iMIP email around it (RFC 6047).

Pure rendering: every input, the clock included, is passed in. Wording comes from the gettext
catalogs under ``scheduler/locale/<locale>/LC_MESSAGES/invites.po`` (read at runtime, no compile
step); dates, times and zone names come from Babel. Escaping and line folding are icalendar's, so
no field can start a property, parameter or component of its own.
"""

from __future__ import annotations

import hashlib
import html
import importlib.resources
import io
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTP, default
from email.utils import format_datetime as rfc5322_date
from functools import lru_cache
from typing import Literal
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytz
from babel import Locale
from babel.dates import format_date, format_interval, get_timezone_name
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from email_validator import EmailNotValidError, validate_email
from icalendar import Calendar, Event, vCalAddress

from scheduler.directory import SUPPORTED_LANGUAGES, Center, Specialist
from schemas.events import Meeting
from schemas.help_request import HelpRequest, Topic

Method = Literal["REQUEST", "CANCEL"]
PRODID = "-//FastTrack//Scheduling Service//EN"
CATALOG_DOMAIN = "invites"

#: Supported language tag -> the Babel locale used for its catalog, dates and zone names.
BABEL_LOCALES: dict[str, str] = {
    "zh-Hant": "zh_Hant_TW", "zh-Hans": "zh_Hans_CN", "en": "en_US", "fr": "fr_FR",
    "de": "de_DE", "it": "it_IT", "ja": "ja_JP", "ko": "ko_KR", "pt-BR": "pt_BR",
    "es": "es_ES", "th": "th_TH", "vi": "vi_VN",
}
#: Supported language tag -> its catalog directory under ``scheduler/locale``.
CATALOG_DIRS: dict[str, str] = {tag: tag.replace("-", "_") for tag in SUPPORTED_LANGUAGES}
# str.splitlines() also breaks on \x1c-\x1e, \x85, \u2028 and \u2029: none may survive either.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_LINE_BREAK = re.compile(r"\r\n|[\r\x85\u2028\u2029]")
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,"]')
_NOT_URL = re.compile(r'[\s"<>\\^`{|}\x00-\x1f\x7f-\x9f]')
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def N_(message: str) -> str:
    """Mark a message for extraction; it is translated where it is used."""
    return message


#: zone.tab lists these countries' zones east to west or north to south, so the first is a
#: fringe (Lord Howe, Noronha, St. John's, Kaliningrad...); use where most people live instead.
MAIN_ZONES: dict[str, str] = {
    "AU": "Australia/Sydney", "BR": "America/Sao_Paulo", "CA": "America/Toronto",
    "RU": "Europe/Moscow", "UA": "Europe/Kyiv", "UZ": "Asia/Tashkent",
}

_TOPICS: dict[Topic, str] = {
    Topic.CORE_ONBOARDING: N_("Core onboarding"),
    Topic.SERVICE_ONBOARDING: N_("Service onboarding"),
    Topic.DATA_MIGRATION: N_("Data migration"),
    Topic.USER_ADOPTION: N_("User adoption"),
}


class InvalidInvite(ValueError):
    """An input cannot be put into an invite safely; the message names the field."""


def build_invite(meeting: Meeting, request: HelpRequest, center: Center, *, sequence: int,
                 method: Method, now: datetime) -> bytes:
    """Render the iTIP ``REQUEST`` or ``CANCEL`` for a meeting as iCalendar bytes (CRLF, folded).

    ``sequence`` is the RFC 5545 SEQUENCE: 0 for the first invitation, higher for every change.
    """
    _check(method, sequence, now)
    text = _wording(meeting, request, center, method=method, sequence=sequence)
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
    event.add("organizer", vCalAddress.new(_mailto(center.mailbox, "center.mailbox"),
                                           cn=_one_line(center.name)))
    for who in _attendees(request, _specialist(meeting, center)):
        event.add("attendee", vCalAddress.new(
            _mailto(who.email, who.field), cn=_one_line(who.name), cutype="INDIVIDUAL",
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
    text = _wording(meeting, request, center, method=method, sequence=sequence)
    message = EmailMessage(policy=SMTP)
    _set_addresses(message, "From", [_address(center.name, center.mailbox, "center.mailbox")])
    _set_addresses(message, "To", [_address(who.name, who.email, who.field)
                                   for who in _attendees(request, _specialist(meeting, center))])
    message["Subject"] = _header_text(text.subject)
    message["Date"] = rfc5322_date(now.astimezone(UTC))
    message["Message-ID"] = _message_id(meeting.uid, sequence, method, center.mailbox)
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


# -- wording ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Wording:
    """The words of one invite: the calendar's summary and details, the email's framing."""

    greeting: str
    summary: str
    subject: str
    details: list[list[str]]
    closing: list[str]
    join_url: str | None

    def description(self) -> str:
        return "\n\n".join("\n".join(block) for block in self.details)

    def plain_body(self) -> str:
        blocks = [[self.greeting], *self.details, self.closing]
        return "\n\n".join("\n".join(block) for block in blocks) + "\n"

    def html_body(self, language: str) -> str:
        def line(text: str) -> str:
            escaped = html.escape(text).replace("\n", "<br>\n")
            if self.join_url:
                url = html.escape(self.join_url)
                escaped = escaped.replace(url, f'<a href="{url}">{url}</a>')
            return escaped

        blocks = [[self.greeting], *self.details, self.closing]
        body = "\n".join("<p>" + "<br>\n".join(map(line, block)) + "</p>" for block in blocks)
        return (f'<!DOCTYPE html>\n<html lang="{html.escape(language)}">\n'
                f'<head><meta charset="utf-8"></head>\n<body>\n{body}\n</body>\n</html>\n')


class _Text:
    """``_("Hello %(name)s,", name=...)``: one catalog message in one language, then filled in."""

    def __init__(self, language: str) -> None:
        self.translations = catalog(language)

    def __call__(self, message: str, **values: str) -> str:
        return self.translations.gettext(message) % values


def _wording(meeting: Meeting, request: HelpRequest, center: Center, *, method: Method,
             sequence: int) -> _Wording:
    locale = babel_locale(meeting.language)
    _ = _Text(meeting.language)
    topic = _(_TOPICS[request.topic])
    summary = _("Microsoft 365 FastTrack: %(topic)s", topic=topic)
    names = {"topic": topic, "center": _one_line(center.name)}
    if method == "CANCEL":
        intro = _("Your Microsoft 365 FastTrack onboarding meeting (%(topic)s) with %(center)s "
                  "has been cancelled.", **names)
    elif sequence > 0:
        intro = _("Your Microsoft 365 FastTrack onboarding meeting (%(topic)s) with %(center)s "
                  "has been updated. Please use the time below.", **names)
    else:
        intro = _("Your Microsoft 365 FastTrack onboarding meeting (%(topic)s) with %(center)s "
                  "is scheduled.", **names)
    own_zone = requester_zone(request)
    facts = [_("Your time: %(when)s", when=_when(meeting, own_zone, locale, _))]
    if own_zone.key != center.zone.key:
        facts.append(_("FastTrack Center time: %(when)s",
                       when=_when(meeting, center.zone, locale, _)))
    facts.append(_("Specialist: %(name)s", name=_one_line(_specialist(meeting, center).name)))
    facts.append(_("Organization: %(name)s", name=_one_line(request.tenant.name)))
    if request.partner:
        facts.append(_("Partner: %(name)s", name=_one_line(request.partner.name)))
    join_url = _join_url(meeting.join_url) if meeting.join_url else None
    if join_url:
        facts.append(_("Join the online meeting: %(url)s", url=join_url))
    elif method == "REQUEST":
        facts.append(_("The link to join the online meeting will be sent before the meeting."))
    facts.append(_("Meeting reference: %(reference)s", reference=meeting.request_id))
    details = [[intro], facts]
    if request.notes and _multiline(request.notes).strip():
        details.append([_("Your notes:"), _multiline(request.notes).strip()])
    details.append([_("If you still need help, reply to this email or submit a new request and we "
                      "will schedule another meeting.") if method == "CANCEL" else
                    _("If this time does not suit you, reply to this email or decline the "
                      "invitation and we will propose another time.")])
    day = format_date(meeting.start.astimezone(own_zone).date(), "medium", locale=locale)
    if method == "CANCEL":
        subject = _("Cancelled: %(summary)s (%(date)s)", summary=summary, date=day)
    elif sequence > 0:
        subject = _("Updated invitation: %(summary)s (%(date)s)", summary=summary, date=day)
    else:
        subject = _("Invitation: %(summary)s (%(date)s)", summary=summary, date=day)
    return _Wording(
        greeting=_("Hello %(name)s,", name=_one_line(request.requester.name)),
        summary=summary, subject=subject, details=details,
        closing=[_("Kind regards,"), _("The FastTrack team")], join_url=join_url,
    )


def _when(meeting: Meeting, zone: ZoneInfo, locale: Locale, _: _Text) -> str:
    start, end = meeting.start.astimezone(zone), meeting.end.astimezone(zone)
    if start.date() == end.date():
        day = format_date(start.date(), "full", locale=locale)
    else:
        day = format_interval(start.date(), end.date(), "yMMMMEEEEd", locale=locale)
    # Babel cannot build intervals with the day-period field "B" (zh_Hant's "Bh:mm"), and the
    # 24-hour clock is usual there anyway: use 12-hour intervals only where the locale's own
    # short time has an AM/PM marker.
    pattern = locale.time_formats["short"].pattern
    skeleton = "hm" if "h" in pattern and "a" in pattern else "Hm"
    times = format_interval(start, end, skeleton, locale=locale)
    zone_name = get_timezone_name(start, "long", locale=locale, zone_variant=_variant(start))
    return _("%(date)s, %(time)s (%(zone)s)", date=day, time=times, zone=zone_name)


def _variant(moment: datetime) -> Literal["standard", "daylight"]:
    """Daylight when ahead of the year's lowest offset in that zone.

    Not ``dst() != 0``, which Babel uses: tzdata gives Europe/Dublin a negative DST in winter,
    and Babel then calls Irish winter "Irish Standard Time" (summer time).
    """
    offsets = {datetime(moment.year, month, 1, tzinfo=moment.tzinfo).utcoffset()
               for month in (1, 7)}
    lowest = min(offset for offset in offsets if offset is not None)
    offset = moment.utcoffset()
    return "daylight" if offset is not None and offset > lowest else "standard"


# -- catalogs, locales, zones ---------------------------------------------------------------------


def babel_locale(language: str) -> Locale:
    """The Babel locale for one of the supported language tags."""
    try:
        return Locale.parse(BABEL_LOCALES[language])
    except KeyError:
        raise InvalidInvite(f"meeting.language: {language!r} is not one of the supported "
                            f"languages {', '.join(SUPPORTED_LANGUAGES)}") from None


@lru_cache(maxsize=len(SUPPORTED_LANGUAGES))
def catalog(language: str) -> Translations:
    """The ``invites`` translations for a supported language, read from its ``.po`` file."""
    locale = babel_locale(language)
    path = (importlib.resources.files("scheduler") / "locale" / CATALOG_DIRS[language]
            / "LC_MESSAGES" / f"{CATALOG_DOMAIN}.po")
    with path.open("rb") as po:
        messages = read_po(po, locale=locale, domain=CATALOG_DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, messages)
    compiled.seek(0)
    return Translations(compiled, domain=CATALOG_DOMAIN)


def requester_zone(request: HelpRequest) -> ZoneInfo:
    """The requester's own zone, else the main zone of the tenant's country, else UTC."""
    name = request.requester.timezone
    if name is None:
        country = request.tenant.country
        zones = pytz.country_timezones.get(country) or ["UTC"]
        name = MAIN_ZONES.get(country, zones[0])
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInvite(f"requester.timezone: {name!r} is not an IANA time zone") from None


# -- safe values --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Person:
    name: str
    email: str
    field: str


def _attendees(request: HelpRequest, specialist: Specialist) -> list[_Person]:
    people = [_Person(request.requester.name, request.requester.email, "requester.email")]
    if request.partner:
        people.append(_Person(request.partner.name, request.partner.email, "partner.email"))
    people.append(_Person(specialist.name, specialist.email, "specialist.email"))
    return people


def _specialist(meeting: Meeting, center: Center) -> Specialist:
    for specialist in center.specialists:
        if specialist.id == meeting.specialist_id:
            return specialist
    raise InvalidInvite(f"meeting.specialist_id: {meeting.specialist_id!r} does not work at "
                        f"center {center.id!r}")


def _check(method: str, sequence: int, now: datetime) -> None:
    if method not in ("REQUEST", "CANCEL"):
        raise InvalidInvite(f"method: {method!r} is not REQUEST or CANCEL")
    if sequence < 0:
        raise InvalidInvite(f"sequence: {sequence} is negative")
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInvite("now: must be an aware datetime")


def _email(address: str, field: str) -> str:
    """A validated address, ASCII (IDNA) where possible: no quotes, spaces or separators."""
    try:
        valid = validate_email(address, check_deliverability=False, allow_quoted_local=False)
    except EmailNotValidError as exc:
        raise InvalidInvite(f"{field}: {exc}") from exc
    return valid.ascii_email or valid.normalized


def _mailto(address: str, field: str) -> str:
    # RFC 6068: anything outside these is percent-encoded, so a value can never hold ; , : or "
    return "mailto:" + quote(_email(address, field), safe="@!$'*+=")


def _address(name: str, address: str, field: str) -> Address:
    local, _, domain = _email(address, field).rpartition("@")
    display_name = " ".join(_SPECIALS.sub(" ", _header_text(name)).split())
    return Address(display_name=display_name, username=local, domain=domain)


def _set_addresses(message: EmailMessage, name: str, addresses: list[Address]) -> None:
    """Set an address header that reads back as exactly these addresses, else drop the names.

    Python 3.11's header folder can drop the quotes around a long display name or encode the
    comma between two addresses: either would change who receives the message. Specials are
    kept out of names (the CN keeps them), and whatever still does not survive the round trip
    goes without display names.
    """
    message[name] = addresses
    folded = SMTP.fold_binary(name, message[name])
    parsed = BytesHeaderParser(policy=default).parsebytes(folded)[name]
    expected = [(a.display_name, a.addr_spec) for a in addresses]
    if [(a.display_name, a.addr_spec) for a in parsed.addresses] != expected:
        del message[name]
        message[name] = [Address(username=a.username, domain=a.domain) for a in addresses]


def _one_line(value: str) -> str:
    """A name inside a sentence or a CN parameter: one line, no control characters.

    icalendar quotes parameter values and escapes quotes and newlines itself (RFC 6868); the
    other controls are not allowed in iCalendar at all.
    """
    return " ".join(_CONTROL.sub(" ", value).split())


def _header_text(value: str) -> str:
    """Text for an email header: one line, no invisible format characters, and no RFC 2047
    encoded word of its own.

    Python's header parser decodes ``=?utf-8?q?...=0D=0A...?=`` inside a display name and
    folds the decoded CR LF out raw (CVE-2024-6923 on the Python 3.11.7 here): breaking the
    ``=?`` opener leaves the policy to do all encoding.
    """
    visible = "".join(c for c in _one_line(value) if unicodedata.category(c) != "Cf")
    return visible.replace("=?", "= ?")


def _multiline(value: str) -> str:
    """Free text (notes): newlines kept as LF, other control characters dropped."""
    return _NOT_TEXT.sub("", _LINE_BREAK.sub("\n", value))


def _join_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or _NOT_URL.search(url):
        raise InvalidInvite(f"meeting.join_url: {url!r} is not an http(s) URL")
    return url


def _stable_boundaries(message: EmailMessage) -> None:
    """Boundaries from the message id, so a resend is byte-identical (``=_`` is never base64)."""
    token = str(message["Message-ID"]).strip("<>").partition("@")[0]
    message.set_boundary(f"=_mixed_{token}")
    for part in message.iter_parts():
        if part.get_content_type() == "multipart/alternative":
            part.set_boundary(f"=_alternative_{token}")


def _message_id(uid: str, sequence: int, method: str, mailbox: str) -> str:
    """The same message id for every resend of one (UID, SEQUENCE, METHOD)."""
    digest = hashlib.sha256(f"{uid}\n{sequence}\n{method}".encode()).hexdigest()[:32]
    return f"<{digest}@{_email(mailbox, 'center.mailbox').rpartition('@')[2]}>"
