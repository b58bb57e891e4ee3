"""Who an invite or reminder goes to, and the email headers that address it.

From the center's mailbox (the ORGANIZER) to every ATTENDEE: the requester, the partner if any,
and the specialist. Display names lose the characters that could change the recipients. Invites
are addressed as text for ``compat32`` (:func:`address_headers`), reminders with header objects
for ``email.policy.SMTP`` (:func:`address_message`); either header goes without names when its
fold would not read back as exactly its addresses.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import Compat32, EmailPolicy, Policy, default
from email.utils import formataddr, getaddresses
from functools import lru_cache
from typing import Any, cast

from scheduler.directory import Center, Specialist
from scheduler.invite_values import InvalidInvite, header_text, valid_email
from schemas.events import Meeting
from schemas.help_request import HelpRequest

_SPECIALS = re.compile(r'[()<>\[\]:;@\\,"]')


@dataclass(frozen=True)
class Person:
    """An attendee: name, address, and the input field the address came from."""

    name: str
    email: str
    field: str


def attendees(request: HelpRequest, specialist: Specialist) -> list[Person]:
    """The requester, the partner (if any) and the specialist, in that order."""
    people = [Person(request.requester.name, request.requester.email, "requester.email")]
    if request.partner:
        people.append(Person(request.partner.name, request.partner.email, "partner.email"))
    people.append(Person(specialist.name, specialist.email, "specialist.email"))
    return people


def meeting_specialist(meeting: Meeting, center: Center) -> Specialist:
    """The center's specialist who holds the meeting."""
    for specialist in center.specialists:
        if specialist.id == meeting.specialist_id:
            return specialist
    raise InvalidInvite(f"meeting.specialist_id: {meeting.specialist_id!r} does not work at "
                        f"center {center.id!r}")


def address_message(message: EmailMessage, meeting: Meeting, request: HelpRequest,
                    center: Center) -> None:
    """Set From (the center's mailbox) and To (every attendee)."""
    _set_addresses(message, "From", [_address(center.name, center.mailbox, "center.mailbox")])
    to = [_address(who.name, who.email, who.field)
          for who in attendees(request, meeting_specialist(meeting, center))]
    _set_addresses(message, "To", to)


def invite_attendees(meeting: Meeting, request: HelpRequest, center: Center, *,
                     only_specialist: bool = False) -> list[Person]:
    """Who an invite is for: every attendee, or (``only_specialist``, the CANCEL to a
    specialist whose meeting moved to another) the meeting's specialist alone."""
    specialist = meeting_specialist(meeting, center)
    if only_specialist:
        return [Person(specialist.name, specialist.email, "specialist.email")]
    return attendees(request, specialist)


def address_headers(meeting: Meeting, request: HelpRequest, center: Center,
                    policy: Compat32, *, only_specialist: bool = False) -> tuple[str, str]:
    """The From (the center's mailbox) and To (every attendee, or the specialist alone: see
    :func:`invite_attendees`) values for a ``compat32`` message: ``Name <user@domain>, ...``,
    a name RFC 2047-encoded when it is not ASCII.

    A header whose fold by ``policy`` does not read back as exactly its addresses goes
    without display names (see :func:`_set_addresses`), so no name can change who receives
    the message.
    """
    sender = [_address(center.name, center.mailbox, "center.mailbox")]
    to = [_address(who.name, who.email, who.field)
          for who in invite_attendees(meeting, request, center,
                                      only_specialist=only_specialist)]
    return _legacy_header("From", sender, policy), _legacy_header("To", to, policy)


def _legacy_header(name: str, addresses: list[Address], policy: Compat32) -> str:
    return _checked_legacy_header(
        name, tuple((a.display_name, a.username, a.domain) for a in addresses), policy)


@lru_cache(maxsize=256)
def _checked_legacy_header(name: str, people: tuple[tuple[str, str, str], ...],
                           policy: Compat32) -> str:
    """:func:`_legacy_header` for (display name, user, domain) triples, remembered: a center's
    From is the same for every invite it sends, and checking that it reads back means
    folding and parsing it."""
    addresses = [Address(display_name=display, username=user, domain=domain)
                 for display, user, domain in people]
    written = [_mailbox(address) for address in addresses]
    value = ", ".join(text for text, _ in written)
    if _reads_back_legacy(name, value, [address for _, address in written], policy):
        return value
    return ", ".join(a.addr_spec for a in addresses)


def _mailbox(address: Address) -> tuple[str, Address]:
    """``Name <user@domain>`` and the address it says: an ASCII name quoted where it needs to
    be, any other as one RFC 2047 encoded word; a name too long for one (75 characters, §2)
    is left out.

    Several words would fold, but readers differ on the space between them: Python's own
    ``email.policy.default`` parser keeps it inside a display name.
    """
    name, addr_spec = address.display_name, address.addr_spec
    if not name or name.isascii():
        return formataddr((name, addr_spec)), address
    word = formataddr((name, addr_spec), charset="utf-8").removesuffix(f" <{addr_spec}>")
    if len(word) > _ENCODED_WORD_MAX:
        return addr_spec, Address(username=address.username, domain=address.domain)
    return f"{word} <{addr_spec}>", address


def _reads_back_legacy(name: str, value: str, addresses: list[Address],
                       policy: Compat32) -> bool:
    """Whether ``value``, folded by ``policy`` as the generator will, unfolds and parses back
    (names decoded) as exactly ``addresses``."""
    folded = policy.fold(name, value)
    unfolded = _LINE_BREAK_BEFORE_SPACE_TEXT.sub("", folded).partition(":")[2].strip()
    try:
        found = [(str(make_header(decode_header(display))), address)
                 for display, address in getaddresses([unfolded])]
    except (HeaderParseError, UnicodeDecodeError, LookupError):
        return False
    return found == [(a.display_name, a.addr_spec) for a in addresses]


def message_id(uid: str, sequence: int, method: str, mailbox: str) -> str:
    """The same message id for every resend of one (UID, SEQUENCE, METHOD); ``method`` may
    name a kind of message of its own (a reminder's, the CANCEL to a handed-over specialist)."""
    digest = hashlib.sha256(f"{uid}\n{sequence}\n{method}".encode()).hexdigest()[:32]
    return f"<{digest}@{valid_email(mailbox, 'center.mailbox').rpartition('@')[2]}>"


def _address(name: str, address: str, field: str) -> Address:
    local, _, domain = valid_email(address, field).rpartition("@")
    display_name = " ".join(_SPECIALS.sub(" ", header_text(name)).split())
    return Address(display_name=display_name, username=local, domain=domain)


def _set_addresses(message: EmailMessage, name: str, addresses: list[Address]) -> None:
    """Set an address header that reads back as exactly these addresses, else drop the names.

    Python 3.11's header folder can drop the quotes around a long display name or encode the
    comma between two addresses: either would change who receives the message. Specials are
    kept out of names (the CN keeps them), and whatever still does not survive the round trip
    goes without display names.

    The header is built from its text, the addresses as the email package writes them
    (``Name <user@domain>, ...``), so the policy's registry can share the From that every
    invite of a center sets (:mod:`scheduler.invites`).
    """
    factory = cast(EmailPolicy, message.policy).header_factory  # EmailMessage's own kind
    header = factory(name, ", ".join(str(address) for address in addresses))
    if not _reads_back(header, addresses, message.policy):
        header = factory(name, ", ".join(
            str(Address(username=a.username, domain=a.domain)) for a in addresses))
    message[name] = header


def _reads_back(header: Any, addresses: list[Address], policy: Policy) -> bool:
    """Whether ``header``, folded by ``policy``, parses back as exactly ``addresses``.

    Building the header parsed its text, so its addresses say whether the text reads back.
    When the folder only broke lines at the text's own spaces, unfolding the header gives
    that text again (RFC 5322 unfolding removes a line break before white space): nothing
    more to check. Anything else the folder did (quoted, encoded, broke a word) is read back
    with the parser.
    """
    expected = [(a.display_name, a.addr_spec) for a in addresses]
    if [(a.display_name, a.addr_spec) for a in header.addresses] != expected:
        return False
    name = header.name
    folded = policy.fold_binary(name, header)
    unfolded = _LINE_BREAK_BEFORE_SPACE.sub(b"", folded)
    return unfolded == f"{name}: {header}{policy.linesep}".encode("utf-8", "replace") \
        or [(a.display_name, a.addr_spec) for a in
            BytesHeaderParser(policy=default).parsebytes(folded)[name].addresses] == expected


#: A fold: the line break itself, not the white space that follows it.
_LINE_BREAK_BEFORE_SPACE = re.compile(rb"\r?\n(?=[ \t])")
_LINE_BREAK_BEFORE_SPACE_TEXT = re.compile(r"\r?\n(?=[ \t])")
#: RFC 2047 §2: an encoded word is at most 75 characters.
_ENCODED_WORD_MAX = 75
