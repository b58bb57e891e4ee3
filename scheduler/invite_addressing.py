"""Who an invite or reminder goes to, and the email headers that address it.

From the center's mailbox (the ORGANIZER) to every ATTENDEE: the requester, the partner if any,
and the specialist. Display names lose the characters that could change the recipients.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTP, default

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


def message_id(uid: str, sequence: int, method: str, mailbox: str) -> str:
    """The same message id for every resend of one (UID, SEQUENCE, METHOD)."""
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
    """
    message[name] = addresses
    key = (name, tuple((a.display_name, a.username, a.domain) for a in addresses))
    survives = _SURVIVES.get(key)
    if survives is None:
        folded = SMTP.fold_binary(name, message[name])
        parsed = BytesHeaderParser(policy=default).parsebytes(folded)[name]
        expected = [(a.display_name, a.addr_spec) for a in addresses]
        survives = [(a.display_name, a.addr_spec) for a in parsed.addresses] == expected
        if len(_SURVIVES) >= _SURVIVES_MAX:
            _SURVIVES.clear()
        _SURVIVES[key] = survives
    if not survives:
        del message[name]
        message[name] = [Address(username=a.username, domain=a.domain) for a in addresses]


#: Whether a header (name, addresses as (display name, user, domain)) survived the round trip:
#: the same header always folds and parses back the same way, and the center's From is the same
#: for every invite it sends.
_SURVIVES: dict[tuple[str, tuple[tuple[str, str, str], ...]], bool] = {}
_SURVIVES_MAX = 1024
