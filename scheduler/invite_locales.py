"""The languages, catalogs and time zones invites and reminders are worded in.

Wording comes from the gettext catalogs under ``scheduler/locale/<locale>/LC_MESSAGES/invites.po``
(read at runtime, no compile step); dates, times and zone names come from Babel.
"""

from __future__ import annotations

import importlib.resources
import io
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytz
from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from scheduler.directory import SUPPORTED_LANGUAGES
from scheduler.invite_values import InvalidInvite
from schemas.help_request import HelpRequest

CATALOG_DOMAIN = "invites"

#: Supported language tag -> the Babel locale used for its catalog, dates and zone names.
BABEL_LOCALES: dict[str, str] = {
    "zh-Hant": "zh_Hant_TW", "zh-Hans": "zh_Hans_CN", "en": "en_US", "fr": "fr_FR",
    "de": "de_DE", "it": "it_IT", "ja": "ja_JP", "ko": "ko_KR", "pt-BR": "pt_BR",
    "es": "es_ES", "th": "th_TH", "vi": "vi_VN",
}
#: Supported language tag -> its catalog directory under ``scheduler/locale``.
CATALOG_DIRS: dict[str, str] = {tag: tag.replace("-", "_") for tag in SUPPORTED_LANGUAGES}

#: zone.tab lists these countries' zones east to west or north to south, so the first is a
#: fringe (Lord Howe, Noronha, St. John's, Kaliningrad...); use where most people live instead.
MAIN_ZONES: dict[str, str] = {
    "AU": "Australia/Sydney", "BR": "America/Sao_Paulo", "CA": "America/Toronto",
    "RU": "Europe/Moscow", "UA": "Europe/Kyiv", "UZ": "Asia/Tashkent",
}


class Translator:
    """``_("Hello %(name)s,", name=...)``: one catalog message in one language, then filled in."""

    def __init__(self, language: str) -> None:
        self.translations = catalog(language)

    def __call__(self, message: str, **values: str) -> str:
        return self.translations.gettext(message) % values


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
