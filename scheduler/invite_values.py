"""Values made safe to put into an invite: names on one line, free text, email addresses, URLs.

Escaping and line folding are icalendar's and the email policy's; these keep out what neither
may carry at all (control characters, encoded words, quoted local parts, non-http links).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from urllib.parse import quote, urlsplit

from email_validator import EmailNotValidError, validate_email

# str.splitlines() also breaks on \x1c-\x1e, \x85, \u2028 and \u2029: none may survive either.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_LINE_BREAK = re.compile(r"\r\n|[\r\x85\u2028\u2029]")
_NOT_URL = re.compile(r'[\s"<>\\^`{|}\x00-\x1f\x7f-\x9f]')
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class InvalidInvite(ValueError):
    """An input cannot be put into an invite safely; the message names the field."""


def one_line(value: str) -> str:
    """A name inside a sentence or a CN parameter: one line, no control characters.

    icalendar quotes parameter values and escapes quotes and newlines itself (RFC 6868); the
    other controls are not allowed in iCalendar at all.
    """
    return " ".join(_CONTROL.sub(" ", value).split())


def multiline(value: str) -> str:
    """Free text (notes): newlines kept as LF, other control characters dropped."""
    return _NOT_TEXT.sub("", _LINE_BREAK.sub("\n", value))


@lru_cache(maxsize=1024)
def header_text(value: str) -> str:
    """Text for an email header: one line, no invisible format characters, and no RFC 2047
    encoded word of its own.

    Python's header parser decodes ``=?utf-8?q?...=0D=0A...?=`` inside a display name and
    folds the decoded CR LF out raw (CVE-2024-6923 on the Python 3.11.7 here): breaking the
    ``=?`` opener leaves the policy to do all encoding. Remembered, since an invite's subject
    and names come back in many invites; ASCII has no format characters, so its characters'
    categories are not looked up (125 lookups an invite in the benchmark's mix before).
    """
    line = one_line(value)
    visible = line if line.isascii() else "".join(
        c for c in line if unicodedata.category(c) != "Cf")
    return visible.replace("=?", "= ?")


def valid_email(address: str, field: str) -> str:
    """A validated address, ASCII (IDNA) where possible: no quotes, spaces or separators."""
    try:
        return _validated(address)
    except EmailNotValidError as exc:
        raise InvalidInvite(f"{field}: {exc}") from exc


@lru_cache(maxsize=1024)
def _validated(address: str) -> str:
    """:func:`valid_email` without the field name. Valid addresses are remembered (no DNS is
    asked, so the answer never changes): one invite checks each address for the calendar, the
    email and its Message-ID."""
    valid = validate_email(address, check_deliverability=False, allow_quoted_local=False)
    return valid.ascii_email or valid.normalized


def mailto(address: str, field: str) -> str:
    """The ``mailto:`` URI of a validated address."""
    # RFC 6068: anything outside these is percent-encoded, so a value can never hold ; , : or "
    return "mailto:" + quote(valid_email(address, field), safe="@!$'*+=")


def join_url(url: str) -> str:
    """The meeting's join link, if it is an http(s) URL that cannot break out of a line."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or _NOT_URL.search(url):
        raise InvalidInvite(f"meeting.join_url: {url!r} is not an http(s) URL")
    return url
