"""The words of an invite: summary, subject, the details and the email's framing, in the meeting's
language, with the time in the requester's zone (and the center's, when it differs).

Every message here is in the ``invites`` catalogs (``pybabel extract`` this module); see
:mod:`scheduler.invite_locales` for how they are read.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_interval, get_timezone_name

from scheduler.directory import Center
from scheduler.invite_addressing import meeting_specialist
from scheduler.invite_locales import Translator, babel_locale, requester_zone
from scheduler.invite_values import join_url, multiline, one_line
from schemas.events import Meeting
from schemas.help_request import HelpRequest, Topic

Method = Literal["REQUEST", "CANCEL"]


def N_(message: str) -> str:
    """Mark a message for extraction; it is translated where it is used."""
    return message


_TOPICS: dict[Topic, str] = {
    Topic.CORE_ONBOARDING: N_("Core onboarding"),
    Topic.SERVICE_ONBOARDING: N_("Service onboarding"),
    Topic.DATA_MIGRATION: N_("Data migration"),
    Topic.USER_ADOPTION: N_("User adoption"),
}


def topic_title(topic: Topic, _: Translator) -> str:
    """The topic's name, translated."""
    return _(_TOPICS[topic])


@dataclass(frozen=True)
class InviteText:
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


def invite_text(meeting: Meeting, request: HelpRequest, center: Center, *, method: Method,
                sequence: int) -> InviteText:
    """The words of the invite (``sequence`` > 0: an update) in the meeting's language."""
    locale = babel_locale(meeting.language)
    _ = Translator(meeting.language)
    topic = topic_title(request.topic, _)
    summary = _("Microsoft 365 FastTrack: %(topic)s", topic=topic)
    names = {"topic": topic, "center": one_line(center.name)}
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
    facts = [_("Your time: %(when)s", when=format_when(meeting, own_zone))]
    if own_zone.key != center.zone.key:
        facts.append(_("FastTrack Center time: %(when)s",
                       when=format_when(meeting, center.zone)))
    facts.append(_("Specialist: %(name)s", name=one_line(meeting_specialist(meeting, center).name)))
    facts.append(_("Organization: %(name)s", name=one_line(request.tenant.name)))
    if request.partner:
        facts.append(_("Partner: %(name)s", name=one_line(request.partner.name)))
    link = join_url(meeting.join_url) if meeting.join_url else None
    if link:
        facts.append(_("Join the online meeting: %(url)s", url=link))
    elif method == "REQUEST":
        facts.append(_("The link to join the online meeting will be sent before the meeting."))
    facts.append(_("Meeting reference: %(reference)s", reference=meeting.request_id))
    details = [[intro], facts]
    if request.notes and multiline(request.notes).strip():
        details.append([_("Your notes:"), multiline(request.notes).strip()])
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
    return InviteText(
        greeting=_("Hello %(name)s,", name=one_line(request.requester.name)),
        summary=summary, subject=subject, details=details,
        closing=[_("Kind regards,"), _("The FastTrack team")], join_url=link,
    )


def handover_text(meeting: Meeting, request: HelpRequest, center: Center) -> InviteText:
    """The words of the CANCEL a specialist gets when the meeting they held moves to another
    specialist of the center: addressed to them, with the time the meeting had at the center."""
    locale = babel_locale(meeting.language)
    _ = Translator(meeting.language)
    topic = topic_title(request.topic, _)
    summary = _("Microsoft 365 FastTrack: %(topic)s", topic=topic)
    organization = one_line(request.tenant.name)
    intro = _("The Microsoft 365 FastTrack onboarding meeting (%(topic)s) for %(organization)s "
              "has moved to another specialist and is no longer in your calendar.",
              topic=topic, organization=organization)
    facts = [_("FastTrack Center time: %(when)s", when=format_when(meeting, center.zone)),
             _("Organization: %(name)s", name=organization),
             _("Meeting reference: %(reference)s", reference=meeting.request_id)]
    day = format_date(meeting.start.astimezone(center.zone).date(), "medium", locale=locale)
    return InviteText(
        greeting=_("Hello %(name)s,", name=one_line(meeting_specialist(meeting, center).name)),
        summary=summary, subject=_("Reassigned: %(summary)s (%(date)s)", summary=summary,
                                   date=day),
        details=[[intro], facts], closing=[_("Kind regards,"), _("The FastTrack team")],
        join_url=None,
    )


def format_when(meeting: Meeting, zone: ZoneInfo) -> str:
    """The meeting's date, times and zone name as seen in ``zone``, in the meeting's language."""
    return _when(meeting.start, meeting.end, zone, meeting.language)


@lru_cache(maxsize=1024)
def _when(start: datetime, end: datetime, zone: ZoneInfo, language: str) -> str:
    """:func:`format_when`, once per (instants, zone, language): meetings share their slots,
    and Babel's interval and zone-name formatting was a sixth of rendering an invite. Aware
    datetimes are equal when they are the same instant, which is all that is used here.
    Meetings booked together share slots near each other; the slots in use slide with the
    calendar, so the cache fills to its bound (about 500 bytes an entry)."""
    locale, _ = babel_locale(language), Translator(language)
    start, end = start.astimezone(zone), end.astimezone(zone)
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
